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
import torch.distributed as dist

from utils.cli import ArgumentParser, add_flag, add_training_args, check_training_args, save_run_args
from utils.errors import UserError, exit_on_user_error
from transformers import get_scheduler

from utils.features import PadCollator, model_inputs, tokenize_examples
from utils.glue import (
    add_glue_data_args,
    evaluate_splits,
    labelled_features,
    load_eval_sets,
    load_examples,
    load_prediction_sets,
    write_results,
)
from utils.lgtm import lgtm_student_loss, lgtm_teacher_grads, lgtm_teacher_loss
from utils.models import (
    forward_arguments,
    is_sequence_classifier,
    load_classifier,
    load_config,
    load_tokenizer,
    same_vocabulary,
)
from utils.loop import epoch_batches, example_lengths, make_optimizer, planned_steps, train
from utils.runtime import move_to_device, save_trained, start_run, write_json

logger = logging.getLogger("run_lgtm_glue")


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", required=True, help="the student's initial weights")
    parser.add_argument("--teacher_model", default=None, help="the teacher (fine-tuned for KD)")
    parser.add_argument("--num_layers", type=int, default=6, help="the student keeps its first k layers")
    add_flag(parser, "--do_train")
    add_flag(parser, "--do_eval")
    add_flag(parser, "--do_predict", "--do_test", help="write GLUE test predictions")
    group = parser.add_argument_group("KD, ProKT and LGTM")
    group.add_argument("--alpha_kd", type=float, default=1.0, help="student: weight of KD against cross-entropy")
    group.add_argument("--t_alpha_kd", type=float, default=0.4, help="teacher: weight of KD against cross-entropy")
    group.add_argument("--temperature", type=float, default=1.0)
    group.add_argument("--t_learning_rate", type=float, default=3e-5, help="the teacher's learning rate")
    add_flag(group, "--train_teacher", help="update the teacher online (ProKT; LGTM with --use_lgtm)")
    add_flag(group, "--init_classifier_to_zero", "--init_classifier_as_zero",
             help="set the classification heads of both models to zero")
    add_flag(group, "--use_lgtm", help="weight the teacher's update by distillation influence (LGTM)")
    group.add_argument("--lgtm_r", type=float, default=0.01, help="finite-difference step: eps = r / ||v||")
    group.add_argument("--quiz_source", choices=["validation", "train_split"], default="validation",
                       help="quiz batches from the dev set (as released) or from a held-out part of train")
    group.add_argument("--quiz_ratio", type=float, default=0.1, help="share of train held out with train_split")
    add_glue_data_args(parser)
    add_training_args(parser, batch_size=32, learning_rate=3e-5, epochs=6.0)
    args = parser.parse_args(argv)
    check_training_args(args)
    if args.use_lgtm and not args.train_teacher:
        raise UserError("--use_lgtm updates the teacher: it needs --train_teacher (and, as in the paper, "
                        "--init_classifier_to_zero)")
    if args.do_train and not args.teacher_model:
        raise UserError("--do_train needs a --teacher_model")
    if not 0 < args.quiz_ratio < 1:
        raise UserError(f"--quiz_ratio must be between 0 and 1, got {args.quiz_ratio}")
    if args.temperature <= 0:
        raise UserError(f"--temperature must be positive, got {args.temperature}")
    args.evaluate_during_training = args.do_eval
    return args


def load_models(args, task, tokenizer):
    """The student (first ``--num_layers`` layers) and the teacher, checked against each other.

    A checkpoint saved as a sequence classifier keeps its head (and must have the task's label
    count); a pre-trained encoder gets a new head.
    """
    student_is_classifier = is_sequence_classifier(load_config(args.model_name_or_path, what="student"))
    teacher = None
    if args.teacher_model:
        teacher_config = load_config(args.teacher_model, what="teacher", cache_dir=args.cache_dir)
        teacher_is_classifier = is_sequence_classifier(teacher_config)
        if teacher_is_classifier and teacher_config.num_labels != task.num_labels:
            raise UserError(f"the teacher {args.teacher_model} has {teacher_config.num_labels} labels and the student "
                            f"needs {task.num_labels} for {task.name}: pass a teacher fine-tuned on {task.name}, "
                            "or a pre-trained one without a classification head")
        teacher_tokenizer = load_tokenizer(args.teacher_model, what="teacher", cache_dir=args.cache_dir)
        if not same_vocabulary(tokenizer, teacher_tokenizer):
            raise UserError(f"the student {args.model_name_or_path} and the teacher {args.teacher_model} use "
                            "different vocabularies; KD, ProKT and LGTM feed both the same token ids")
        if not teacher_is_classifier and not args.train_teacher:
            logger.warning("KD from a teacher that was not fine-tuned (%s): its head is random", args.teacher_model)
        teacher = load_classifier(args.teacher_model, task, what="teacher", cache_dir=args.cache_dir,
                                  keep_head=teacher_is_classifier)
    student = load_classifier(args.model_name_or_path, task, what="student", cache_dir=args.cache_dir,
                              keep_head=student_is_classifier and not args.do_train,
                              num_layers=args.num_layers if args.do_train else None)
    if args.init_classifier_to_zero and teacher is not None:
        for model in (student, teacher):
            torch.nn.init.zeros_(model.classifier.weight)
            torch.nn.init.zeros_(model.classifier.bias)
    return student, teacher


def split_quiz(args, examples):
    """(training examples, quiz examples) for ``--quiz_source``."""
    if args.quiz_source == "validation":
        quiz = load_examples(args, args.task_name.eval_splits[0])
        return examples, quiz
    order = list(range(len(examples)))
    random.Random(args.seed).shuffle(order)
    held_out = set(order[:math.floor(len(examples) * args.quiz_ratio)])
    if not held_out:
        raise UserError(f"--quiz_ratio {args.quiz_ratio} of {len(examples)} training examples leaves no quiz example")
    return ([e for i, e in enumerate(examples) if i not in held_out],
            [e for i, e in enumerate(examples) if i in held_out])


class QuizBatches:
    """The quiz batch of each teacher update: the quiz set cycled in a shuffled order per pass,
    a function of the number of updates so far (saved in checkpoints). With
    ``--group_by_length`` the quiz batches are grouped by length like the training batches."""

    def __init__(self, features, collate_fn, args, runtime):
        if not features:
            raise UserError("the quiz set has no examples")
        self.features, self.collate_fn, self.args, self.runtime = features, collate_fn, args, runtime
        self.lengths = example_lengths(features) if args.group_by_length else None
        self.drawn = 0

    def next(self):
        plan = epoch_batches(len(self.features), self.args.per_device_train_batch_size, seed=self.args.seed + 1,
                             epoch=self.drawn // self._batches_per_pass(), world_size=self.runtime.world_size,
                             rank=self.runtime.rank, lengths=self.lengths)
        batch = plan[self.drawn % len(plan)]
        self.drawn += 1
        return move_to_device(self.collate_fn([self.features[i] for i in batch]), self.runtime.device)

    def _batches_per_pass(self):
        return math.ceil(len(self.features) / (self.args.per_device_train_batch_size * self.runtime.world_size))

    def state_dict(self):
        return {"drawn": self.drawn}

    def load_state_dict(self, state):
        self.drawn = state["drawn"]


class BestScore:
    """The best dev metric so far (saved in checkpoints so that a resumed run keeps it)."""

    def __init__(self):
        self.value = -math.inf

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def average_across_processes(tensors, runtime):
    """All-reduce (mean) a list of tensors, so that every process's teacher takes the same step."""
    if runtime.distributed:
        for tensor in tensors:
            dist.all_reduce(tensor)
            tensor.div_(runtime.world_size)


def make_teacher_step(args, runtime, teacher, student, student_optimizer, quiz_batches, teacher_optimizer,
                      teacher_scheduler):
    """The teacher update of ProKT (or LGTM with ``--use_lgtm``) on one training batch.

    Runs inside the training loop's autocast. The teacher's gradients are averaged over the
    processes so that every process's teacher takes the same step.
    """
    teacher_params = list(teacher.parameters())
    student_accepted, teacher_accepted = forward_arguments(student), forward_arguments(teacher)

    def teacher_step(batch):
        if args.use_lgtm:
            grads = lgtm_teacher_grads(teacher, student, batch, quiz_batches.next(), student_optimizer,
                                       alpha_kd=args.alpha_kd, t_alpha_kd=args.t_alpha_kd,
                                       temperature=args.temperature, teacher_lr=teacher_scheduler.get_last_lr()[0],
                                       r=args.lgtm_r)
            for parameter, grad in zip(teacher_params, grads):
                parameter.grad = grad
        else:
            student.eval()
            with torch.no_grad():
                student_logits = student(**model_inputs(batch, student_accepted)).logits
            student.train()
            outputs = teacher(**model_inputs(batch, teacher_accepted), labels=batch["labels"])
            lgtm_teacher_loss(outputs.logits, student_logits, outputs.loss, t_alpha_kd=args.t_alpha_kd,
                              temperature=args.temperature).backward()
        average_across_processes([p.grad for p in teacher_params if p.grad is not None], runtime)
        if args.max_grad_norm and args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(teacher_params, args.max_grad_norm)
        teacher_optimizer.step()
        teacher_scheduler.step()
        teacher_optimizer.zero_grad(set_to_none=True)

    return teacher_step


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    task = args.task_name
    runtime, resume = start_run(args)

    tokenizer = load_tokenizer(args.model_name_or_path, what="student", cache_dir=args.cache_dir)
    student, teacher = load_models(args, task, tokenizer)
    student.to(runtime.device)
    collate = PadCollator({"": tokenizer.pad_token_id}, args.max_seq_length, args.pad_to_max_length, task.is_regression)
    eval_sets = load_eval_sets(args, tokenizer) if args.do_eval else {}
    prediction_sets = load_prediction_sets(args, tokenizer)

    def logits_of(model):
        accepted = forward_arguments(model)
        return lambda batch: model(**model_inputs(batch, accepted)).logits

    def evaluate_model(model):
        model.eval()
        return evaluate_splits(logits_of(model), task, eval_sets, collate, args.per_device_eval_batch_size, runtime)

    if args.do_train:
        train_lgtm(args, runtime, student, teacher, tokenizer, collate, eval_sets, evaluate_model, resume)
    elif eval_sets:
        metrics = evaluate_model(student)
        if runtime.is_main:
            write_json(Path(args.output_dir) / "eval_results.json", metrics)

    if args.do_predict:
        if args.do_train and eval_sets:
            student = load_classifier(args.output_dir, task, what="best student", keep_head=True).to(runtime.device)
        student.eval()
        write_results(args, runtime, None, logits_of(student), {}, prediction_sets, collate)


def train_lgtm(args, runtime, student, teacher, tokenizer, collate, eval_sets, evaluate_model, resume):
    """Train the student with KD, ProKT or LGTM; keep the student with the best dev metric."""
    task = args.task_name
    teacher.to(runtime.device)
    student_accepted, teacher_accepted = forward_arguments(student), forward_arguments(teacher)
    train_examples, quiz_examples = split_quiz(args, load_examples(args, "train", args.max_train_samples))

    def features_of(examples):
        return labelled_features(tokenize_examples(tokenizer, examples, args.max_seq_length), examples)

    train_features = features_of(train_examples)
    quiz_batches = QuizBatches(features_of(quiz_examples), collate, args, runtime)
    student_optimizer = make_optimizer(student, args)
    best = BestScore()
    components = {"teacher": teacher, "quiz": quiz_batches, "best": best}
    if args.train_teacher:
        teacher_optimizer = torch.optim.AdamW(teacher.parameters(), lr=args.t_learning_rate, eps=args.adam_epsilon,
                                              weight_decay=0.0)
        _, total_steps, _ = planned_steps(len(train_features), args, runtime)
        teacher_updates = total_steps * args.gradient_accumulation_steps
        warmup = args.warmup_steps or math.ceil(args.warmup_ratio * teacher_updates)
        teacher_scheduler = get_scheduler(args.lr_scheduler_type, teacher_optimizer, num_warmup_steps=warmup,
                                          num_training_steps=teacher_updates)
        components.update(teacher_optimizer=teacher_optimizer, teacher_scheduler=teacher_scheduler)
        teacher_step = make_teacher_step(args, runtime, teacher, student, student_optimizer, quiz_batches,
                                         teacher_optimizer, teacher_scheduler)
        teacher.train()
    else:
        teacher.eval().requires_grad_(False)
    if runtime.is_main:
        save_run_args(args, args.output_dir)

    def compute_loss(model, batch):
        if args.train_teacher:
            teacher_step(batch)
        with torch.no_grad():
            teacher_logits = teacher(**model_inputs(batch, teacher_accepted)).logits
        outputs = model(**model_inputs(batch, student_accepted), labels=batch["labels"])
        loss = lgtm_student_loss(outputs.logits, teacher_logits, outputs.loss, alpha_kd=args.alpha_kd,
                                 temperature=args.temperature)
        return loss, {"student_ce": outputs.loss.detach()}

    def evaluate(step):
        metrics, teacher_metrics = evaluate_model(student), evaluate_model(teacher)
        if args.train_teacher:
            teacher.train()
        logger.info("step %d: student %s, teacher %s", step, metrics, teacher_metrics)
        if metrics[task.main_metric] > best.value:
            best.value = metrics[task.main_metric]
            save_trained(student, tokenizer, args.output_dir, runtime)
            if runtime.is_main:
                write_json(Path(args.output_dir) / "eval_results.json", dict(metrics, step=step))
                write_json(Path(args.output_dir) / "teacher_eval_results.json", dict(teacher_metrics, step=step))
        return {**metrics, **{f"teacher_{name}": value for name, value in teacher_metrics.items()}}

    result = train(args, runtime, model=student, train_dataset=train_features, collate_fn=collate,
                   compute_loss=compute_loss, tokenizer=tokenizer, evaluate=evaluate if eval_sets else None,
                   extra_components=components, resume_from=resume, optimizer=student_optimizer)
    if eval_sets and result.global_step % args.eval_steps != 0:
        evaluate(result.global_step)
    elif not eval_sets:
        save_trained(student, tokenizer, args.output_dir, runtime, "student", result)


if __name__ == "__main__":
    main()
