"""Distillation losses of the two papers: the one-to-one mapping of Saadi et al. (2023) and KD,
ProKT and LGTM as Ren et al. (ACL 2023) train them.

Every function computes in float32 whatever the input dtype and works on any device.
"""

from losses.features import (
    cross_correlation_loss,
    hidden_cosine_loss,
    hidden_mse_loss,
    patient_loss,
    sub_teacher_mask,
    token_rows,
)
from losses.logits import kd_loss, lgtm_kd_loss, lgtm_student_loss, lgtm_teacher_loss
from losses.one_to_one import OneToOneLoss

__all__ = [
    "OneToOneLoss",
    "cross_correlation_loss",
    "hidden_cosine_loss",
    "hidden_mse_loss",
    "kd_loss",
    "lgtm_kd_loss",
    "lgtm_student_loss",
    "lgtm_teacher_loss",
    "patient_loss",
    "sub_teacher_mask",
    "token_rows",
]
