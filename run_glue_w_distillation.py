"""Distil a student (DistilBERT in the paper) from a fine-tuned GLUE teacher with the one-to-one
mapping (cross-correlation) loss and its specialised sub-teacher.

    python run_glue_w_distillation.py --teacher_model_name_or_path ./model/RTE/teacher \
        --student_model_name_or_path distilbert-base-uncased --task_name rte --max_seq_length 128 \
        --output_dir ./output --alpha_ce 0 --alpha_glue 0.5 --alpha_corr 0.005 --alpha_mse 0 \
        --alpha_cos 0 --do_mask True --num_train_epochs 3.0

Trains and evaluates by default (as released); saves the student with ``save_pretrained`` and
writes ``eval_results.json``.
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
from utils.engine.models import forward_arguments
from utils.engine.runtime import mark_complete, save_trained, start_run
from utils.methods.one_to_one import (
    across_processes,
    add_distillation_args,
    classifier_distillation_loss,
    classifier_teacher_targets,
    load_student_and_teacher,
    loss_from_args,
)
from utils.methods.teacher import add_teacher_args
from utils.methods.teacher_cache import add_teacher_cache_args, check_teacher_cache_args
from utils.tasks.glue import (
    add_glue_data_args,
    check_data_files,
    check_max_seq_length,
    evaluate_splits,
    load_glue_dev_sets,
    load_prediction_sets,
    split_features,
    write_results,
)
from utils.tasks.glue_data import get_task

TASK_WEIGHT = "alpha_glue"  # the option that weighs the task loss


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_teacher_args(parser, "--teacher_model_name_or_path", required=True, help="the fine-tuned teacher")
    parser.add_argument("--student_model_name_or_path", required=True, help="the student's initial weights")
    add_flag(parser, "--do_lower_case", help="lower-case the text for the student's tokenizer")
    add_flag(parser, "--do_train", default=True, help="train (default True)")
    add_flag(parser, "--do_eval", default=True, help="evaluate on dev (default True)")
    add_flag(parser, "--do_predict", "--do_test", help="write GLUE test predictions", changes_results=False)
    add_glue_data_args(parser)
    add_distillation_args(parser, TASK_WEIGHT)
    add_teacher_cache_args(parser)
    add_training_args(parser, batch_size=16, learning_rate=5e-5, epochs=3.0)
    args = parser.parse_args(argv)
    check_training_args(args)
    check_teacher_cache_args(args)
    return args


@exit_on_user_error
def main(argv=None):
    command = parse_args(argv)
    args, task = resolved_options(command), get_task(command.task_name)
    loss_fn = loss_from_args(args, TASK_WEIGHT)
    check_data_files(args, task)  # before any work
    runtime, resume = start_run(args, command)
    loss_fn = across_processes(loss_fn, runtime)

    # Models and evaluation data
    pair = load_student_and_teacher(args, task, loss_fn, runtime.device)
    student, tokenizer, teacher_tokens = pair.student, pair.tokenizer, pair.teacher_tokenizer
    check_max_seq_length(args.max_seq_length, tokenizer, student, pair.teacher)
    student_accepted = forward_arguments(student)
    collate = PadCollator(pair.pad_token_ids, args.max_seq_length, args.pad_to_max_length, task.is_regression,
                          pad_to_multiple_of=runtime.pad_multiple)
    eval_sets = load_glue_dev_sets(args, task, tokenizer, teacher_tokens) if args.do_eval else {}
    prediction_sets = load_prediction_sets(args, task, tokenizer, teacher_tokens)

    def forward(batch):
        return student(**model_inputs(batch, student_accepted)).logits

    def evaluate(step=None):
        student.eval()
        return evaluate_splits(forward, task, eval_sets, collate, args.per_device_eval_batch_size, runtime)

    if args.do_train:
        # Training data, the teacher's targets and the one-to-one loss of a batch
        train_features, _ = split_features(args, task, "train", args.max_train_samples, tokenizer,
                                             teacher_tokens)
        if runtime.is_main:
            save_run_args(command, args.output_dir)
        train_features, teacher_outputs = classifier_teacher_targets(args, runtime, pair, loss_fn, task,
                                                                     train_features, collate)
        compute_loss = classifier_distillation_loss(pair, loss_fn, teacher_outputs)
        # Train!
        result = train(args, runtime, model=student, train_dataset=train_features, collate_fn=collate,
                       compute_loss=compute_loss, tokenizer=tokenizer, evaluate=evaluate, resume_from=resume)
        save_trained(student, tokenizer, args.output_dir, runtime, "student", result)

    # Results
    student.eval()
    write_results(args, runtime, evaluate, forward, eval_sets, prediction_sets, collate)
    mark_complete(args.output_dir, runtime, "run_glue_w_distillation.py", trained=args.do_train)


if __name__ == "__main__":
    main()
