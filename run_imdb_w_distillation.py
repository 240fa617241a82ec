"""Distil a student (DistilBERT in the paper) from a teacher fine-tuned on IMDB with the one-to-one
mapping (cross-correlation) loss.

    python run_imdb_w_distillation.py --student_model_name_or_path distilbert-base-uncased \
        --teacher_model_name_or_path ./bert_model_fine_tuned_on_imdb --output_dir ./output \
        --output_dir_intermed ./output_intermed

Released defaults: --alpha_imdb 0.5, --alpha_corr 0.005, the other loss weights 0. Trains and
evaluates by default (as released); saves the student with ``save_pretrained`` (and its
tokenizer) in output_dir, checkpoints and TensorBoard logs in output_dir_intermed, and writes
the test-split accuracy to ``eval_results.json``.
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
from utils.tasks.imdb import (
    IMDB,
    add_imdb_data_args,
    check_data_files,
    check_imdb_args,
    evaluate_accuracy,
    imdb_max_seq_length,
    load_features,
    load_imdb_test_set,
    write_eval_results,
)

TASK_WEIGHT = "alpha_imdb"  # the option that weighs the task loss


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_teacher_args(parser, "--teacher_model_name_or_path", required=True, help="the teacher fine-tuned on IMDB")
    parser.add_argument("--student_model_name_or_path", required=True, help="the student's initial weights")
    add_flag(parser, "--do_lower_case", help="lower-case the text for the student's tokenizer")
    add_flag(parser, "--do_train", default=True, help="train (default True)")
    add_flag(parser, "--do_eval", default=True, help="evaluate on the test split (default True)")
    add_imdb_data_args(parser)
    add_distillation_args(parser, TASK_WEIGHT, alpha_ce=0.0, alpha_corr=0.005, alpha_mse=0.0, alpha_cos=0.0)
    add_teacher_cache_args(parser)
    add_training_args(parser, batch_size=16, learning_rate=5e-5, epochs=3.0, group_by_length=True,
                      output_dir_intermed=True)
    args = parser.parse_args(argv)
    check_training_args(args)
    check_teacher_cache_args(args)
    check_imdb_args(args)
    return args


@exit_on_user_error
def main(argv=None):
    command = parse_args(argv)
    loss_fn = loss_from_args(command, TASK_WEIGHT)  # checked before any work
    check_data_files(command)  # before any work
    runtime, resume = start_run(resolved_options(command), command)
    loss_fn = across_processes(loss_fn, runtime)

    # Models, the run's options (--max_seq_length by default the most tokens the models read) and evaluation data
    pair = load_student_and_teacher(command, IMDB, loss_fn, runtime.device)
    student, tokenizer, teacher_tokens = pair.student, pair.tokenizer, pair.teacher_tokenizer
    args = resolved_options(command, max_seq_length=imdb_max_seq_length(command.max_seq_length, tokenizer, student,
                                                                        pair.teacher))
    student_accepted = forward_arguments(student)
    collate = PadCollator(pair.pad_token_ids, args.max_seq_length, args.pad_to_max_length,
                          pad_to_multiple_of=runtime.pad_multiple)
    eval_set = load_imdb_test_set(args, tokenizer, teacher_tokens) if args.do_eval else None

    def forward(batch):
        return student(**model_inputs(batch, student_accepted)).logits

    def evaluate(step=None):
        student.eval()
        return evaluate_accuracy(forward, eval_set, collate, args.per_device_eval_batch_size, runtime)

    if args.do_train:
        # Training data, the teacher's targets and the one-to-one loss of a batch
        train_features = load_features(args, "train", args.max_train_samples, tokenizer, teacher_tokens)
        if runtime.is_main:
            save_run_args(command, args.output_dir)
        train_features, teacher_outputs = classifier_teacher_targets(args, runtime, pair, loss_fn, IMDB,
                                                                     train_features, collate)
        compute_loss = classifier_distillation_loss(pair, loss_fn, teacher_outputs)
        # Train!
        result = train(args, runtime, model=student, train_dataset=train_features, collate_fn=collate,
                       compute_loss=compute_loss, tokenizer=tokenizer, evaluate=evaluate if eval_set else None,
                       resume_from=resume)
        save_trained(student, tokenizer, args.output_dir, runtime, "student", result)

    # Results
    if eval_set:
        write_eval_results(args, runtime, evaluate())
    mark_complete(args.output_dir, runtime, "run_imdb_w_distillation.py", trained=args.do_train)


if __name__ == "__main__":
    main()
