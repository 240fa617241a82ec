"""The teacher every method distils from: one option that names it, one loader.

The papers' scripts spell the option three ways (``--teacher_model_name_or_path`` for GLUE and
IMDB, ``--teacher_name_or_path`` for SQuAD, ``--teacher_model`` for LGTM); every script takes
``--teacher_name_or_path`` and keeps its released spelling as an alias, so the papers' commands
run as written and every run records the teacher under one name.
"""

import logging
from typing import NamedTuple

import torch

from utils.engine.cli import add_flag
from utils.engine.errors import UserError
from utils.engine.models import (
    is_sequence_classifier,
    load_classifier,
    load_config,
    load_question_answerer,
    load_tokenizer,
)

logger = logging.getLogger(__name__)


class TeacherOutputs(NamedTuple):
    """What the frozen teacher (or its ``TeacherCache``) gives a one-to-one distillation step for
    one batch, float32 on the batch's device; read by name."""

    logits: torch.Tensor  # (B, C); SQuAD's start and end logits per token (B, T, 2)
    hidden: torch.Tensor | None = None  # (B, T, d) last hidden layer, when a feature loss reads it
    patience: torch.Tensor | None = None  # (B, M, d) [CLS] states of PKD's mapped layers, with that term


def add_teacher_args(group, released_name=None, *, classifier=True, required=False, help="the fine-tuned teacher"):
    """``--teacher_name_or_path`` (and ``released_name``, the released script's spelling, as an
    alias); for sequence classifiers also ``--allow_untrained_teacher_head``."""
    names = ["--teacher_name_or_path"] + ([released_name] if released_name else [])
    group.add_argument(*names, dest="teacher_name_or_path", default=None, required=required, help=help)
    if classifier:
        add_flag(group, "--allow_untrained_teacher_head",
                 help="distil from a teacher saved without a trained classification head (refused otherwise: "
                      "its logits are random)")


def keeps_head(config, name, untrained_head):
    """Whether the teacher ``name`` (its ``config``) is loaded with its saved classification head.

    A checkpoint saved as a sequence classifier keeps it. One saved as something else (a
    pre-trained encoder: its head would be random) is refused when ``untrained_head`` is
    ``"refuse"``, gets a new head with a warning when it is ``"allow"``
    (``--allow_untrained_teacher_head``) or ``"train"`` (ProKT and LGTM train the teacher). A
    config that does not say what it was saved as keeps its head, with a warning, unless the
    teacher is trained (then it gets a new one)."""
    if is_sequence_classifier(config):
        return True
    if not config.architectures and untrained_head != "train":
        logger.warning("the teacher %s does not say what it was saved as (no architectures in its config): make "
                       "sure it was fine-tuned on the task", name)
        return True
    saved_as = ", ".join(config.architectures or ["no architecture"])
    if untrained_head == "refuse":
        raise UserError(f"the teacher {name} was saved without a trained classification head ({saved_as}), so a "
                        "frozen teacher's logits would be random: distil from a teacher fine-tuned on the task "
                        "(run_glue.py; run_imdb.py for IMDB), or pass --allow_untrained_teacher_head")
    if untrained_head == "train":
        logger.warning("the teacher %s has no trained classification head (saved as %s): it trains a new one",
                       name, saved_as)
    else:
        logger.warning("distilling from a teacher with a random classification head (%s, saved as %s)", name,
                       saved_as)
    return False


def load_teacher(name_or_path, task=None, *, cache_dir=None, untrained_head="refuse"):
    """``(teacher, teacher_tokenizer)``: the teacher ``name_or_path`` (a hub name or a saved
    folder) and its own tokenizer. With a ``task`` a sequence classifier for it (its head as
    ``keeps_head`` decides, a kept head with the task's label count); without, a fine-tuned
    question-answering model (SQuAD)."""
    tokenizer = load_tokenizer(name_or_path, what="teacher", cache_dir=cache_dir)
    if task is None:
        return load_question_answerer(name_or_path, what="teacher", cache_dir=cache_dir, keep_head=True), tokenizer
    config = load_config(name_or_path, what="teacher", cache_dir=cache_dir)
    keep_head = keeps_head(config, name_or_path, untrained_head)
    if keep_head and config.num_labels != task.num_labels:
        raise UserError(f"the teacher {name_or_path} has {config.num_labels} output label(s) but task {task.name} "
                        f"has {task.num_labels}: pass a teacher fine-tuned on {task.name}"
                        + (", or a pre-trained one without a classification head" if untrained_head == "train"
                           else ""))
    return load_classifier(name_or_path, task, what="teacher", cache_dir=cache_dir, keep_head=keep_head), tokenizer
