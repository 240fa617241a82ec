"""The LGTM teacher gradient (REFERENCE.md section 2): the teacher learns from the
distillation influence of each training batch on the student's loss on a quiz batch.

Notation: theta the student's parameters, phi the teacher's, x the training batch, q the quiz
batch, s and t the student's and teacher's logits, T the temperature, B the batch size.
"""

import contextlib

import torch
import torch.nn.functional as F
from torch.func import functional_call

from losses import lgtm_kd_loss
from utils.models import forward_arguments

BATCH_PIECES = 2
PIECES_FROM_TOKENS = 1024  # smaller batches go through in one piece: there, calls cost more than memory


def lgtm_student_loss(student_logits, teacher_logits, student_task_loss, *, alpha_kd, temperature):
    """``alpha_kd * kd(s, t.detach(), T) + (1 - alpha_kd) * CE_s``."""
    distillation = lgtm_kd_loss(student_logits, teacher_logits.detach(), temperature)
    return alpha_kd * distillation + (1 - alpha_kd) * student_task_loss


def lgtm_teacher_loss(teacher_logits, student_logits, teacher_task_loss, *, t_alpha_kd, temperature):
    """``t_alpha_kd * kd(t, s.detach(), T) + (1 - t_alpha_kd) * CE_t``."""
    distillation = lgtm_kd_loss(teacher_logits, student_logits.detach(), temperature)
    return t_alpha_kd * distillation + (1 - t_alpha_kd) * teacher_task_loss


def forward(model, batch, parameters=None):
    """``model`` on the entries of ``batch`` its forward names (DistilBERT takes no
    token_type_ids; labels give the task loss); with ``parameters`` ({name: tensor}), evaluated
    functionally on them instead of the model's own."""
    accepted = forward_arguments(model)
    inputs = {key: value for key, value in batch.items() if key in accepted}
    if parameters is None:
        return model(**inputs)
    return functional_call(model, parameters, args=(), kwargs=inputs)


@contextlib.contextmanager
def modes_restored(*models):
    """Give back every submodule's train/eval flag as it was on entry."""
    flags = [(module, module.training) for model in models for module in model.modules()]
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def gradients_or_zeros(outputs, parameters, grad_outputs=None):
    """``d outputs / d p`` (a vector-Jacobian product with ``grad_outputs``) for every ``p``;
    zeros where ``p`` is frozen or unused. Frees the graph behind ``outputs``."""
    trainable = [p for p in parameters if p.requires_grad]
    grads = iter(torch.autograd.grad(outputs, trainable, grad_outputs, allow_unused=True,
                                     materialize_grads=True))
    return [next(grads) if p.requires_grad else torch.zeros_like(p) for p in parameters]


def adam_lookahead(params, grads, optimizer):
    """The parameters one ``torch.optim.AdamW`` (or ``Adam``) step of ``optimizer`` would give,
    without touching the optimizer, its state or ``params``:

        k = step + 1,  m = lerp(m, g, 1 - beta1),  v = beta2 v + (1 - beta2) g^2
        theta' = theta (1 - lr wd) - lr / (1 - beta1^k) * m / (sqrt(v) / sqrt(1 - beta2^k) + eps)

    (Adam without decoupled decay adds ``wd theta`` to ``g`` instead). Like ``optimizer.step``,
    a parameter whose grad is None, or that the optimizer does not hold, stays as it is.
    Returns detached tensors, one per parameter.
    """
    group_of = {p: group for group in optimizer.param_groups for p in group["params"]}
    return [
        p.detach() if g is None or p not in group_of
        else _adam_step(p.detach(), g, group_of[p], optimizer.state.get(p, {}))
        for p, g in zip(params, grads)
    ]


def _adam_step(param, grad, group, state):
    """One Adam(W) update of ``param`` from a copy of its ``state`` (see ``adam_lookahead``)."""
    if group["amsgrad"] or group["maximize"]:
        raise ValueError("the LGTM look-ahead supports Adam(W) without amsgrad and maximize")
    lr, weight_decay, eps = float(group["lr"]), group["weight_decay"], group["eps"]
    beta1, beta2 = (float(beta) for beta in group["betas"])
    if weight_decay != 0 and group["decoupled_weight_decay"]:
        param = param * (1 - lr * weight_decay)
    elif weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    if state:
        step = float(state["step"]) + 1
        exp_avg = state["exp_avg"].lerp(grad, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].mul(beta2).addcmul_(grad, grad, value=1 - beta2)
    else:
        step = 1.0
        exp_avg = torch.zeros_like(param).lerp_(grad, 1 - beta1)
        exp_avg_sq = torch.zeros_like(param).addcmul_(grad, grad, value=1 - beta2)
    step_size = lr / (1 - beta1**step)
    denominator = (exp_avg_sq.sqrt_() / (1 - beta2**step) ** 0.5).add_(eps)
    return torch.addcdiv(param, exp_avg, denominator, value=-step_size)


def finite_difference_influence(teacher, student, batch, direction, *, t_alpha_kd, temperature,
                                r=0.01):
    """Distillation influence ``h`` of ``batch`` along the student ``direction`` ({name: v}):

        h = (grad_phi L_T(x; theta + eps v) - grad_phi L_T(x; theta - eps v)) / (2 eps),
        eps = r / ||v||,

    both models in eval mode. Only the KD term of L_T depends on theta, and
    d kd(t, s, T) / dt = (softmax(t/T) - softmax(s/T)) / (T B), so the CE term cancels and

        h = J_t(phi)^T [t_alpha_kd (softmax(s_-/T) - softmax(s_+/T)) / (2 eps T B)],
        s_+- = s(theta +- eps v),

    computed with two student forwards without grad, one teacher forward and one
    vector-Jacobian product. Returns one tensor per ``teacher.parameters()``.
    """
    teacher_params = list(teacher.parameters())
    direction_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v)
                                                                 for v in direction.values()])))
    if direction_norm == 0:
        return [torch.zeros_like(p) for p in teacher_params]
    eps = r / direction_norm
    with modes_restored(teacher, student):
        teacher.eval()
        student.eval()
        plus, minus = (_perturbed_probabilities(student, batch, direction, sign * eps, temperature)
                       for sign in (1, -1))
        teacher_logits = forward(teacher, batch).logits
        logit_gradient = t_alpha_kd * (minus - plus) / (2 * eps * temperature * len(teacher_logits))
        return gradients_or_zeros(teacher_logits, teacher_params,
                                  logit_gradient.to(teacher_logits.dtype))


@torch.no_grad()
def _perturbed_probabilities(student, batch, direction, step, temperature):
    """``softmax(s(theta + step v) / T)``, in float32 or wider."""
    named_params = dict(student.named_parameters())
    perturbed = {name: torch.add(named_params[name], v, alpha=step) for name, v in direction.items()}
    logits = forward(student, batch, perturbed).logits
    return F.softmax(logits / temperature, dim=-1,
                     dtype=torch.promote_types(logits.dtype, torch.float32))


def lgtm_teacher_grads(teacher, student, batch, quiz_batch, student_optimizer, *,
                       alpha_kd, t_alpha_kd, temperature, teacher_lr, r=0.01):
    """The gradient LGTM gives the teacher optimizer, one tensor per ``teacher.parameters()``:

        1. g = grad_theta L_S(x);  theta' = one AdamW step of the student from its current state
        2. v = grad_theta' CE(student_theta'(q))           (student in train mode)
        3. g_T = grad_phi L_T(x; theta)                     (the same forwards as g)
        4. h = finite-difference influence of x along v    (``finite_difference_influence``)
        5. g_T - teacher_lr * h

    Steps 1 and 3 run in the modes the caller set. The student's parameters, grads and
    optimizer state, the teacher's grads and both models' modes are left as they were;
    the look-ahead student is evaluated functionally, without a copy of the model.
    """
    with modes_restored(teacher, student):
        trainable = {name: p for name, p in student.named_parameters() if p.requires_grad}
        teacher_grads, student_grads = _batch_gradients(
            teacher, student, batch, list(trainable.values()),
            alpha_kd=alpha_kd, t_alpha_kd=t_alpha_kd, temperature=temperature)
        lookahead = adam_lookahead(list(trainable.values()), student_grads, student_optimizer)
        del student_grads
        quiz_direction = _quiz_gradient(student, quiz_batch, dict(zip(trainable, lookahead)))
        del lookahead
    influence = finite_difference_influence(teacher, student, batch, quiz_direction,
                                            t_alpha_kd=t_alpha_kd, temperature=temperature, r=r)
    return [g.add_(h, alpha=-teacher_lr) for g, h in zip(teacher_grads, influence)]


def _batch_gradients(teacher, student, batch, student_params, *, alpha_kd, t_alpha_kd,
                     temperature):
    """``g_T = grad_phi L_T(x)`` (one tensor per teacher parameter, zeros where none) and
    ``g = grad_theta L_S(x)`` (None where unused), both from the same forwards of x.

    L_T sees the student's logits detached and L_S the teacher's, so one backward of
    ``L_T + L_S`` gives both gradients. Both losses are means over the batch, so their gradients
    are the sums over pieces of the batch of ``len(piece) / B`` times the piece's gradients: a
    batch of at least ``PIECES_FROM_TOKENS`` tokens goes through ``BATCH_PIECES`` pieces one by
    one, which keeps only one piece's activations of both models at a time.
    """
    teacher_params = list(teacher.parameters())
    count = BATCH_PIECES if batch["input_ids"].numel() >= PIECES_FROM_TOKENS else 1
    teacher_grads = student_grads = None
    for piece in _pieces(batch, count):
        weight = len(piece["input_ids"]) / len(batch["input_ids"])
        teacher_out, student_out = forward(teacher, piece), forward(student, piece)
        total = weight * (lgtm_teacher_loss(teacher_out.logits, student_out.logits, teacher_out.loss,
                                            t_alpha_kd=t_alpha_kd, temperature=temperature)
                          + lgtm_student_loss(student_out.logits, teacher_out.logits, student_out.loss,
                                              alpha_kd=alpha_kd, temperature=temperature))
        trainable_teacher = [p for p in teacher_params if p.requires_grad]
        grads = torch.autograd.grad(total, trainable_teacher + list(student_params), allow_unused=True)
        by_teacher_param = dict(zip(map(id, trainable_teacher), grads))
        piece_teacher_grads = [_or_zeros(by_teacher_param.get(id(p)), p) for p in teacher_params]
        piece_student_grads = grads[len(trainable_teacher):]
        teacher_grads = _accumulate(teacher_grads, piece_teacher_grads)
        student_grads = _accumulate(student_grads, piece_student_grads)
    return teacher_grads, student_grads


def _or_zeros(grad, parameter):
    return torch.zeros_like(parameter) if grad is None else grad


def _pieces(batch, count):
    """``batch`` split along its first dimension into ``count`` pieces (fewer if it is smaller)."""
    columns = zip(*(value.tensor_split(count) for value in batch.values()))
    return [dict(zip(batch, values)) for values in columns if len(values[0])]


def _accumulate(totals, grads):
    """``totals + grads`` in place, None staying None; ``grads`` when there are no totals yet."""
    if totals is None:
        return list(grads)
    return [None if total is None else total.add_(grad) for total, grad in zip(totals, grads)]


def _quiz_gradient(student, quiz_batch, lookahead):
    """``v = grad_theta' CE(student_theta'(q))``, the student in train mode, as {name: v}."""
    student.train()
    leaves = {name: theta.requires_grad_() for name, theta in lookahead.items()}
    quiz_loss = forward(student, quiz_batch, leaves).loss
    return dict(zip(leaves, gradients_or_zeros(quiz_loss, list(leaves.values()))))
