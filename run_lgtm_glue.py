"""KD, ProKT and LGTM: a student trained online from a teacher on a GLUE task.

    python run_lgtm_glue.py --model_name_or_path google/bert_uncased_L-6_H-768_A-12 \
        --teacher_model bert-base-uncased --task_name mnli --per_device_train_batch_size 32 \
        --per_device_eval_batch_size 32 --learning_rate 3e-05 --t_learning_rate 3e-05 --alpha_kd 1.0 \
        --temperature 1.0 --num_train_epochs 6 --output_dir <out_dir> --eval_steps 1000 --do_train \
        --do_eval --train_teacher --init_classifier_to_zero --use_lgtm

KD: no teacher flags (a frozen, fine-tuned teacher). ProKT: ``--train_teacher
--init_classifier_to_zero``. LGTM: ProKT plus ``--use_lgtm``. Every ``--eval_steps`` steps the
student and the teacher are evaluated on dev, and the student with the best dev metric is saved
in output_dir with ``eval_results.json`` and ``teacher_eval_results.json``. Inference:
``--model_name_or_path <checkpoint> --task_name mnli --output_dir <dir> --do_predict`` writes
the GLUE server's test files.
"""

import logging
import math
import random
from pathlib import Path

import torch

from utils.engine.cli import (
    ArgumentParser,
    add_flag,
    add_training_args,
    bounded,
    check_training_args,
    resolved_options,
    save_run_args,
)
from utils.engine.errors import UserError, exit_on_user_error
from utils.engine.features import PadCollator, model_inputs, tokenize_examples
from utils.engine.loop import make_optimizer, train
from utils.engine.models import (
    forward_arguments,
    is_sequence_classifier,
    load_classifier,
    load_config,
    load_tokenizer,
    same_vocabulary,
)
from utils.engine.runtime import mark_complete, save_trained, start_run, write_json
from utils.methods.lgtm import BestScore, QuizBatches, online_student_loss, teacher_logits_of, teacher_step_from_args
from utils.methods.teacher import add_teacher_args, load_teacher
from utils.tasks.glue import (
    add_glue_data_args,
    check_data_files,
    check_max_seq_length,
    evaluate_splits,
    labelled_features,
    load_glue_dev_sets,
    load_glue_examples,
    load_prediction_sets,
    write_evaluation,
    write_results,
)
from utils.tasks.glue_data import get_task

logger = logging.getLogger("run_lgtm_glue")


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", required=True, help="the student's initial weights")
    add_teacher_args(parser, "--teacher_model", help="the teacher (fine-tuned for KD)")
    parser.add_argument("--num_layers", type=bounded(int, at_least=1), default=6, help="the student keeps its first k layers")
    add_flag(parser, "--do_train")
    add_flag(parser, "--do_eval")
    add_flag(parser, "--do_predict", "--do_test", help="write GLUE test predictions", changes_results=False)
    group = parser.add_argument_group("KD, ProKT and LGTM")
    group.add_argument("--alpha_kd", type=bounded(float, at_least=0, at_most=1), default=1.0, help="student: weight of KD against cross-entropy")
    group.add_argument("--t_alpha_kd", type=bounded(float, at_least=0, at_most=1), default=0.4, help="teacher: weight of KD against cross-entropy")
    group.add_argument("--temperature", type=bounded(float, above=0), default=1.0)
    group.add_argument("--t_learning_rate", type=bounded(float, above=0), default=3e-5, help="the teacher's learning rate")
    add_flag(group, "--train_teacher", help="update the teacher online (ProKT; LGTM with --use_lgtm)")
    add_flag(group, "--init_classifier_to_zero", "--init_classifier_as_zero",
             help="set the classification heads of both models to zero")
    add_flag(group, "--use_lgtm", help="weight the teacher's update by distillation influence (LGTM)")
    group.add_argument("--lgtm_r", type=bounded(float, above=0), default=0.01, help="finite-difference step: eps = r / ||v||")
    group.add_argument("--quiz_source", choices=["validation", "train_split"], default="validation",
                       help="quiz batches from the dev set (as released) or from a held-out part of train")
    group.add_argument("--quiz_ratio", type=bounded(float, above=0, below=1), default=0.1, help="share of train held out with train_split")
    add_glue_data_args(parser)
    add_training_args(parser, batch_size=32, learning_rate=3e-5, epochs=6.0)
    args = parser.parse_args(argv)
    check_training_args(args)
    if args.use_lgtm and not args.train_teacher:
        raise UserError("--use_lgtm updates the teacher: it needs --train_teacher (and, as in the paper, "
                        "--init_classifier_to_zero)")
    if args.do_train and not args.teacher_name_or_path:
        raise UserError("--do_train needs a --teacher_model (--teacher_name_or_path)")
    if args.do_train and args.alpha_kd >= 1 and get_task(args.task_name).is_regression:
        raise UserError(f"--task_name {args.task_name} is a regression task: the KD term (a softmax over its one "
                        "output) is always 0, so with --alpha_kd 1.0 the student would get no gradient; give "
                        "--alpha_kd below 1 to train it on the task loss too")
    if args.use_lgtm and args.fp16:
        raise UserError("--use_lgtm with --fp16: LGTM's teacher update takes gradients outside the float16 loss "
                        "scaler, where they can underflow or overflow; use --bf16 (float32's range) instead")
    return args


def load_models(args, task, tokenizer):
    """The student (first ``--num_layers`` layers) and the teacher (``utils.methods.teacher``: a
    checkpoint saved as a sequence classifier keeps its head, a pre-trained encoder gets a new one,
    refused for KD's frozen teacher unless ``--allow_untrained_teacher_head``), which must share the
    student's vocabulary. A student saved as a sequence classifier keeps its head when it is not
    trained here (evaluation, predictions)."""
    teacher = None
    if args.teacher_name_or_path:
        untrained_head = ("train" if args.train_teacher else "allow" if args.allow_untrained_teacher_head
                          else "refuse")
        teacher, teacher_tokenizer = load_teacher(args.teacher_name_or_path, task, cache_dir=args.cache_dir,
                                                  untrained_head=untrained_head)
        if not same_vocabulary(tokenizer, teacher_tokenizer):
            raise UserError(f"the student {args.model_name_or_path} and the teacher {args.teacher_name_or_path} use "
                            "different vocabularies; KD, ProKT and LGTM feed both the same token ids")
    student_is_classifier = is_sequence_classifier(load_config(args.model_name_or_path, what="student"))
    student = load_classifier(args.model_name_or_path, task, what="student", cache_dir=args.cache_dir,
                              keep_head=student_is_classifier and not args.do_train,
                              num_layers=args.num_layers if args.do_train else None)
    if args.init_classifier_to_zero and teacher is not None:
        for model in (student, teacher):
            torch.nn.init.zeros_(model.classifier.weight)
            torch.nn.init.zeros_(model.classifier.bias)
    return student, teacher


def split_quiz(args, task, examples):
    """(training examples, quiz examples) for ``--quiz_source``."""
    if args.quiz_source == "validation":
        quiz = load_glue_examples(args, task, task.eval_splits[0])
        return examples, quiz
    order = list(range(len(examples)))
    random.Random(args.seed).shuffle(order)
    held_out = set(order[:math.floor(len(examples) * args.quiz_ratio)])
    if not held_out:
        raise UserError(f"--quiz_ratio {args.quiz_ratio} of {len(examples)} training examples leaves no quiz example")
    return ([e for i, e in enumerate(examples) if i not in held_out],
            [e for i, e in enumerate(examples) if i in held_out])


def train_online(args, command, runtime, task, student, teacher, tokenizer, collate, evaluate_model, resume):
    """Train the student from the teacher (KD; ProKT and LGTM update the teacher too) and keep the
    student with the best dev metric in output_dir, with ``eval_results.json`` and
    ``teacher_eval_results.json``; without dev sets (``evaluate_model`` None), the last student."""
    # Training and quiz data
    teacher.to(runtime.device)
    train_examples, quiz_examples = split_quiz(args, task, load_glue_examples(args, task, "train",
                                                                              args.max_train_samples))

    def features_of(examples):
        return labelled_features(tokenize_examples(tokenizer, examples, args.max_seq_length), examples)

    train_features = features_of(train_examples)
    quiz_batches = None
    if args.use_lgtm:
        quiz_batches = QuizBatches(features_of(quiz_examples), collate, batch_size=args.per_device_train_batch_size,
                                   seed=args.seed + 1, group_by_length=args.group_by_length, runtime=runtime)

    # The method: KD distils from the frozen teacher; ProKT and LGTM also take a teacher step on
    # every micro-batch (the loop's micro_batch_hook)
    student_optimizer = make_optimizer(student, args)
    teacher_step = teacher_step_from_args(args, runtime, teacher, student, student_optimizer, quiz_batches,
                                          len(train_features))
    if teacher_step is not None:
        teacher.train()
    else:
        teacher.eval().requires_grad_(False)
    compute_loss = online_student_loss(student, teacher_logits_of(teacher), alpha_kd=args.alpha_kd,
                                       temperature=args.temperature)
    if runtime.is_main:
        save_run_args(command, args.output_dir)

    # Evaluation, and the best student kept in output_dir
    best = BestScore()

    def evaluate(step):
        metrics, teacher_metrics = evaluate_model(student), evaluate_model(teacher)
        if teacher_step is not None:
            teacher.train()
        logger.info("step %d: student %s, teacher %s", step, metrics, teacher_metrics)
        if math.isfinite(metrics[task.main_metric]) and metrics[task.main_metric] > best.value:
            best.value = metrics[task.main_metric]
            save_trained(student, tokenizer, args.output_dir, runtime)
            if runtime.is_main:
                write_evaluation(args.output_dir, task.name, metrics, step=step)
                write_json(Path(args.output_dir) / "teacher_eval_results.json", dict(teacher_metrics, step=step))
        return {**metrics, **{f"teacher_{name}": value for name, value in teacher_metrics.items()}}

    # Train!
    evaluates = evaluate_model is not None
    result = train(args, runtime, model=student, train_dataset=train_features, collate_fn=collate,
                   compute_loss=compute_loss, tokenizer=tokenizer, evaluate=evaluate if evaluates else None,
                   micro_batch_hook=teacher_step, extra_components={"teacher": teacher, "best": best},
                   resume_from=resume, optimizer=student_optimizer)
    if evaluates and result.global_step % args.eval_steps != 0:
        evaluate(result.global_step)
    elif not evaluates:
        save_trained(student, tokenizer, args.output_dir, runtime, "student", result)


@exit_on_user_error
def main(argv=None):
    command = parse_args(argv)
    args = resolved_options(command, evaluate_during_training=command.do_eval)
    task = get_task(args.task_name)
    check_data_files(args, task)  # before any work
    runtime, resume = start_run(args, command)

    # Models and evaluation data
    tokenizer = load_tokenizer(args.model_name_or_path, what="student", cache_dir=args.cache_dir)
    student, teacher = load_models(args, task, tokenizer)
    check_max_seq_length(args.max_seq_length, tokenizer, *[model for model in (student, teacher) if model is not None])
    student.to(runtime.device)
    collate = PadCollator({"": tokenizer.pad_token_id}, args.max_seq_length, args.pad_to_max_length, task.is_regression,
                          pad_to_multiple_of=runtime.pad_multiple)
    eval_sets = load_glue_dev_sets(args, task, tokenizer) if args.do_eval else {}
    prediction_sets = load_prediction_sets(args, task, tokenizer)

    def evaluate_model(model):
        model.eval()
        return evaluate_splits(logits_of(model), task, eval_sets, collate, args.per_device_eval_batch_size, runtime)

    # Training, or evaluation of the given student
    if args.do_train:
        train_online(args, command, runtime, task, student, teacher, tokenizer, collate,
                     evaluate_model if eval_sets else None, resume)
    elif eval_sets:
        metrics = evaluate_model(student)
        if runtime.is_main:
            write_evaluation(args.output_dir, task.name, metrics)

    # Test predictions (of the best student, when one was kept)
    if args.do_predict:
        if args.do_train and eval_sets:
            student = load_classifier(args.output_dir, task, what="best student", keep_head=True).to(runtime.device)
        student.eval()
        write_results(args, runtime, None, logits_of(student), {}, prediction_sets, collate)
    mark_complete(args.output_dir, runtime, "run_lgtm_glue.py", trained=args.do_train)


def logits_of(model):
    """``logits(batch)``: ``model``'s logits of a batch (the inputs its forward takes)."""
    accepted = forward_arguments(model)
    return lambda batch: model(**model_inputs(batch, accepted)).logits


if __name__ == "__main__":
    main()
