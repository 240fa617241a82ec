#!/usr/bin/env bash
# The one-to-one paper on SQuAD v1.1: fine-tune the BERT-base teacher (the paper's command),
# then distil DistilBERT with each loss of the comparison, on one GPU. `--help` for the options.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TABLE=one_to_one_squad
ALL_TASKS="squad"
DEFAULT_TASKS="squad"
ALL_METHODS="task kd mse cos corr corr_mask"
declare -A OPTS=([train-file]=data/train-v1.1.json [dev-file]=data/dev-v1.1.json
                 [teacher-model]=bert-base-uncased [student-model]=distilbert-base-uncased [teacher-seed]=42)
USAGE="SQuAD v1.1 from --train-file and --dev-file (the official JSON files; not downloaded).
Teacher: run_squad.py with the released defaults (lr 5e-5, batch 16, 3 epochs, max_seq_length 384).
Students: the paper's distillation command (alpha_squad 0.5, alpha_corr 0.5, 3 epochs) per loss:
task, kd (start/end logit KD, T=2), mse, cos, corr, corr_mask (corr + sub-teacher mask)."

# The paper's SQuAD command weights the correlation loss 0.5 (not GLUE's 0.005); the other
# compared terms get 0.5 too, the task loss 0.5 throughout.
declare -A LOSS=(
    [task]="--alpha_squad 0.5 --alpha_ce 0.0 --alpha_mse 0.0 --alpha_cos 0.0 --alpha_corr 0.0 --do_mask False"
    [kd]="--alpha_squad 0.5 --alpha_ce 0.5 --alpha_mse 0.0 --alpha_cos 0.0 --alpha_corr 0.0 --do_mask False --temperature 2.0"
    [mse]="--alpha_squad 0.5 --alpha_ce 0.0 --alpha_mse 0.5 --alpha_cos 0.0 --alpha_corr 0.0 --do_mask False"
    [cos]="--alpha_squad 0.5 --alpha_ce 0.0 --alpha_mse 0.0 --alpha_cos 0.5 --alpha_corr 0.0 --do_mask False"
    [corr]="--alpha_cos 0.0 --alpha_corr 0.5 --alpha_ce 0.0 --alpha_squad 0.5 --alpha_mse 0.0 --do_mask False"
    [corr_mask]="--alpha_cos 0.0 --alpha_corr 0.5 --alpha_ce 0.0 --alpha_squad 0.5 --alpha_mse 0.0 --do_mask True"
)

parse_options "$@"
TRAIN_FILE=${OPTS[train-file]}
DEV_FILE=${OPTS[dev-file]}
if stage_selected data && ((!DRY_RUN && !LIST_JOBS)); then
    [[ -f $TRAIN_FILE && -f $DEV_FILE ]] || die "SQuAD v1.1 files not found ($TRAIN_FILE, $DEV_FILE): download
train-v1.1.json and dev-v1.1.json from https://rajpurkar.github.io/SQuAD-explorer/ and pass --train-file/--dev-file"
fi

task=squad
teacher_seed=${OPTS[teacher-seed]}
teacher=$(run_dir "$task" teacher "$teacher_seed")
job teachers "$task" teacher "$teacher_seed" "" -- "$REPO_DIR/run_squad.py" --model "${OPTS[teacher-model]}" \
    --train_file "$TRAIN_FILE" --predict_file "$DEV_FILE" --seed "$teacher_seed" --output_dir "$teacher"
for method in $METHODS; do
    for seed in $SEEDS; do
        read -r -a loss <<<"${LOSS[$method]}"
        job students "$task" "$method" "$seed" "$teacher" -- "$REPO_DIR/run_squad_w_distillation.py" \
            --model_type distilbert --model_name_or_path "${OPTS[student-model]}" --teacher_type bert \
            --teacher_name_or_path "$teacher" --train_file "$TRAIN_FILE" --predict_file "$DEV_FILE" \
            --do_train --do_eval --do_lower_case --save_steps 5541 --logging_steps 5541 "${loss[@]}" \
            --num_train_epochs 3 --seed "$seed" --output_dir "$(run_dir "$task" "$method" "$seed")"
    done
done
