"""The full objective of one-to-one mapping distillation (Saadi et al., "Learn From One
Specialized Sub-Teacher: One-to-One Mapping for Feature-Based Knowledge Distillation",
Findings of EMNLP 2023)."""

from dataclasses import dataclass
from typing import Any

from losses.features import (
    cross_correlation_loss,
    hidden_cosine_loss,
    hidden_mse_loss,
    patient_loss,
    sub_teacher_mask,
    token_rows,
)
from losses.logits import kd_loss


@dataclass(frozen=True)
class OneToOneLoss:
    """Weighted sum of the task loss, logit KD, the feature losses on the last hidden layer and
    PKD's patient term on the [CLS] states of mapped layers.

    ``loss = alpha_task * L_task + alpha_ce * KD + alpha_corr * (L_corr + L_corr[sub-teacher])
    + alpha_cos * L_cos + alpha_mse * L_mse + alpha_pkd * L_PT``, where the sub-teacher term is
    present only with ``do_mask`` and, as released, ``L_mse`` is taken on the sub-teacher's
    columns when ``do_mask`` is on. ``L_PT`` is ``patient_loss`` (PKD's beta is ``alpha_pkd``;
    with ``alpha_ce`` as its alpha and ``alpha_task = 1 - alpha``, this is PKD's objective).
    """

    alpha_task: float = 0.5
    alpha_ce: float = 0.0
    alpha_corr: float = 0.0
    alpha_mse: float = 0.0
    alpha_cos: float = 0.0
    alpha_pkd: float = 0.0
    temperature: float = 2.0
    do_mask: bool = False
    mask_prob: float = 0.5
    off_diagonal_weight: float = 5e-3
    normalizer: str = "elements"
    # None (one process), or the processes of a data-parallel run: ``gather_rows(rows)`` (the
    # rows of every process, gradients flowing back to each one's own) and ``same_as_first(t)``
    # (the first process's ``t``), so that the correlation terms and the sub-teacher see the
    # whole global batch, as one process would (utils.methods.one_to_one.AcrossProcesses)
    processes: Any = None

    @property
    def uses_features(self):
        """Whether any term compares hidden states (and so needs the same tokens and width)."""
        return self.alpha_corr > 0 or self.alpha_mse > 0 or self.alpha_cos > 0

    @property
    def uses_patience(self):
        """Whether the PKD term compares the [CLS] states of mapped layers."""
        return self.alpha_pkd > 0

    @property
    def uses_teacher(self):
        return self.alpha_ce > 0 or self.uses_features or self.uses_patience

    def __call__(self, *, task_loss, student_logits, teacher_logits=None, student_hidden=None, teacher_hidden=None,
                 attention_mask=None, student_patience=None, teacher_patience=None):
        """Return ``(loss, terms)``; ``terms`` maps each active term's name to its detached value.
        Every argument is given by name; a term's inputs may be None when its weight is 0.

        ``student_logits``/``teacher_logits`` are tensors or tuples of tensors (SQuAD's start and
        end logits; their KD terms are averaged). ``*_hidden`` are (B, T, d); only the rows where
        ``attention_mask == 1`` enter the feature losses. The teacher's outputs are detached:
        gradients reach the student only. ``*_patience`` are the (B, M, d) [CLS] states of the
        mapped layers, read by the PKD term.
        """
        teacher_logits = tuple(t.detach() for t in _as_tuple(teacher_logits)) if teacher_logits is not None else None
        teacher_hidden = teacher_hidden.detach() if teacher_hidden is not None else None
        terms = {"task": task_loss}
        loss = self.alpha_task * task_loss
        if self.alpha_ce > 0:
            pairs = list(zip(_as_tuple(student_logits), teacher_logits))
            terms["ce"] = sum(kd_loss(s, t, self.temperature) for s, t in pairs) / len(pairs)
            loss = loss + self.alpha_ce * terms["ce"]
        if self.uses_features:
            student_rows = token_rows(student_hidden, attention_mask)
            teacher_rows = token_rows(teacher_hidden, attention_mask)
            keep = None
            if self.do_mask and (self.alpha_corr > 0 or self.alpha_mse > 0):
                keep = sub_teacher_mask(student_rows.shape[-1], self.mask_prob, device=student_rows.device)
                keep = keep if self.processes is None else self.processes.same_as_first(keep)
            if self.alpha_corr > 0:
                correlation = dict(off_diagonal_weight=self.off_diagonal_weight, normalizer=self.normalizer)
                # standardised over the global batch's rows: the per-process statistics differ
                every_student, every_teacher = student_rows, teacher_rows
                if self.processes is not None:
                    every_student = self.processes.gather_rows(student_rows)
                    every_teacher = self.processes.gather_rows(teacher_rows)
                terms["corr"] = cross_correlation_loss(every_student, every_teacher, **correlation)
                loss = loss + self.alpha_corr * terms["corr"]
                if keep is not None:
                    terms["corr_sub_teacher"] = cross_correlation_loss(
                        every_student, every_teacher, dims=keep, **correlation)
                    loss = loss + self.alpha_corr * terms["corr_sub_teacher"]
            if self.alpha_mse > 0:
                if keep is None:
                    terms["mse"] = hidden_mse_loss(student_rows, teacher_rows)
                else:
                    terms["mse"] = hidden_mse_loss(student_rows[:, keep], teacher_rows[:, keep])
                loss = loss + self.alpha_mse * terms["mse"]
            if self.alpha_cos > 0:
                terms["cos"] = hidden_cosine_loss(student_rows, teacher_rows)
                loss = loss + self.alpha_cos * terms["cos"]
        if self.uses_patience:
            terms["pkd"] = patient_loss(student_patience, teacher_patience.detach())
            loss = loss + self.alpha_pkd * terms["pkd"]
        return loss, {name: value.detach() for name, value in terms.items()}


def _as_tuple(logits):
    return tuple(logits) if isinstance(logits, (tuple, list)) else (logits,)
