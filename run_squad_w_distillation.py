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

import torch
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from utils.cli import ArgumentParser, add_flag, add_training_args, check_training_args, save_run_args
from utils.distillation import add_distillation_args, check_pair, loss_from_args
from utils.errors import UserError, exit_on_user_error
from utils.features import PadCollator, model_inputs
from utils.models import forward_arguments, hidden_width, load_question_answerer, load_tokenizer
from utils.squad import (
    add_squad_data_args,
    answer_questions,
    check_squad_args,
    check_window_length,
    load_eval_set,
    load_train_features,
    span_logits,
    span_loss,
    stacked_span_logits,
    write_answers,
)
from utils.teacher_cache import TeacherCache, add_teacher_cache_args, check_teacher_cache_args, with_example_index
from utils.loop import train
from utils.runtime import save_trained, start_run


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", required=True, help="the student's initial weights")
    parser.add_argument("--teacher_name_or_path", default=None,
                        help="the teacher fine-tuned on SQuAD (needed when a loss term uses it)")
    parser.add_argument("--model_type", default=None, help="accepted for the released command; read from the config")
    parser.add_argument("--teacher_type", default=None, help="accepted for the released command; read from the config")
    parser.add_argument("--config_name", default=None,
                        help="accepted for the released command; the model's own config is used")
    parser.add_argument("--tokenizer_name", default=None, help="default: the student's tokenizer (a fast one)")
    add_flag(parser, "--do_lower_case", help="lower-case the text (the uncased models' tokenizers do already)")
    add_flag(parser, "--do_train")
    add_flag(parser, "--do_eval", help="evaluate on the predict file (after training, when training)")
    add_squad_data_args(parser)
    add_distillation_args(parser, "alpha_squad", alpha_ce=0.0, alpha_corr=0.5, alpha_mse=0.0, alpha_cos=0.0)
    add_training_args(parser, batch_size=16, learning_rate=5e-5, epochs=3.0, output_dir_intermed=True)
    add_teacher_cache_args(parser)
    args = parser.parse_args(argv)
    check_training_args(args)
    check_squad_args(args)
    check_teacher_cache_args(args)
    return args


def load_teacher(args, loss_fn, student, tokenizer, device):
    """The frozen teacher on ``device``, checked against the student; None when no loss term uses it."""
    if not (args.do_train and loss_fn.uses_teacher):
        return None
    if not args.teacher_name_or_path:
        raise UserError("--teacher_name_or_path is needed: --alpha_ce, --alpha_corr, --alpha_mse or --alpha_cos "
                        "is above 0")
    teacher_tokenizer = load_tokenizer(args.teacher_name_or_path, what="teacher", cache_dir=args.cache_dir)
    teacher = load_question_answerer(args.teacher_name_or_path, what="teacher", cache_dir=args.cache_dir,
                                     keep_head=True)
    if check_pair(args, loss_fn, student, teacher, tokenizer, teacher_tokenizer, args.model_name_or_path,
                  args.teacher_name_or_path):
        raise UserError(f"the student {args.model_name_or_path} and the teacher {args.teacher_name_or_path} "
                        "tokenise differently; SQuAD's start and end logits are compared token by token over "
                        "shared windows, so --alpha_ce needs the same tokenizer too: use a student with the "
                        "teacher's tokenizer (for an uncased BERT teacher: distilbert-base-uncased)")
    return teacher.to(device).eval().requires_grad_(False)


def span_teacher_outputs(teacher, args, uses_features):
    """``teacher_outputs(batch) -> (logits (B, T, 2), last hidden layer or None)`` of the frozen
    teacher, without gradients: its start and end logits stacked on the last dimension, unmasked
    (``teacher_span_logits`` masks them), from the student's windows with their ``token_type_ids``
    (none with ``--omit_teacher_token_type_ids``); the hidden layer when ``uses_features``."""
    accepted = forward_arguments(teacher) - ({"token_type_ids"} if args.omit_teacher_token_type_ids else set())

    @torch.no_grad()
    def teacher_outputs(batch):
        outputs = teacher(**model_inputs(batch, accepted), output_hidden_states=uses_features)
        logits = torch.stack([outputs.start_logits, outputs.end_logits], dim=-1)
        return logits, outputs.hidden_states[-1] if uses_features else None

    return teacher_outputs


def training_teacher(args, runtime, teacher, loss_fn, train_features, collate_fn):
    """``(train_features, teacher_outputs)``: the teacher itself (``span_teacher_outputs``), or
    with ``--cache_teacher`` a ``TeacherCache`` filled here (logits at the positions the span
    loss reads) and the features with their ``example_index``."""
    teacher_outputs = span_teacher_outputs(teacher, args, loss_fn.uses_features)
    if not args.cache_teacher:
        return train_features, teacher_outputs
    train_features = with_example_index(train_features)
    cache = TeacherCache.fill(args, runtime, teacher, teacher_outputs, train_features, collate_fn, num_logits=2,
                              hidden_width=hidden_width(teacher) if loss_fn.uses_features else None,
                              logits_per_token=True,
                              padded_length=args.max_seq_length if args.pad_to_max_length else None)
    return train_features, cache


def teacher_span_logits(logits, batch, released_padding):
    """The teacher's start and end logits from ``(B, T, 2)`` ``logits``, masked by ``span_logits``
    as the student's are."""
    outputs = QuestionAnsweringModelOutput(start_logits=logits[..., 0], end_logits=logits[..., 1])
    return span_logits(outputs, batch, released_padding)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    loss_fn = loss_from_args(args)
    runtime, resume = start_run(args)

    tokenizer = load_tokenizer(args.tokenizer_name or args.model_name_or_path, what="student",
                               cache_dir=args.cache_dir, do_lower_case=args.do_lower_case)
    student = load_question_answerer(args.model_name_or_path, what="student", cache_dir=args.cache_dir,
                                     keep_head=not args.do_train)
    teacher = load_teacher(args, loss_fn, student, tokenizer, runtime.device)
    check_window_length(args, tokenizer, *[model for model in (student, teacher) if model is not None])
    student.to(runtime.device)
    student_accepted = forward_arguments(student)
    collate = PadCollator({"": tokenizer.pad_token_id}, args.max_seq_length, args.pad_to_max_length)
    eval_set = load_eval_set(args, tokenizer) if args.do_eval else None

    def forward(batch):
        return stacked_span_logits(student(**model_inputs(batch, student_accepted)), args.max_seq_length)

    def answer():
        student.eval()
        return answer_questions(forward, eval_set, collate, args.per_device_eval_batch_size, runtime, args)

    if args.do_train:
        train_features = load_train_features(args, tokenizer)
        if runtime.is_main:
            save_run_args(args, args.output_dir)
        teacher_outputs = None
        if teacher is not None:
            train_features, teacher_outputs = training_teacher(args, runtime, teacher, loss_fn, train_features, collate)

        def compute_loss(model, batch):
            need_hidden = loss_fn.uses_features
            outputs = model(**model_inputs(batch, student_accepted), output_hidden_states=need_hidden)
            student_logits = span_logits(outputs, batch, args.pad_to_max_length)
            teacher_logits = teacher_hidden = None
            if teacher_outputs is not None:
                logits, teacher_hidden = teacher_outputs(batch)
                teacher_logits = teacher_span_logits(logits, batch, args.pad_to_max_length)
            student_hidden = outputs.hidden_states[-1] if need_hidden else None
            return loss_fn(span_loss(*student_logits, batch), student_logits, teacher_logits, student_hidden,
                           teacher_hidden, batch["attention_mask"])

        result = train(args, runtime, model=student, train_dataset=train_features, collate_fn=collate,
                       compute_loss=compute_loss, tokenizer=tokenizer,
                       evaluate=(lambda step: answer().metrics) if eval_set else None, resume_from=resume)
        save_trained(student, tokenizer, args.output_dir, runtime, "student", result)

    if eval_set is not None:
        answers = answer()
        if runtime.is_main:
            write_answers(args, answers)


if __name__ == "__main__":
    main()
