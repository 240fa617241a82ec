#!/usr/bin/env bash
# The one-to-one paper on IMDB: fine-tune the BERT-base teacher (the paper's command), then
# distil DistilBERT with each loss of the comparison, on one GPU. `--help` for the options.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TABLE=one_to_one_imdb
ALL_TASKS="imdb"
DEFAULT_TASKS="imdb"
ALL_METHODS="task kd mse cos corr corr_mask"
declare -A OPTS=([imdb-dir]="" [teacher-model]=bert-base-uncased
                 [student-model]=distilbert-base-uncased [teacher-seed]=42)
USAGE="IMDB from --imdb-dir (an extracted aclImdb folder) or, without it, the hub's imdb.
Teacher: run_imdb.py with the released defaults (lr 5e-5, batch 16, 3 epochs, 512 tokens).
Students: the paper's command (alpha_imdb 0.5, alpha_corr 0.005) per loss: task, kd (T=2),
mse, cos, corr, corr_mask (corr + sub-teacher mask)."

declare -A LOSS=(
    [task]="--alpha_imdb 0.5 --alpha_ce 0 --alpha_mse 0 --alpha_cos 0 --alpha_corr 0 --do_mask False"
    [kd]="--alpha_imdb 0.5 --alpha_ce 0.5 --alpha_mse 0 --alpha_cos 0 --alpha_corr 0 --do_mask False --temperature 2.0"
    [mse]="--alpha_imdb 0.5 --alpha_ce 0 --alpha_mse 0.5 --alpha_cos 0 --alpha_corr 0 --do_mask False"
    [cos]="--alpha_imdb 0.5 --alpha_ce 0 --alpha_mse 0 --alpha_cos 0.5 --alpha_corr 0 --do_mask False"
    [corr]="--alpha_imdb 0.5 --alpha_ce 0 --alpha_mse 0 --alpha_cos 0 --alpha_corr 0.005 --do_mask False"
    [corr_mask]="--alpha_imdb 0.5 --alpha_ce 0 --alpha_mse 0 --alpha_cos 0 --alpha_corr 0.005 --do_mask True"
)

parse_options "$@"
data=()
[[ -z ${OPTS[imdb-dir]} ]] || data=(--data_dir "${OPTS[imdb-dir]}")

task=imdb
teacher_seed=${OPTS[teacher-seed]}
teacher=$(run_dir "$task" teacher "$teacher_seed")
job teachers "$task" teacher "$teacher_seed" "" -- "$REPO_DIR/run_imdb.py" --model "${OPTS[teacher-model]}" \
    "${data[@]}" --seed "$teacher_seed" --output_dir "$teacher"
for method in $METHODS; do
    for seed in $SEEDS; do
        read -r -a loss <<<"${LOSS[$method]}"
        job students "$task" "$method" "$seed" "$teacher" -- "$REPO_DIR/run_imdb_w_distillation.py" \
            --student_model_name_or_path "${OPTS[student-model]}" --teacher_model_name_or_path "$teacher" \
            "${data[@]}" "${loss[@]}" --seed "$seed" --output_dir "$(run_dir "$task" "$method" "$seed")"
    done
done
