"""The released code's pipeline choices, the baseline ("reference") of the benchmarks; the only
training steps written in ``benchmarks/``.

As the two papers' released code runs them: every batch padded to 128 tokens and drawn at random
(no length grouping), float32 throughout, the token rows of the hidden states taken with
``masked_select``, the frozen teacher run on every step, plain (not fused) AdamW after clipping
to 1.0 (the released scripts' default ``--max_grad_norm``, as ours), and the LGTM
teacher gradient computed with a deep copy of the student per step
(``released_lgtm_teacher_grads``).

Only the choices that cost time or memory are reproduced; the numbers computed are the ones the
project computes (tests/test_lgtm.py checks ``released_lgtm_teacher_grads`` against
``utils.methods.lgtm.lgtm_teacher_grads``). Each step takes a ``mark(phase)`` callable, called when a
phase of the step ends (the benchmarks' timers).
"""

import copy

import torch

from losses import lgtm_student_loss, lgtm_teacher_loss
from utils.engine.features import PadCollator, model_inputs
from utils.engine.models import forward_arguments
from utils.methods.lgtm import model_outputs

MAX_SEQ_LENGTH = 128


def reference_collator(pad_token_id, max_length=MAX_SEQ_LENGTH):
    """Every batch padded to ``max_length`` (the released ``--pad_to_max_length`` behaviour)."""
    return PadCollator({"": pad_token_id}, max_length, pad_to_max_length=True)


def reference_optimizer(parameters, lr):
    """AdamW as the released scripts build it: no weight decay here, not fused."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)


def released_lgtm_teacher_grads(teacher, student, batch, quiz_batch, student_optimizer, *,
                                alpha_kd, t_alpha_kd, temperature, teacher_lr, r=0.01):
    """``utils.methods.lgtm.lgtm_teacher_grads`` the way the released code computes it: a deep copy of
    the student (and its optimizer) takes a real AdamW step for the look-ahead, and the influence
    is the difference of two full teacher gradients, the student's parameters moved in place to
    theta + eps v, then theta - eps v, then back (up to rounding, as released)."""
    teacher_was_training, student_was_training = teacher.training, student.training
    teacher_out, student_out = model_outputs(teacher, batch), model_outputs(student, batch)
    student_grads = torch.autograd.grad(
        lgtm_student_loss(student_out.logits, teacher_out.logits, student_out.loss,
                          alpha_kd=alpha_kd, temperature=temperature),
        list(student.parameters()))
    lookahead_student, lookahead_optimizer = copy.deepcopy((student, student_optimizer))
    for param, grad in zip(lookahead_student.parameters(), student_grads):
        param.grad = grad
    lookahead_optimizer.step()
    lookahead_student.zero_grad()
    teacher_grads = torch.autograd.grad(
        lgtm_teacher_loss(teacher_out.logits, student_out.logits, teacher_out.loss,
                          t_alpha_kd=t_alpha_kd, temperature=temperature),
        list(teacher.parameters()))

    lookahead_student.train()
    model_outputs(lookahead_student, quiz_batch).loss.backward()
    direction = [param.grad for param in lookahead_student.parameters()]
    eps = r / torch.cat([v.flatten() for v in direction]).norm()

    teacher.eval()
    student.eval()
    teacher_grads_at = {}
    for sign in (1, -2):
        with torch.no_grad():
            for param, v in zip(student.parameters(), direction):
                param.add_(sign * eps * v)
        teacher_out, student_out = model_outputs(teacher, batch), model_outputs(student, batch)
        teacher_grads_at[sign] = torch.autograd.grad(
            lgtm_teacher_loss(teacher_out.logits, student_out.logits, teacher_out.loss,
                              t_alpha_kd=t_alpha_kd, temperature=temperature),
            list(teacher.parameters()))
    with torch.no_grad():
        for param, v in zip(student.parameters(), direction):
            param.add_(eps * v)
    teacher.train(teacher_was_training)
    student.train(student_was_training)
    return [g - teacher_lr * (plus - minus) / (2 * eps)
            for g, plus, minus in zip(teacher_grads, teacher_grads_at[1], teacher_grads_at[-2])]


def masked_select_rows(hidden, attention_mask):
    """The token rows of ``hidden`` (B, T, d) at real tokens, the released way: a (B, T, d) mask
    expanded from the attention mask, ``masked_select`` to a flat vector, then a view (N, d)."""
    width = hidden.size(-1)
    mask = attention_mask.unsqueeze(-1).expand_as(hidden).bool()
    return torch.masked_select(hidden, mask).view(-1, width)


def _off_diagonal(matrix):
    """The off-diagonal entries of a square matrix, flattened (the Barlow Twins trick)."""
    n = matrix.shape[0]
    return matrix.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def released_correlation_loss(z_s, z_t, denominator, lambd=5e-3):
    """``sum_i (C_ii - 1)^2 + lambd sum_{i != j} C_ij^2``, ``C = zn_s^T zn_t / denominator``,
    columns standardised with ``std`` (Bessel, no epsilon), as released."""
    zn_s = (z_s - z_s.mean(0)) / z_s.std(0)
    zn_t = (z_t - z_t.mean(0)) / z_t.std(0)
    correlation = torch.mm(zn_s.T, zn_t) / denominator
    on_diagonal = torch.diagonal(correlation).add(-1).pow(2).sum()
    off_diagonal = _off_diagonal(correlation).pow(2).sum()
    return on_diagonal + lambd * off_diagonal


def released_one_to_one_loss(task_loss, student_hidden, teacher_hidden, attention_mask, *,
                             alpha_task=0.5, alpha_corr=0.005, do_mask=True, mask_prob=0.5):
    """The README command's loss (alpha_ce = alpha_mse = alpha_cos = 0): ``alpha_task L_task +
    alpha_corr (L_corr + L_corr[sub-teacher])``, D = N * d (the number of selected elements)."""
    z_s = masked_select_rows(student_hidden, attention_mask)
    z_t = masked_select_rows(teacher_hidden, attention_mask)
    denominator = z_s.numel()
    loss = alpha_task * task_loss + alpha_corr * released_correlation_loss(z_s, z_t, denominator)
    if do_mask:
        keep = torch.bernoulli(torch.full((z_s.size(-1),), 1 - mask_prob)).bool().to(z_s.device)
        zn_s = (z_s - z_s.mean(0)) / z_s.std(0)
        zn_t = (z_t - z_t.mean(0)) / z_t.std(0)
        correlation = torch.mm(zn_s[:, keep].T, zn_t[:, keep]) / denominator
        on_diagonal = torch.diagonal(correlation).add(-1).pow(2).sum()
        off_diagonal = _off_diagonal(correlation).pow(2).sum() if correlation.numel() > 1 else correlation.sum() * 0
        loss = loss + alpha_corr * (on_diagonal + 5e-3 * off_diagonal)
    return loss


# --------------------------------------------------------------------------- steps


def _optimizer_step(model, optimizer, max_grad_norm, mark):
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    mark("optim")


def distillation_step(student, teacher, optimizer, batch, mark, *, max_grad_norm=1.0, **loss_options):
    """One one-to-one distillation step: the teacher's forward on the batch, the student's, the
    released loss (``released_one_to_one_loss``), backward, clipping, AdamW."""
    with torch.no_grad():
        teacher_outputs = teacher(**model_inputs(batch, forward_arguments(teacher)), output_hidden_states=True)
    mark("teacher")
    outputs = student(**model_inputs(batch, forward_arguments(student)), labels=batch["labels"],
                      output_hidden_states=True)
    released_one_to_one_loss(outputs.loss, outputs.hidden_states[-1], teacher_outputs.hidden_states[-1],
                             batch["attention_mask"], **loss_options).backward()
    mark("fwd+bwd")
    _optimizer_step(student, optimizer, max_grad_norm, mark)


def fine_tuning_step(model, optimizer, batch, mark, *, max_grad_norm=1.0):
    """One step of fine-tuning a classifier on its task loss."""
    model_outputs(model, batch).loss.backward()
    mark("fwd+bwd")
    _optimizer_step(model, optimizer, max_grad_norm, mark)


def student_update(teacher, student, optimizer, batch, mark, *, alpha_kd, temperature, max_grad_norm=1.0):
    """The KD, ProKT and LGTM student step: L_S against the teacher's logits (no grad)."""
    student.train()
    with torch.no_grad():
        teacher_logits = model_outputs(teacher, batch).logits
    mark("teacher")
    outputs = model_outputs(student, batch)
    lgtm_student_loss(outputs.logits, teacher_logits, outputs.loss, alpha_kd=alpha_kd,
                      temperature=temperature).backward()
    mark("fwd+bwd")
    _optimizer_step(student, optimizer, max_grad_norm, mark)


def prokt_teacher_update(teacher, student, optimizer, batch, mark, *, t_alpha_kd, temperature, max_grad_norm=1.0):
    """ProKT's teacher step: L_T against the student's logits (the student in eval mode, no grad)."""
    teacher.train()
    student.eval()
    with torch.no_grad():
        student_logits = model_outputs(student, batch).logits
    student.train()
    outputs = model_outputs(teacher, batch)
    lgtm_teacher_loss(outputs.logits, student_logits, outputs.loss, t_alpha_kd=t_alpha_kd,
                      temperature=temperature).backward()
    torch.nn.utils.clip_grad_norm_(teacher.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    mark("t-update")


def lgtm_teacher_update(teacher, student, teacher_optimizer, student_optimizer, batch, quiz_batch, mark, *,
                        alpha_kd, t_alpha_kd, temperature, max_grad_norm=1.0):
    """LGTM's teacher step on ``released_lgtm_teacher_grads`` (both models in train mode)."""
    teacher.train()
    student.train()
    grads = released_lgtm_teacher_grads(teacher, student, batch, quiz_batch, student_optimizer, alpha_kd=alpha_kd,
                                        t_alpha_kd=t_alpha_kd, temperature=temperature,
                                        teacher_lr=teacher_optimizer.param_groups[0]["lr"])
    for parameter, grad in zip(teacher.parameters(), grads):
        parameter.grad = grad
    del grads
    torch.nn.utils.clip_grad_norm_(teacher.parameters(), max_grad_norm)
    teacher_optimizer.step()
    teacher_optimizer.zero_grad(set_to_none=True)
    mark("t-update")
