"""Distil a student (DistilBERT in the paper) from a fine-tuned GLUE teacher with the one-to-one
mapping (cross-correlation) loss and its specialised sub-teacher.

    python run_glue_w_distillation.py --teacher_model_name_or_path ./model/RTE/teacher \
        --student_model_name_or_path distilbert-base-uncased --task_name rte --max_seq_length 128 \
        --output_dir ./output --alpha_ce 0 --alpha_glue 0.5 --alpha_corr 0.005 --alpha_mse 0 \
        --alpha_cos 0 --do_mask True --num_train_epochs 3.0

Trains and evaluates by default (as released); saves the student with ``save_pretrained`` and
writes ``eval_results.json``.
"""

import logging
from pathlib import Path

import torch

from utils.cli import ArgumentParser, add_flag, add_training_args, check_training_args, save_run_args
from utils.distillation import add_distillation_args, check_pair, loss_from_args
from utils.errors import exit_on_user_error
from utils.features import PadCollator, model_inputs
from utils.glue import add_glue_data_args, evaluate_splits, load_eval_sets, split_features, write_results
from utils.models import forward_arguments, label_permutation, load_classifier, load_tokenizer
from utils.training import prepare_output_dir, set_seed, setup_runtime, train

logger = logging.getLogger("run_glue_w_distillation")


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher_model_name_or_path", required=True, help="the fine-tuned teacher")
    parser.add_argument("--student_model_name_or_path", required=True, help="the student's initial weights")
    add_flag(parser, "--do_lower_case", help="lower-case the text for the student's tokenizer")
    add_flag(parser, "--do_train", default=True, help="train (default True)")
    add_flag(parser, "--do_eval", default=True, help="evaluate on dev (default True)")
    add_flag(parser, "--do_predict", "--do_test", help="write GLUE test predictions")
    add_glue_data_args(parser)
    add_distillation_args(parser, "alpha_glue")
    add_training_args(parser, batch_size=16, learning_rate=5e-5, epochs=3.0)
    args = parser.parse_args(argv)
    check_training_args(args)
    return args


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    task = args.task_name
    loss_fn = loss_from_args(args)
    runtime = setup_runtime(args)
    resume = prepare_output_dir(args, runtime) if args.do_train else None
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)

    tokenizer = load_tokenizer(args.student_model_name_or_path, what="student", cache_dir=args.cache_dir,
                               do_lower_case=args.do_lower_case)
    teacher_tokenizer = load_tokenizer(args.teacher_model_name_or_path, what="teacher", cache_dir=args.cache_dir)
    teacher = load_classifier(args.teacher_model_name_or_path, task, what="teacher", cache_dir=args.cache_dir,
                              keep_head=True)
    student = load_classifier(args.student_model_name_or_path, task, what="student", cache_dir=args.cache_dir,
                              keep_head=not args.do_train)
    own_teacher_tokens = check_pair(args, loss_fn, student, teacher, tokenizer, teacher_tokenizer,
                                    args.student_model_name_or_path, args.teacher_model_name_or_path)
    teacher.to(runtime.device).eval().requires_grad_(False)
    student.to(runtime.device)
    teacher_prefix = "teacher_" if own_teacher_tokens else ""
    teacher_accepted = forward_arguments(teacher) - ({"token_type_ids"} if args.omit_teacher_token_type_ids else set())
    student_accepted = forward_arguments(student)
    teacher_order = label_permutation(teacher.config, task)
    pad_ids = {"": tokenizer.pad_token_id}
    if own_teacher_tokens:
        pad_ids["teacher_"] = teacher_tokenizer.pad_token_id
    collate = PadCollator(pad_ids, args.max_seq_length, args.pad_to_max_length, task.is_regression)

    teacher_tokens = teacher_tokenizer if own_teacher_tokens else None
    eval_sets = load_eval_sets(args, tokenizer, teacher_tokens) if args.do_eval else {}

    def forward(batch):
        return student(**model_inputs(batch, student_accepted)).logits

    def evaluate(step=None):
        student.eval()
        return evaluate_splits(forward, task, eval_sets, collate, args.per_device_eval_batch_size, runtime)

    if args.do_train:
        train_features, _ = split_features(args, "train", args.max_train_samples, tokenizer, teacher_tokens)
        if runtime.is_main:
            save_run_args(args, args.output_dir)

        def compute_loss(model, batch):
            need_hidden = loss_fn.uses_features
            outputs = model(**model_inputs(batch, student_accepted), labels=batch["labels"],
                            output_hidden_states=need_hidden)
            teacher_logits = teacher_hidden = None
            if loss_fn.uses_teacher:
                with torch.no_grad():
                    teacher_outputs = teacher(**model_inputs(batch, teacher_accepted, teacher_prefix),
                                              output_hidden_states=need_hidden)
                teacher_logits = teacher_outputs.logits
                if teacher_order is not None:
                    teacher_logits = teacher_logits[:, teacher_order]
                teacher_hidden = teacher_outputs.hidden_states[-1] if need_hidden else None
            student_hidden = outputs.hidden_states[-1] if need_hidden else None
            return loss_fn(outputs.loss, outputs.logits, teacher_logits, student_hidden, teacher_hidden,
                           batch["attention_mask"])

        result = train(args, runtime, model=student, train_dataset=train_features, collate_fn=collate,
                       compute_loss=compute_loss, tokenizer=tokenizer, evaluate=evaluate, resume_from=resume)
        if runtime.is_main:
            student.save_pretrained(args.output_dir)
            tokenizer.save_pretrained(args.output_dir)
            logger.info("saved the student to %s (train loss %.4f)", args.output_dir, result.train_loss)

    student.eval()
    write_results(args, runtime, evaluate, forward, eval_sets, collate, tokenizer, teacher_tokens)


if __name__ == "__main__":
    main()
