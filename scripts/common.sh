# Shared by the table scripts (scripts/one_to_one_*.sh, scripts/lgtm_glue.sh); sourced, not run.
#
# A table script sets TABLE, ALL_TASKS, DEFAULT_TASKS, ALL_METHODS, the associative array OPTS
# (its own options and their defaults) and USAGE, calls `parse_options "$@"`, then describes its
# runs with `job` (one command per run) and `data_step`. This file does the rest: option parsing,
# the results layout, printing, dry runs, job lists for Slurm, skipping finished runs and
# stopping at the first failure.
#
# Results layout: the one template in collect_results.py (RUN_DIR_LAYOUT), read once below.
# A run's output_dir is <output-root>/<table>/<task>/<method>/seed<k>/ and its log (stdout and
# stderr of every attempt, appended) is that folder's name plus ".log", beside it: a file inside
# would make the folder non-empty, which the training scripts refuse.

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# what every training script writes last, once its run has finished (utils/engine/runtime.py)
COMPLETION_MARK=run_complete.json
# the exit status of a run that a signal stopped after it saved a checkpoint (utils/engine/loop.py)
STOPPED_STATUS=75
# torchrun kills its processes this many seconds after passing a SIGTERM on (its default is 30):
# time for them to reach their next step and write their checkpoint
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-240}
PYTHON=${PYTHON:-python}
# shellcheck source=scripts/signals.sh
source "$REPO_DIR/scripts/signals.sh"
SCRIPT_PATH=${SCRIPT_PATH:-$0}

die() {
    echo "error: $*" >&2
    exit 1
}

common_usage() {
    cat <<EOF
usage: $SCRIPT_PATH [options]

$USAGE

Options of every table script:
  --tasks LIST         tasks, comma or space separated (default: $DEFAULT_TASKS; all: $ALL_TASKS)
  --methods LIST       methods (default and all: $ALL_METHODS)
  --seeds LIST         student seeds (default: 42, the released scripts' default), e.g. 42,43,44
  --output-root DIR    results root (default: results); runs go to
                       DIR/$TABLE/<task>/<method>/seed<k>/, logs to .../seed<k>.log
  --stage STAGE        data | teachers | students | all (default: all)
  --launcher CMD       what runs a training script (default: $PYTHON), e.g.
                       "torchrun --standalone --nproc_per_node 4"
  --extra ARGS         arguments appended to every training command, e.g. "--fp16" or
                       "--max_steps 10" for a smoke test
  --dry-run            print the commands, run nothing
  --list-jobs          print one line per unfinished run of --stage (a command that runs just
                       that run) for scripts/slurm_array.sbatch, run nothing
  -h, --help           this help
Script options (default):
EOF
    local name
    for name in $(printf '%s\n' "${!OPTS[@]}" | sort); do
        printf '  --%-18s (%s)\n' "$name VALUE" "${OPTS[$name]:-none}"
    done
}

split_list() {
    # "a,b c" -> "a b c"
    echo "${1//,/ }"
}

check_members() {
    # check_members WHAT "chosen" "allowed"
    local item
    for item in $2; do
        [[ " $3 " == *" $item "* ]] || die "unknown $1 '$item' (choose from: $3)"
    done
}

parse_options() {
    DRY_RUN=0
    LIST_JOBS=0
    STAGE=all
    SEEDS=42
    TASKS=$DEFAULT_TASKS
    METHODS=$ALL_METHODS
    OUTPUT_ROOT=results
    LAUNCHER=$PYTHON
    EXTRA=""
    PASS_THROUGH=()   # the options a job line must repeat
    local option value
    while (($#)); do
        option=$1
        shift
        if [[ $option == --*=* ]]; then
            set -- "${option#*=}" "$@"
            option=${option%%=*}
        fi
        case $option in
            -h | --help) common_usage; exit 0 ;;
            --dry-run) DRY_RUN=1; continue ;;
            --list-jobs) LIST_JOBS=1; continue ;;
        esac
        (($#)) || die "$option needs a value (see --help)"
        value=$1
        shift
        case $option in
            --tasks) TASKS=$(split_list "$value") ;;
            --methods) METHODS=$(split_list "$value") ;;
            --seeds) SEEDS=$(split_list "$value") ;;
            --stage) STAGE=$value ;;
            --output-root) OUTPUT_ROOT=$value; PASS_THROUGH+=("$option" "$value") ;;
            --launcher) LAUNCHER=$value; PASS_THROUGH+=("$option" "$value") ;;
            --extra) EXTRA=$value; PASS_THROUGH+=("$option" "$value") ;;
            --*)
                [[ -v "OPTS[${option#--}]" ]] || die "unknown option $option (see --help)"
                OPTS[${option#--}]=$value
                PASS_THROUGH+=("$option" "$value")
                ;;
            *) die "unexpected argument '$option' (see --help)" ;;
        esac
    done
    TASKS=$(echo "$TASKS" | tr '[:upper:]' '[:lower:]' | sed 's/sst-2/sst2/g; s/sts-b/stsb/g')
    check_members task "$TASKS" "$ALL_TASKS"
    check_members method "$METHODS" "$ALL_METHODS"
    check_members stage "$STAGE" "data teachers students all"
    local seed
    for seed in $SEEDS; do
        [[ $seed =~ ^[0-9]+$ ]] || die "--seeds: '$seed' is not a non-negative integer"
    done
    [[ -n $TASKS && -n $METHODS && -n $SEEDS ]] || die "--tasks, --methods and --seeds must not be empty"
    RUN_DIR_LAYOUT=$("$PYTHON" "$REPO_DIR/collect_results.py" --print-layout) ||
        die "could not read the results layout from collect_results.py with $PYTHON"
}

run_dir() {
    # run_dir TASK METHOD SEED -> the run's output_dir
    local path=$RUN_DIR_LAYOUT
    path=${path//"{table}"/$TABLE}
    path=${path//"{task}"/$1}
    path=${path//"{method}"/$2}
    path=${path//"{seed}"/$3}
    echo "$OUTPUT_ROOT/$path"
}

quote() {
    local quoted
    printf -v quoted '%q ' "$@"
    echo "${quoted% }"
}

stage_selected() {
    [[ $STAGE == all || $STAGE == "$1" ]]
}

data_step() {
    # data_step DONE_TEST_COMMAND -- COMMAND...: run COMMAND (stage data) unless DONE_TEST succeeds
    local done_test=$1
    shift 2
    stage_selected data && ((!LIST_JOBS)) || return 0
    if eval "$done_test"; then
        echo "# skip (data present): $(quote "$@")"
        return 0
    fi
    echo "+ $(quote "$@")"
    ((DRY_RUN)) && return 0
    "$@" || die "data step failed (exit $?): $(quote "$@")"
}

job() {
    # job STAGE TASK METHOD SEED NEEDS -- SCRIPT ARGS...
    # One run: its output_dir is run_dir TASK METHOD SEED (the caller passes it as --output_dir);
    # NEEDS is a run folder that must have finished first (the teacher), or "".
    local stage=$1 task=$2 method=$3 seed=$4 needs=$5
    shift 6
    stage_selected "$stage" || return 0
    local dir
    dir=$(run_dir "$task" "$method" "$seed")
    if [[ -f $dir/$COMPLETION_MARK ]]; then
        ((LIST_JOBS)) || echo "# skip (finished): $dir"
        return 0
    fi
    if ((LIST_JOBS)); then
        local only=(--tasks "$task" --stage "$stage")
        [[ $stage == teachers ]] || only+=(--methods "$method" --seeds "$seed")
        quote "$SCRIPT_PATH" "${PASS_THROUGH[@]}" "${only[@]}"
        return 0
    fi
    local command
    read -r -a command <<<"$LAUNCHER"
    command+=("$@")
    if [[ -n $EXTRA ]]; then
        local extra
        read -r -a extra <<<"$EXTRA"
        command+=("${extra[@]}")
    fi
    if [[ -d $dir && -n $(ls -A "$dir") && -z $(compgen -G "$dir/checkpoint-*") ]]; then
        # an earlier attempt failed before its first checkpoint: start it again
        command+=(--overwrite_output_dir)
    fi
    echo "+ $(quote "${command[@]}")"
    ((DRY_RUN)) && return 0
    if [[ -n $needs && ! -f $needs/$COMPLETION_MARK ]]; then
        die "$dir needs $needs to have finished (no $COMPLETION_MARK there): run --stage teachers first"
    fi
    local log=$dir.log status
    mkdir -p "$(dirname "$dir")"
    echo "# $(date '+%F %T') $(quote "${command[@]}")" >>"$log"
    set +e
    # in the background, its output appended to the log and shown: a SIGTERM or SIGUSR1 this
    # script gets reaches it as SIGTERM (torchrun passes that on to its processes)
    forward_signals_to TERM "${command[@]}" > >(trap '' TERM USR1 INT; tee -a "$log") 2>&1
    status=$?
    set -e
    if ((status == STOPPED_STATUS || SIGNALLED)); then
        echo "stopped when asked to (a signal): the same command continues with $dir, from its checkpoint" >&2
        exit "$STOPPED_STATUS"
    fi
    ((status == 0)) || die "run failed (exit $status): $dir; log: $log; command: $(quote "${command[@]}")"
    [[ -f $dir/$COMPLETION_MARK ]] || die "run ended without writing $dir/$COMPLETION_MARK; log: $log"
}

glue_task_dir() {
    # the folder of a GLUE task in download_glue_data.py's layout
    case $1 in
        cola) echo CoLA ;; sst2) echo SST-2 ;; mrpc) echo MRPC ;; stsb) echo STS-B ;; qqp) echo QQP ;;
        mnli) echo MNLI ;; qnli) echo QNLI ;; rte) echo RTE ;; wnli) echo WNLI ;;
        *) die "no GLUE folder for task $1" ;;
    esac
}

glue_data_step() {
    # download the selected GLUE tasks into --glue-dir unless their dev files are there
    local glue_dir=$1 present="true" task
    for task in $TASKS; do
        present+=" && [[ -f $(quote "$glue_dir/$(glue_task_dir "$task")")/dev.tsv || -f $(quote "$glue_dir/$(glue_task_dir "$task")")/dev_matched.tsv ]]"
    done
    data_step "$present" -- "$PYTHON" "$REPO_DIR/download_glue_data.py" --data_dir "$glue_dir" --tasks "$(echo $TASKS | tr ' ' ',')"
}

glue_teacher_job() {
    # the one-to-one paper's teacher command (its README), one teacher per task (--teacher-seed)
    local task=$1 glue_dir=$2 model=$3 seed=$4 dir
    dir=$(run_dir "$task" teacher "$seed")
    job teachers "$task" teacher "$seed" "" -- "$REPO_DIR/run_glue.py" --model_type bert \
        --model_name_or_path "$model" --task_name "$task" --data_dir "$glue_dir/$(glue_task_dir "$task")" \
        --do_lower_case --max_seq_length 128 --do_train --per_gpu_train_batch_size 32 \
        --per_gpu_eval_batch_size 32 --learning_rate 5e-5 --num_train_epochs 3.0 --seed "$seed" \
        --output_dir "$dir"
}
