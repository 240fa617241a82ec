#!/usr/bin/env bash
# The LGTM paper's table (Ren et al. 2023): KD, ProKT and LGTM on MNLI, QQP, QNLI, SST-2, MRPC,
# RTE with the LGTM README's command, task after task, on one GPU. KD's frozen teacher is
# fine-tuned first with run_glue.py (the one-to-one paper's teacher command) unless
# --kd-teacher names one. `--help` for the options.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TABLE=lgtm_glue
ALL_TASKS="mnli qqp qnli sst2 mrpc rte cola stsb wnli"
DEFAULT_TASKS="mnli qqp qnli sst2 mrpc rte"
ALL_METHODS="kd prokt lgtm"
declare -A OPTS=([glue-dir]=glue_data [student-model]=google/bert_uncased_L-6_H-768_A-12
                 [teacher-model]=bert-base-uncased [kd-teacher]="" [learning-rate]=3e-05
                 [t-learning-rate]=3e-05 [teacher-seed]=42 [num-layers]="" [eval-steps]=1000)
USAGE="The LGTM README's command (batch 32, lr --learning-rate (3e-05; its grid: 3e-05, 5e-05,
1e-04), the online teacher's lr --t-learning-rate (3e-05), alpha_kd 1.0, temperature 1.0,
6 epochs, eval every 1000 steps) per method: kd (frozen fine-tuned teacher), prokt
(--train_teacher --init_classifier_to_zero), lgtm (prokt + --use_lgtm). ProKT and LGTM start
from --teacher-model, not fine-tuned.
--kd-teacher PATH: KD's teacher, '{task}' replaced by the task (e.g.
results/one_to_one_glue/{task}/teacher/seed42); without it run_glue.py fine-tunes one per task.
--num-layers K: the student is --student-model's first K layers (run_lgtm_glue.py --num_layers;
default: the script's 6).
--eval-steps N: evaluate (and keep the best student) every N steps (the README's 1000)."

declare -A METHOD_FLAGS=(
    [kd]=""
    [prokt]="--train_teacher --init_classifier_to_zero"
    [lgtm]="--train_teacher --init_classifier_to_zero --use_lgtm"
)

parse_options "$@"
GLUE_DIR=${OPTS[glue-dir]}

glue_data_step "$GLUE_DIR"
for task in $TASKS; do
    if [[ " $METHODS " == *" kd "* ]]; then
        if [[ -n ${OPTS[kd-teacher]} ]]; then
            kd_teacher=${OPTS[kd-teacher]//"{task}"/$task}
            kd_needs=""
        else
            glue_teacher_job "$task" "$GLUE_DIR" "${OPTS[teacher-model]}" "${OPTS[teacher-seed]}"
            kd_teacher=$(run_dir "$task" teacher "${OPTS[teacher-seed]}")
            kd_needs=$kd_teacher
        fi
    fi
    for method in $METHODS; do
        teacher=${OPTS[teacher-model]}
        needs=""
        if [[ $method == kd ]]; then
            teacher=$kd_teacher
            needs=$kd_needs
        fi
        read -r -a flags <<<"${METHOD_FLAGS[$method]}"
        [[ -z ${OPTS[num-layers]} ]] || flags+=(--num_layers "${OPTS[num-layers]}")
        for seed in $SEEDS; do
            job students "$task" "$method" "$seed" "$needs" -- "$REPO_DIR/run_lgtm_glue.py" \
                --model_name_or_path "${OPTS[student-model]}" --teacher_model "$teacher" --task_name "$task" \
                --data_dir "$GLUE_DIR/$(glue_task_dir "$task")" --per_device_train_batch_size 32 \
                --per_device_eval_batch_size 32 --learning_rate "${OPTS[learning-rate]}" --t_learning_rate "${OPTS[t-learning-rate]}" \
                --alpha_kd 1.0 --temperature 1.0 --num_train_epochs 6 --eval_steps "${OPTS[eval-steps]}" --do_train --do_eval \
                "${flags[@]}" --seed "$seed" --output_dir "$(run_dir "$task" "$method" "$seed")"
        done
    done
done
