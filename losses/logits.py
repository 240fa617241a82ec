"""Logit distillation losses."""

import torch.nn.functional as F


def _kl_batchmean(student_logits, teacher_logits, temperature):
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="batchmean")


def kd_loss(student_logits, teacher_logits, temperature):
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, summed over classes, averaged over the batch."""
    return _kl_batchmean(student_logits, teacher_logits, temperature) * temperature**2


def lgtm_kd_loss(student_logits, teacher_logits, temperature):
    """LGTM's ``mean_batch sum_classes p_t (log p_t - log p_s)`` with ``p = softmax(logits / T)``
    (no ``T^2`` factor). Gradients flow into both arguments; detach the one that is a target."""
    return _kl_batchmean(student_logits, teacher_logits, temperature)
