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


def lgtm_student_loss(student_logits, teacher_logits, student_task_loss, *, alpha_kd, temperature):
    """The student's objective in KD, ProKT and LGTM (Ren et al., "Tailoring Instructions to
    Student's Learning Levels Boosts Knowledge Distillation", ACL 2023, section 3):

        L_S = alpha_kd * lgtm_kd(s, t.detach(), T) + (1 - alpha_kd) * CE_s

    ``student_logits`` s and ``teacher_logits`` t (B, C); ``student_task_loss`` CE_s, the
    student's cross-entropy on the labels (a scalar); ``temperature`` T. The teacher's logits are
    a target: no gradient reaches them.
    """
    distillation = lgtm_kd_loss(student_logits, teacher_logits.detach(), temperature)
    return alpha_kd * distillation + (1 - alpha_kd) * student_task_loss


def lgtm_teacher_loss(teacher_logits, student_logits, teacher_task_loss, *, t_alpha_kd, temperature):
    """The teacher's objective in ProKT and LGTM (Ren et al., ACL 2023, section 3):

        L_T = t_alpha_kd * lgtm_kd(t, s.detach(), T) + (1 - t_alpha_kd) * CE_t

    ``teacher_logits`` t and ``student_logits`` s (B, C); ``teacher_task_loss`` CE_t, the
    teacher's cross-entropy on the labels; ``temperature`` T. The student's logits are a target:
    no gradient reaches them.
    """
    distillation = lgtm_kd_loss(teacher_logits, student_logits.detach(), temperature)
    return t_alpha_kd * distillation + (1 - t_alpha_kd) * teacher_task_loss
