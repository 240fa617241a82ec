"""Distil a student (DistilBERT in the paper) from a teacher fine-tuned on SQuAD v1.1 with the
one-to-one mapping (cross-correlation) loss.

    python run_squad_w_distillation.py --model_type distilbert --model_name_or_path distilbert-base-uncased \
        --output_dir ./run_squad_w_distillation_CrossCorrLoss --teacher_type bert \
        --teacher_name_or_path ./bert-base-uncased-finetuned-squad-v1 --data_dir data --train_file train.json \
        --predict_file dev.json --do_train --do_eval --do_lower_case --save_steps 5541 --logging_steps 5541 \
        --alpha_cos 0.0 --alpha_corr 0.5 --alpha_ce 0.0 --alpha_squad 0.5 --num_train_epochs 3

Teacher and student read the same windows (the student's tokenisation; the teacher also gets
token_type_ids, which DistilBERT does not take). ``--alpha_ce`` distils the start and end
logits (the mean of the two KD terms). Saves the student with ``save_pretrained`` and writes
``eval_results.json``, ``predictions.json`` and ``nbest_predictions.json``. With
``--cache_teacher`` the teacher's start and end logits (at the real tokens, or at every position
with ``--pad_to_max_length``) and last hidden states are computed once before training.
"""

from utils.engine.cli import (
    ArgumentParser,
    add_flag,
    add_training_args,
    check_training_args,
    resolved_options,
    save_run_args,
)
from utils.engine.errors import exit_on_user_error
from utils.engine.features import PadCollator, model_inputs
from utils.engine.loop import train
from utils.engine.models import forward_arguments, load_question_answerer, load_tokenizer
from utils.engine.runtime import mark_complete, save_trained, start_run
from utils.methods.one_to_one import (
    across_processes,
    add_distillation_args,
    load_span_teacher,
    loss_from_args,
    span_distillation_loss,
    span_teacher_targets,
)
from utils.methods.teacher import add_teacher_args
from utils.methods.teacher_cache import add_teacher_cache_args, check_teacher_cache_args
from utils.tasks.squad import (
    add_squad_data_args,
    answer_questions,
    check_squad_args,
    check_window_length,
    load_squad_eval_set,
    load_train_features,
    stacked_span_logits,
    write_answers,
)

TASK_WEIGHT = "alpha_squad"  # the option that weighs the task loss


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", required=True, help="the student's initial weights")
    add_teacher_args(parser, classifier=False, help="the teacher fine-tuned on SQuAD (needed when a loss term uses it)")
    parser.add_argument("--model_type", default=None, help="accepted for the released command; read from the config")
    parser.add_argument("--teacher_type", default=None, help="accepted for the released command; read from the config")
    parser.add_argument("--config_name", default=None,
                        help="accepted for the released command; the model's own config is used")
    parser.add_argument("--tokenizer_name", default=None, help="default: the student's tokenizer (a fast one)")
    add_flag(parser, "--do_lower_case", help="lower-case the text (the uncased models' tokenizers do already)")
    add_flag(parser, "--do_train")
    add_flag(parser, "--do_eval", help="evaluate on the predict file (after training, when training)")
    add_squad_data_args(parser)
    add_distillation_args(parser, TASK_WEIGHT, alpha_ce=0.0, alpha_corr=0.5, alpha_mse=0.0, alpha_cos=0.0,
                          classifiers=False)
    add_training_args(parser, batch_size=16, learning_rate=5e-5, epochs=3.0, output_dir_intermed=True)
    add_teacher_cache_args(parser)
    args = parser.parse_args(argv)
    check_training_args(args)
    check_squad_args(args)
    check_teacher_cache_args(args)
    return args


@exit_on_user_error
def main(argv=None):
    command = parse_args(argv)
    args = resolved_options(command)
    loss_fn = loss_from_args(args, TASK_WEIGHT)
    runtime, resume = start_run(args, command)
    loss_fn = across_processes(loss_fn, runtime)

    # Models and evaluation data
    tokenizer = load_tokenizer(args.tokenizer_name or args.model_name_or_path, what="student",
                               cache_dir=args.cache_dir, do_lower_case=args.do_lower_case)
    student = load_question_answerer(args.model_name_or_path, what="student", cache_dir=args.cache_dir,
                                     keep_head=not args.do_train)
    teacher = load_span_teacher(args, loss_fn, student, tokenizer, runtime.device)
    check_window_length(args, tokenizer, *[model for model in (student, teacher) if model is not None])
    student.to(runtime.device)
    student_accepted = forward_arguments(student)
    collate = PadCollator({"": tokenizer.pad_token_id}, args.max_seq_length, args.pad_to_max_length,
                          pad_to_multiple_of=runtime.pad_multiple)
    eval_set = load_squad_eval_set(args, tokenizer) if args.do_eval else None

    def forward(batch):
        return stacked_span_logits(student(**model_inputs(batch, student_accepted)), args.max_seq_length)

    def answer():
        student.eval()
        return answer_questions(forward, eval_set, collate, args.per_device_eval_batch_size, runtime, args)

    if args.do_train:
        # Training windows, the teacher's targets and the one-to-one loss of a batch
        train_features = load_train_features(args, tokenizer)
        if runtime.is_main:
            save_run_args(command, args.output_dir)
        teacher_outputs = None
        if teacher is not None:
            train_features, teacher_outputs = span_teacher_targets(args, runtime, teacher, loss_fn, train_features,
                                                                   collate)
        compute_loss = span_distillation_loss(student, loss_fn, teacher_outputs, args.pad_to_max_length)
        # Train!
        result = train(args, runtime, model=student, train_dataset=train_features, collate_fn=collate,
                       compute_loss=compute_loss, tokenizer=tokenizer,
                       evaluate=(lambda step: answer().metrics) if eval_set else None, resume_from=resume)
        save_trained(student, tokenizer, args.output_dir, runtime, "student", result)

    # Results
    if eval_set is not None:
        answers = answer()
        if runtime.is_main:
            write_answers(args, answers)
    mark_complete(args.output_dir, runtime, "run_squad_w_distillation.py", trained=args.do_train)


if __name__ == "__main__":
    main()
