"""One-to-one mapping distillation (Saadi et al., "Learn From One Specialized Sub-Teacher:
One-to-One Mapping for Feature-Based Knowledge Distillation", Findings of EMNLP 2023): everything
its three scripts (GLUE, IMDB, SQuAD) run besides the shared loop.

The loss options with each script's released defaults, the checks that a student and a teacher
can be compared, and for each kind of model (sequence classifiers for GLUE and IMDB, span
predictors for SQuAD) loading the teacher, its targets for the training set (the frozen teacher
itself or its ``TeacherCache``) and the loss of one training batch (``compute_loss`` of
``utils.engine.loop.train``)."""

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from losses import OneToOneLoss
from utils.engine.cli import add_flag, bounded
from utils.engine.errors import UserError
from utils.engine.features import model_inputs
from utils.engine.models import (
    forward_arguments,
    hidden_width,
    label_permutation,
    load_classifier,
    load_tokenizer,
    num_layers,
    same_vocabulary,
)
from utils.methods.teacher import TeacherOutputs, load_teacher
from utils.methods.teacher_cache import TeacherCache, with_example_index
from utils.tasks.squad import span_logits, span_loss

logger = logging.getLogger(__name__)


def add_distillation_args(parser, task_weight_name, *, alpha_ce=0.5, alpha_corr=0.005, alpha_mse=0.5, alpha_cos=0.5,
                          classifiers=True):
    """The loss options of the one-to-one scripts; pass each script's released defaults
    (the GLUE script's are the keyword defaults here). ``classifiers``: the options of the
    sequence classifiers' scripts too (PKD's)."""
    group = parser.add_argument_group("distillation loss")
    weight = bounded(float, at_least=0)
    group.add_argument(f"--{task_weight_name}", type=weight, default=0.5, help="weight of the task loss")
    group.add_argument("--alpha_ce", type=weight, default=alpha_ce, help="weight of the logit KD loss")
    group.add_argument("--alpha_corr", type=weight, default=alpha_corr, help="weight of the cross-correlation loss")
    group.add_argument("--alpha_mse", type=weight, default=alpha_mse, help="weight of the hidden-state MSE loss")
    group.add_argument("--alpha_cos", type=weight, default=alpha_cos, help="weight of the hidden-state cosine loss")
    group.add_argument("--temperature", type=bounded(float, above=0), default=2.0, help="softmax temperature of the KD loss")
    add_flag(group, "--do_mask", help="add the specialised sub-teacher term (a random half of the features)")
    group.add_argument("--mask_prob", type=bounded(float, at_least=0, below=1), default=0.5, help="probability of dropping a feature column")
    group.add_argument("--off_diagonal_weight", type=bounded(float, at_least=0), default=5e-3, help="lambda of the off-diagonal term")
    group.add_argument("--corr_normalizer", choices=["elements", "tokens"], default="elements",
                       help="divide the correlation by N*d as released (elements) or by N (tokens)")
    if classifiers:
        group.add_argument("--alpha_pkd", type=weight, default=0.0,
                           help="PKD's beta: weight of the patient loss on the [CLS] states of mapped layers")
        group.add_argument("--pkd_layers", choices=["skip", "last"], default="skip",
                           help="PKD-Skip (a 6-layer student's layers 1-5 from a 12-layer teacher's 2,4,6,8,10) or "
                                "PKD-Last (from its 7-11)")
        group.add_argument("--pkd_teacher_layers", default=None,
                           help="the teacher layers of student layers 1, 2, ... explicitly, e.g. 2,4,6,8,10 "
                                "(instead of --pkd_layers)")
    add_flag(group, "--omit_teacher_token_type_ids",
             help="give the teacher no token_type_ids, as the released script did (degrades pair tasks)")
    add_flag(group, "--feed_student_ids_to_teacher",
             help="give the teacher the student's token ids even when their vocabularies differ, as the "
                  "released script did (the teacher then reads other tokens than the student)")
    return group


def loss_from_args(args, task_weight_name):
    """The ``OneToOneLoss`` of the options ``add_distillation_args`` added (the task loss's weight
    under ``--<task_weight_name>``), checked."""
    alpha_task, alpha_pkd = getattr(args, task_weight_name), getattr(args, "alpha_pkd", 0.0)
    weights = [alpha_task, args.alpha_ce, args.alpha_corr, args.alpha_mse, args.alpha_cos, alpha_pkd]
    if not any(weight > 0 for weight in weights):
        raise UserError("all loss weights are zero: set at least one of the task weight, --alpha_ce, "
                        "--alpha_corr, --alpha_mse, --alpha_cos" + (", --alpha_pkd" if hasattr(args, "alpha_pkd") else "")
                        + " above 0")
    return OneToOneLoss(alpha_task=alpha_task, alpha_ce=args.alpha_ce, alpha_corr=args.alpha_corr,
                        alpha_mse=args.alpha_mse, alpha_cos=args.alpha_cos, alpha_pkd=alpha_pkd,
                        temperature=args.temperature,
                        do_mask=args.do_mask, mask_prob=args.mask_prob,
                        off_diagonal_weight=args.off_diagonal_weight, normalizer=args.corr_normalizer)


class _GatherRows(torch.autograd.Function):
    """All-gather of equally shaped tensors whose backward hands each process the sum of every
    process's gradient for its own part (an all-reduce, which every backend has)."""

    @staticmethod
    def forward(ctx, part):
        ctx.rank, ctx.world_size = dist.get_rank(), dist.get_world_size()
        parts = [torch.empty_like(part) for _ in range(ctx.world_size)]
        dist.all_gather(parts, part.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        size = grad.shape[0] // ctx.world_size
        return grad[ctx.rank * size:(ctx.rank + 1) * size]


class AcrossProcesses:
    """``OneToOneLoss.processes`` for a data-parallel run (torchrun).

    Each process holds the token rows of its share of the global batch. ``gather_rows`` returns
    the rows of all processes in rank order, each process's padded to the largest count for the
    collective and cut back after. Every process then computes the same loss on the global batch;
    the backward gives each process's rows the sum over processes of that loss's gradient, i.e.
    ``world_size`` times its own, which the data-parallel average of parameter gradients divides
    back: the parameters get the gradient of the single-process loss on the global batch."""

    def gather_rows(self, rows):
        count = torch.tensor([rows.shape[0]], device=rows.device)
        counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
        dist.all_gather(counts, count)
        counts = [int(c) for c in counts]
        most = max(counts)
        padded = torch.nn.functional.pad(rows, (0, 0, 0, most - rows.shape[0]))
        every = _GatherRows.apply(padded)
        return torch.cat([every[rank * most:rank * most + n] for rank, n in enumerate(counts)])

    def same_as_first(self, tensor):
        copy = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor.clone()
        dist.broadcast(copy, src=0)
        return copy.bool() if tensor.dtype == torch.bool else copy


def across_processes(loss_fn, runtime):
    """``loss_fn`` with the global batch's correlation terms under torchrun (``AcrossProcesses``),
    unchanged in a single process."""
    return dataclasses.replace(loss_fn, processes=AcrossProcesses()) if runtime.distributed else loss_fn


def teacher_arguments(teacher, args):
    """The inputs the frozen teacher reads: its forward's, without ``token_type_ids`` under
    ``--omit_teacher_token_type_ids`` (the released script's omission)."""
    return forward_arguments(teacher) - ({"token_type_ids"} if args.omit_teacher_token_type_ids else set())


def check_pair(args, loss_fn, student, teacher, student_tokenizer, teacher_tokenizer, student_name, teacher_name):
    """Refuse a teacher/student pair the feature losses cannot compare; return whether the
    teacher needs its own tokenisation (different vocabulary, logit losses only)."""
    if args.feed_student_ids_to_teacher and len(student_tokenizer) > teacher.config.vocab_size:
        raise UserError(f"--feed_student_ids_to_teacher: the student's vocabulary ({len(student_tokenizer)} tokens) "
                        f"is larger than the teacher's embedding table ({teacher.config.vocab_size})")
    shares_tokens = args.feed_student_ids_to_teacher or same_vocabulary(student_tokenizer, teacher_tokenizer)
    if loss_fn.uses_features and not shares_tokens:
        raise UserError(
            f"the student {student_name} and the teacher {teacher_name} "
            "tokenise differently (vocabulary or casing), so their hidden states cannot be compared token by "
            "token for --alpha_corr/--alpha_mse/--alpha_cos: use a student with the teacher's tokenizer (for "
            "an uncased BERT teacher: distilbert-base-uncased), or set those weights to 0 (or pass "
            "--feed_student_ids_to_teacher to reproduce the released script)")
    if (loss_fn.uses_features or loss_fn.uses_patience) and hidden_width(student) != hidden_width(teacher):
        raise UserError(f"the student's hidden width ({hidden_width(student)}) differs from the teacher's "
                        f"({hidden_width(teacher)}); the feature losses need equal widths")
    return not shares_tokens


def patient_layers(args, student, teacher):
    """PKD's layer map, ``((student layer j, teacher layer I(j)), ...)`` for j = 1 .. k - 1 of a
    k-layer student (its last layer is distilled through the logits), from an n-layer teacher:

        skip  I(j) = j * (n // k)       (6 from 12 layers: 2, 4, 6, 8, 10)
        last  I(j) = n - k + j          (6 from 12 layers: 7, 8, 9, 10, 11)

    or ``--pkd_teacher_layers`` (I(1), I(2), ... given, up to k - 1 of them, each in 1 .. n).
    Layer j is the output of the j-th transformer layer (``hidden_states[j]``)."""
    k, n = num_layers(student), num_layers(teacher)
    if args.pkd_teacher_layers:
        try:
            mapped = [int(layer) for layer in args.pkd_teacher_layers.split(",")]
        except ValueError:
            raise UserError(f"--pkd_teacher_layers {args.pkd_teacher_layers}: expected teacher layer numbers "
                            "separated by commas, e.g. 2,4,6,8,10") from None
        if not 1 <= len(mapped) <= k - 1 or not all(1 <= layer <= n for layer in mapped):
            raise UserError(f"--pkd_teacher_layers {args.pkd_teacher_layers}: the {k}-layer student maps at most "
                            f"{k - 1} layers (its last is distilled through the logits), each to a teacher layer "
                            f"between 1 and {n}")
    elif k < 2 or n < k:
        raise UserError(f"--alpha_pkd: PKD maps the student's layers 1 .. k-1 into a teacher at least as deep; "
                        f"the student has {k} layers and the teacher {n}")
    elif args.pkd_layers == "skip":
        mapped = [j * (n // k) for j in range(1, k)]
    else:
        mapped = [n - k + j for j in range(1, k)]
    return tuple(zip(range(1, len(mapped) + 1), mapped))


def cls_states(hidden_states, layers):
    """``(B, M, d)``: the first-token ([CLS]) vectors of ``hidden_states`` (a model's
    ``output_hidden_states``) at ``layers``."""
    return torch.stack([hidden_states[layer][:, 0] for layer in layers], dim=1)


@dataclass
class StudentAndTeacher:
    """A student classifier, its frozen teacher, and the tokenizers that feed them."""

    student: Any
    teacher: Any
    tokenizer: Any  # the student's; the teacher reads the same ids unless teacher_tokenizer is set
    teacher_tokenizer: Any = None  # the teacher's own, when it tokenises differently (logit KD only)
    patient_layers: tuple = ()  # PKD's ((student layer, teacher layer), ...), when the loss has the term

    @property
    def pad_token_ids(self):
        """``PadCollator``'s pad ids: the student's (prefix "") and a teacher's own ("teacher_")."""
        pad_ids = {"": self.tokenizer.pad_token_id}
        if self.teacher_tokenizer is not None:
            pad_ids["teacher_"] = self.teacher_tokenizer.pad_token_id
        return pad_ids


def load_student_and_teacher(args, task, loss_fn, device):
    """Load ``--student_model_name_or_path`` (with a new head for ``task`` when training) and the
    fine-tuned ``--teacher_name_or_path`` (frozen, in eval mode) on ``device``, with their
    tokenizers; refuse a pair that ``loss_fn`` cannot compare (``check_pair``)."""
    tokenizer = load_tokenizer(args.student_model_name_or_path, what="student", cache_dir=args.cache_dir,
                               do_lower_case=args.do_lower_case)
    teacher, teacher_tokenizer = load_teacher(
        args.teacher_name_or_path, task, cache_dir=args.cache_dir,
        untrained_head="allow" if args.allow_untrained_teacher_head else "refuse")
    student = load_classifier(args.student_model_name_or_path, task, what="student", cache_dir=args.cache_dir,
                              keep_head=not args.do_train)
    own_teacher_tokens = check_pair(args, loss_fn, student, teacher, tokenizer, teacher_tokenizer,
                                    args.student_model_name_or_path, args.teacher_name_or_path)
    layers = patient_layers(args, student, teacher) if loss_fn.uses_patience else ()
    teacher.to(device).eval().requires_grad_(False)
    student.to(device)
    return StudentAndTeacher(student, teacher, tokenizer, teacher_tokenizer if own_teacher_tokens else None, layers)


def classifier_teacher_outputs(pair, loss_fn, task, args):
    """``teacher_outputs(batch) -> TeacherOutputs`` of the frozen teacher, without gradients: it reads its own tokens when it has them and
    no ``token_type_ids`` with ``--omit_teacher_token_type_ids``; its logits are put in the task's
    label order; the hidden layer is returned when ``loss_fn`` has a feature term, the (B, M, d)
    [CLS] states of the teacher layers of ``pair.patient_layers`` when it has the PKD term."""
    teacher = pair.teacher
    needs_states = loss_fn.uses_features or loss_fn.uses_patience
    mapped = [teacher_layer for _, teacher_layer in pair.patient_layers]
    teacher_prefix = "teacher_" if pair.teacher_tokenizer is not None else ""
    teacher_accepted = teacher_arguments(teacher, args)
    teacher_order = label_permutation(teacher.config, task)

    @torch.no_grad()
    def teacher_outputs(batch):
        outputs = teacher(**model_inputs(batch, teacher_accepted, teacher_prefix), output_hidden_states=needs_states)
        logits = outputs.logits if teacher_order is None else outputs.logits[:, teacher_order]
        return TeacherOutputs(logits=logits, hidden=outputs.hidden_states[-1] if loss_fn.uses_features else None,
                              patience=cls_states(outputs.hidden_states, mapped) if loss_fn.uses_patience else None)

    return teacher_outputs


def classifier_teacher_targets(args, runtime, pair, loss_fn, task, train_features, collate_fn):
    """``(train_features, teacher_outputs)`` for ``classifier_distillation_loss``: the teacher
    itself, or with ``--cache_teacher`` (when the loss uses the teacher) a ``TeacherCache`` filled
    here and the features with their ``example_index``."""
    teacher_outputs = classifier_teacher_outputs(pair, loss_fn, task, args)
    if not (args.cache_teacher and loss_fn.uses_teacher):
        return train_features, teacher_outputs
    train_features = with_example_index(train_features)
    cache = TeacherCache.fill(args, runtime, pair.teacher, teacher_outputs, train_features, collate_fn,
                              num_logits=pair.teacher.config.num_labels,
                              hidden_width=hidden_width(pair.teacher) if loss_fn.uses_features else None,
                              patience_shape=(len(pair.patient_layers), hidden_width(pair.teacher))
                              if loss_fn.uses_patience else None)
    return train_features, cache


def classifier_distillation_loss(pair, loss_fn, teacher_outputs):
    """``compute_loss(student, batch) -> (loss, terms)`` for ``utils.engine.loop.train``.

    The student's forward gives the task loss, its logits, (when a feature loss is on) its last
    hidden layer and (with the PKD term) the [CLS] states of its layers of
    ``pair.patient_layers``; ``teacher_outputs(batch)`` (``classifier_teacher_outputs`` or its
    ``TeacherCache``) the teacher's; ``loss_fn`` (a ``OneToOneLoss``) combines them.
    """
    student_accepted = forward_arguments(pair.student)
    mapped = [student_layer for student_layer, _ in pair.patient_layers]

    def compute_loss(model, batch):
        outputs = model(**model_inputs(batch, student_accepted), labels=batch["labels"],
                          output_hidden_states=loss_fn.uses_features or loss_fn.uses_patience)
        teacher = teacher_outputs(batch) if loss_fn.uses_teacher else TeacherOutputs(logits=None)
        return loss_fn(task_loss=outputs.loss, student_logits=outputs.logits, teacher_logits=teacher.logits,
                    student_hidden=outputs.hidden_states[-1] if loss_fn.uses_features else None,
                    teacher_hidden=teacher.hidden, attention_mask=batch["attention_mask"],
                    student_patience=cls_states(outputs.hidden_states, mapped) if loss_fn.uses_patience else None,
                    teacher_patience=teacher.patience)

    return compute_loss


# --------------------------------------------------------------------------- span predictors (SQuAD)


def load_span_teacher(args, loss_fn, student, tokenizer, device):
    """The frozen SQuAD teacher ``--teacher_name_or_path`` on ``device``, checked against the
    student; None when no term of ``loss_fn`` uses it (or nothing is trained)."""
    if not (args.do_train and loss_fn.uses_teacher):
        return None
    if not args.teacher_name_or_path:
        raise UserError("--teacher_name_or_path is needed: --alpha_ce, --alpha_corr, --alpha_mse or --alpha_cos "
                        "is above 0")
    teacher, teacher_tokenizer = load_teacher(args.teacher_name_or_path, cache_dir=args.cache_dir)
    if check_pair(args, loss_fn, student, teacher, tokenizer, teacher_tokenizer, args.model_name_or_path,
                  args.teacher_name_or_path):
        raise UserError(f"the student {args.model_name_or_path} and the teacher {args.teacher_name_or_path} "
                        "tokenise differently; SQuAD's start and end logits are compared token by token over "
                        "shared windows, so --alpha_ce needs the same tokenizer too: use a student with the "
                        "teacher's tokenizer (for an uncased BERT teacher: distilbert-base-uncased)")
    return teacher.to(device).eval().requires_grad_(False)


def span_teacher_outputs(teacher, args, uses_features):
    """``teacher_outputs(batch) -> TeacherOutputs`` of the frozen teacher, without gradients:
    ``logits`` (B, T, 2), its start and end logits stacked on the last dimension, unmasked
    (``teacher_span_logits`` masks them), from the student's windows with their ``token_type_ids``
    (none with ``--omit_teacher_token_type_ids``); the hidden layer when ``uses_features``."""
    accepted = teacher_arguments(teacher, args)

    @torch.no_grad()
    def teacher_outputs(batch):
        outputs = teacher(**model_inputs(batch, accepted), output_hidden_states=uses_features)
        logits = torch.stack([outputs.start_logits, outputs.end_logits], dim=-1)
        return TeacherOutputs(logits=logits, hidden=outputs.hidden_states[-1] if uses_features else None)

    return teacher_outputs


def span_teacher_targets(args, runtime, teacher, loss_fn, train_features, collate_fn):
    """``(train_features, teacher_outputs)`` for ``span_distillation_loss``: the teacher itself
    (``span_teacher_outputs``), or with ``--cache_teacher`` a ``TeacherCache`` filled here (logits
    at the positions the span loss reads) and the features with their ``example_index``."""
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


def span_distillation_loss(student, loss_fn, teacher_outputs, released_padding):
    """``compute_loss(student, batch) -> (loss, terms)`` for ``utils.engine.loop.train`` on SQuAD windows.

    The student's start and end logits (masked by ``span_logits``; ``released_padding`` with
    ``--pad_to_max_length``) give the span loss; ``teacher_outputs(batch)``
    (``span_teacher_outputs``, its ``TeacherCache``, or None when no term uses the teacher) the
    teacher's logits and hidden layer; ``loss_fn`` (a ``OneToOneLoss``) combines them, the KD term
    over the start and the end logits.
    """
    student_accepted = forward_arguments(student)

    def compute_loss(model, batch):
        outputs = model(**model_inputs(batch, student_accepted), output_hidden_states=loss_fn.uses_features)
        student_logits = span_logits(outputs, batch, released_padding)
        teacher_logits = teacher_hidden = None
        if teacher_outputs is not None:
            teacher = teacher_outputs(batch)
            teacher_logits, teacher_hidden = teacher_span_logits(teacher.logits, batch, released_padding), teacher.hidden
        return loss_fn(task_loss=span_loss(*student_logits, batch), student_logits=student_logits,
                    teacher_logits=teacher_logits, teacher_hidden=teacher_hidden,
                    student_hidden=outputs.hidden_states[-1] if loss_fn.uses_features else None,
                    attention_mask=batch["attention_mask"])

    return compute_loss
