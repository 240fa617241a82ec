"""KD, ProKT and LGTM, a student trained online from a teacher (Ren et al., "Tailoring
Instructions to Student's Learning Levels Boosts Knowledge Distillation", ACL 2023).

What ``run_lgtm_glue.py`` runs besides the shared loop: the student's loss of one batch
(``online_student_loss``), the teacher's update on each micro-batch (``TeacherStep``, the
loop's ``micro_batch_hook``: ProKT's gradient, or LGTM's), the quiz batches LGTM draws, and the
LGTM teacher gradient itself (``lgtm_teacher_grads``): the teacher learns from the distillation
influence of each training batch on the student's loss on a quiz batch.

Notation: theta the student's parameters, phi the teacher's, x the training batch, q the quiz
batch, s and t the student's and teacher's logits, T the temperature, B the batch size.
"""

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.func import functional_call

from losses import lgtm_student_loss, lgtm_teacher_loss
from utils.engine.errors import UserError
from utils.engine.features import model_inputs
from utils.engine.loop import epoch_batches, example_lengths, make_scheduler, planned_hook_calls
from utils.engine.models import forward_arguments
from utils.engine.runtime import move_to_device

BATCH_PIECES = 2
PIECES_FROM_TOKENS = 1024  # smaller batches go through in one piece: there, calls cost more than memory


# --------------------------------------------------------------------------- KD, ProKT and LGTM training


def teacher_logits_of(teacher):
    """``teacher_logits(batch)``: the teacher's logits without gradient, in the mode the teacher
    is in (eval for KD's frozen teacher, train for the teacher ProKT and LGTM update)."""
    accepted = forward_arguments(teacher)

    @torch.no_grad()
    def teacher_logits(batch):
        return teacher(**model_inputs(batch, accepted)).logits

    return teacher_logits


def online_student_loss(student, teacher_logits, *, alpha_kd, temperature):
    """``compute_loss(model, batch) -> (L_S, {"student_ce": CE_s})`` for ``utils.engine.loop.train``:
    ``lgtm_student_loss`` of the student's forward (``model``, the wrapped ``student``) against
    ``teacher_logits(batch)`` (``teacher_logits_of``)."""
    student_accepted = forward_arguments(student)

    def compute_loss(model, batch):
        targets = teacher_logits(batch)
        outputs = model(**model_inputs(batch, student_accepted), labels=batch["labels"])
        loss = lgtm_student_loss(outputs.logits, targets, outputs.loss, alpha_kd=alpha_kd, temperature=temperature)
        return loss, {"student_ce": outputs.loss.detach()}

    return compute_loss


class QuizBatches:
    """The quiz batch of each LGTM teacher update: the quiz set cycled in a shuffled order per
    pass (seeded with ``seed``), a function of the number of updates so far (saved in
    checkpoints). With ``group_by_length`` the quiz batches are grouped by length like the
    training batches (``utils.engine.loop.epoch_batches``)."""

    def __init__(self, features, collate_fn, *, batch_size, seed, group_by_length, runtime):
        if not features:
            raise UserError("the quiz set has no examples")
        self.features, self.collate_fn, self.runtime = features, collate_fn, runtime
        self.batch_size, self.seed = batch_size, seed
        self.lengths = example_lengths(features) if group_by_length else None
        self.drawn = 0

    def next(self):
        plan = epoch_batches(len(self.features), self.batch_size, seed=self.seed,
                             epoch=self.drawn // self._batches_per_pass(), world_size=self.runtime.world_size,
                             rank=self.runtime.rank, lengths=self.lengths)
        batch = plan[self.drawn % len(plan)]
        self.drawn += 1
        return move_to_device(self.collate_fn([self.features[i] for i in batch]), self.runtime.device)

    def _batches_per_pass(self):
        return math.ceil(len(self.features) / (self.batch_size * self.runtime.world_size))

    def state_dict(self):
        return {"drawn": self.drawn}

    def load_state_dict(self, state):
        self.drawn = state["drawn"]


def average_across_processes(tensors, runtime):
    """All-reduce (mean) a list of tensors in place, so that every process's teacher takes the
    same step."""
    if runtime.distributed:
        for tensor in tensors:
            dist.all_reduce(tensor)
            tensor.div_(runtime.world_size)


def make_teacher_optimizer(teacher, learning_rate, eps):
    """The teacher's AdamW: every parameter, no weight decay."""
    return torch.optim.AdamW(teacher.parameters(), lr=learning_rate, eps=eps, weight_decay=0.0)


def prokt_teacher_backward(teacher, student, batch, *, t_alpha_kd, temperature, scaler=None):
    """ProKT's teacher gradient, accumulated into the teacher's ``.grad``: the backward of
    ``lgtm_teacher_loss`` on ``batch`` against the student's logits (the student in eval mode,
    without gradient, and in train mode after); the loss multiplied by ``scaler``'s scale when
    given (float16)."""
    student.eval()
    with torch.no_grad():
        student_logits = student(**model_inputs(batch, forward_arguments(student))).logits
    student.train()
    outputs = teacher(**model_inputs(batch, forward_arguments(teacher)), labels=batch["labels"])
    loss = lgtm_teacher_loss(outputs.logits, student_logits, outputs.loss, t_alpha_kd=t_alpha_kd,
                             temperature=temperature)
    (scaler.scale(loss) if scaler is not None else loss).backward()


class TeacherStep:
    """The teacher's step on one training micro-batch of ProKT, or of LGTM (with ``quiz_batches``):
    the ``micro_batch_hook`` of ``utils.engine.loop.train``, and the one object that owns what the
    teacher's training needs: its AdamW (``make_teacher_optimizer``), the schedule
    ``make_schedule(optimizer)`` gives it, its float16 gradient scaler and LGTM's quiz batches.

    The hook contract. The loop calls the step once per micro-batch of the student, before the
    student's loss and under the same autocast (and, under data parallelism, inside the student's
    ``no_sync`` on micro-batches that do not end an accumulation): with k accumulation steps, k
    times per student step, so the schedule is sized by ``utils.engine.loop.planned_hook_calls``.
    Each call computes the teacher's gradient (ProKT: ``prokt_teacher_backward``; LGTM:
    ``lgtm_teacher_grads`` on the next quiz batch at the teacher's current learning rate),
    averages it across processes, clips it to ``max_grad_norm``, and takes one step of the
    optimizer and of the schedule. It returns ``{"teacher_grad_norm": norm}``, which the loop logs
    and watches: a teacher that diverges shows there while the student's loss may still be finite,
    and ``non_finite_advice`` is what the loop then advises. ``components`` are saved in and
    restored from the run's checkpoints.

    Under float16 autocast ProKT's teacher loss goes through the step's own gradient scaler, since
    the loop's scales only the student's: without one, the teacher's float16 gradients underflow.
    A step the scaler skips (an overflow, as it lowers its scale) logs a norm of 0 and
    ``teacher_fp16_skipped`` 1, so that the logged mean of the latter is the share of skipped
    teacher steps. LGTM's gradients come from ``torch.autograd.grad`` outside any scaler: it
    refuses float16 (bfloat16 has float32's range)."""

    non_finite_advice = {"teacher_grad_norm": "lower --t_learning_rate (the teacher's)"}

    def __init__(self, teacher, student, runtime, *, learning_rate, adam_epsilon, make_schedule, t_alpha_kd,
                 temperature, max_grad_norm, quiz_batches=None, student_optimizer=None, alpha_kd=None,
                 lgtm_r=0.01):
        if quiz_batches is not None and (student_optimizer is None or alpha_kd is None):
            raise ValueError("the LGTM teacher step (quiz_batches given) needs the student_optimizer and alpha_kd")
        float16 = runtime.amp_dtype == torch.float16
        if float16 and quiz_batches is not None:
            raise ValueError("the LGTM teacher step has no loss scaler: use bfloat16, not float16")
        self.teacher, self.student, self.runtime = teacher, student, runtime
        self.parameters = list(teacher.parameters())
        self.optimizer = make_teacher_optimizer(teacher, learning_rate, adam_epsilon)
        self.scheduler = make_schedule(self.optimizer)
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=float16)
        self.quiz_batches, self.student_optimizer = quiz_batches, student_optimizer
        self.t_alpha_kd, self.alpha_kd, self.temperature = t_alpha_kd, alpha_kd, temperature
        self.max_grad_norm, self.lgtm_r = max_grad_norm, lgtm_r

    @property
    def components(self):
        """What a checkpoint saves of the teacher's training (the teacher itself is the script's)."""
        parts = {"teacher_optimizer": self.optimizer, "teacher_scheduler": self.scheduler}
        if self.scaler.is_enabled():  # float16 ProKT: the teacher's loss scale resumes too
            parts["teacher_scaler"] = self.scaler
        if self.quiz_batches is not None:
            parts["quiz"] = self.quiz_batches
        return parts

    def __call__(self, batch):
        if self.quiz_batches is not None:
            grads = lgtm_teacher_grads(self.teacher, self.student, batch, self.quiz_batches.next(),
                                       self.student_optimizer, alpha_kd=self.alpha_kd, t_alpha_kd=self.t_alpha_kd,
                                       temperature=self.temperature, teacher_lr=self.scheduler.get_last_lr()[0],
                                       r=self.lgtm_r)
            for parameter, grad in zip(self.parameters, grads):
                parameter.grad = grad
        else:
            prokt_teacher_backward(self.teacher, self.student, batch, t_alpha_kd=self.t_alpha_kd,
                                   temperature=self.temperature, scaler=self.scaler if self.scaler.is_enabled() else None)
        average_across_processes([p.grad for p in self.parameters if p.grad is not None], self.runtime)
        self.scaler.unscale_(self.optimizer)
        # without clipping (max_grad_norm 0) the norm is still taken: scaling by 1 changes no gradient
        clip = self.max_grad_norm if self.max_grad_norm and self.max_grad_norm > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.parameters, clip).detach()
        self.scaler.step(self.optimizer)  # the optimizer's step, skipped by an enabled scaler on inf/NaN
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not self.scaler.is_enabled():
            return {"teacher_grad_norm": norm}
        skipped = ~torch.isfinite(norm)
        return {"teacher_grad_norm": torch.where(skipped, torch.zeros_like(norm), norm),
                "teacher_fp16_skipped": skipped.float()}


def teacher_step_from_args(args, runtime, teacher, student, student_optimizer, quiz_batches, num_train_examples):
    """The ``TeacherStep`` of ``run_lgtm_glue.py``'s options: ``--t_learning_rate`` on
    ``--lr_scheduler_type`` over one update per micro-batch of the run, ``--t_alpha_kd``,
    ``--temperature``, ``--max_grad_norm``, and for LGTM (``quiz_batches`` given, with
    ``--use_lgtm``) ``--alpha_kd`` and ``--lgtm_r``; None without ``--train_teacher`` (KD's frozen
    teacher)."""
    if not args.train_teacher:
        return None
    num_updates = planned_hook_calls(num_train_examples, args, runtime)
    return TeacherStep(teacher, student, runtime, learning_rate=args.t_learning_rate, adam_epsilon=args.adam_epsilon,
                       make_schedule=lambda optimizer: make_scheduler(optimizer, args, num_updates),
                       t_alpha_kd=args.t_alpha_kd, temperature=args.temperature, max_grad_norm=args.max_grad_norm,
                       quiz_batches=quiz_batches, student_optimizer=student_optimizer,
                       alpha_kd=args.alpha_kd, lgtm_r=args.lgtm_r)


class BestScore:
    """The best dev metric so far (saved in checkpoints so that a resumed run keeps it)."""

    def __init__(self):
        self.value = -math.inf

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


# --------------------------------------------------------------------------- the LGTM teacher gradient


def model_outputs(model, batch, parameters=None, inputs_embeds=None):
    """``model`` on the entries of ``batch`` its forward names (DistilBERT takes no
    token_type_ids; labels give the task loss); with ``parameters`` ({name: tensor}), evaluated
    functionally on them instead of the model's own; with ``inputs_embeds``, on those input
    embeddings instead of the batch's ``input_ids``."""
    accepted = forward_arguments(model)
    inputs = {key: value for key, value in batch.items() if key in accepted}
    if inputs_embeds is not None:
        del inputs["input_ids"]
        inputs["inputs_embeds"] = inputs_embeds
    if parameters is None:
        return model(**inputs)
    return functional_call(model, parameters, args=(), kwargs=inputs)


@dataclass(frozen=True, eq=False)
class Rows:
    """A matrix that is zero outside the rows ``ids`` (sorted, unique), where it is ``values``."""

    ids: torch.Tensor
    values: torch.Tensor

    def at(self, wanted):
        """The matrix's rows ``wanted`` (sorted, unique ids): ``values`` where held, else zeros."""
        index = torch.searchsorted(self.ids, wanted).clamp_(max=len(self.ids) - 1)
        held = (self.ids[index] == wanted).unsqueeze(-1)
        return torch.where(held, self.values[index], torch.zeros((), dtype=self.values.dtype,
                                                                  device=self.values.device))

    def dense(self, like):
        return torch.zeros_like(like).index_put_((self.ids,), self.values)


@dataclass(frozen=True, eq=False)
class EmbeddingRows:
    """The rows of a model's input-embedding matrix (parameter ``name``) that a batch reads:
    ``ids``, its distinct input ids, sorted, and ``positions``, its ``input_ids`` as indices
    into ``ids``. The model on ``inputs_embeds = embed(table)`` is the model on ``input_ids``
    with an embedding matrix whose rows ``ids`` hold ``table``, and the gradient with respect to
    ``table`` is that matrix's gradient on those rows (zero on every other row). So the
    look-ahead, the quiz gradient and the perturbations of the embedding matrix need only
    these rows: a GLUE batch reads a few hundred of BERT's 30522.
    """

    name: str
    ids: torch.Tensor
    positions: torch.Tensor
    padding_position: int | None  # the embedding's padding_idx among ids: gets no gradient

    def embed(self, table, positions=None):
        return F.embedding(self.positions if positions is None else positions, table,
                           padding_idx=self.padding_position)


def embedding_rows(model, input_ids, trainable_names):
    """``EmbeddingRows`` of ``input_ids`` for ``model``; None unless the model's input embedding is a
    plain ``nn.Embedding``, trainable (named in ``trainable_names``), read through ``input_ids``
    alone (no output embedding tied to it) and the forward takes ``inputs_embeds``."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    plain = (isinstance(embedding, torch.nn.Embedding) and embedding.max_norm is None
             and not embedding.scale_grad_by_freq and not embedding.sparse)
    if not plain or getattr(model, "get_output_embeddings", lambda: None)() is not None:
        return None
    name = next((name for name, p in model.named_parameters() if p is embedding.weight), None)
    if name not in trainable_names or "inputs_embeds" not in forward_arguments(model):
        return None
    ids, positions = torch.unique(input_ids, sorted=True, return_inverse=True)
    padding = None
    if embedding.padding_idx is not None:
        found = (ids == embedding.padding_idx).nonzero()
        padding = int(found[0]) if len(found) else None
    return EmbeddingRows(name, ids, positions, padding)


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
    group_of = _groups(optimizer)
    return [
        p.detach() if g is None or p not in group_of
        else _adam_step(p.detach(), g, group_of[p], optimizer.state.get(p, {}))
        for p, g in zip(params, grads)
    ]


def adam_lookahead_rows(param, grad, optimizer, ids):
    """Rows ``ids`` of ``adam_lookahead([param], [grad], optimizer)[0]``, computed on those rows
    alone (Adam is elementwise); ``grad`` a ``Rows`` or None."""
    group = _groups(optimizer).get(param)
    rows = param.detach()[ids]
    if grad is None or group is None:
        return rows
    state = optimizer.state.get(param, {})
    state_rows = {"step": state["step"], "exp_avg": state["exp_avg"][ids],
                  "exp_avg_sq": state["exp_avg_sq"][ids]} if state else {}
    return _adam_step(rows, grad.at(ids), group, state_rows)


def _groups(optimizer):
    return {p: group for group in optimizer.param_groups for p in group["params"]}


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
    vector-Jacobian product. An entry of ``direction`` may be a ``Rows`` (the input-embedding
    matrix's direction on a few rows). Returns one tensor per ``teacher.parameters()``.
    """
    influence = _influence(teacher, student, batch, direction, t_alpha_kd=t_alpha_kd,
                           temperature=temperature, r=r)
    return [h.dense(p) if isinstance(h, Rows) else h for h, p in zip(influence, teacher.parameters())]


def _influence(teacher, student, batch, direction, *, t_alpha_kd, temperature, r):
    """``finite_difference_influence`` with the teacher's input-embedding entry as ``Rows`` (the
    rows the batch reads; zero elsewhere) where ``embedding_rows`` allows."""
    named_teacher = dict(teacher.named_parameters())
    norms = [torch.linalg.vector_norm(v.values if isinstance(v, Rows) else v) for v in direction.values()]
    direction_norm = float(torch.linalg.vector_norm(torch.stack(norms)))
    if direction_norm == 0:
        return [torch.zeros_like(p) for p in named_teacher.values()]
    eps = r / direction_norm
    student_rows = embedding_rows(student, batch["input_ids"],
                              {name for name, v in direction.items() if isinstance(v, Rows)})
    teacher_rows = embedding_rows(teacher, batch["input_ids"],
                              {name for name, p in named_teacher.items() if p.requires_grad})
    with modes_restored(teacher, student):
        teacher.eval()
        student.eval()
        plus, minus = (_perturbed_probabilities(student, batch, direction, sign * eps, temperature,
                                                student_rows)
                       for sign in (1, -1))
        wrt = {name: p for name, p in named_teacher.items() if p.requires_grad}
        inputs_embeds = None
        if teacher_rows is not None:
            wrt[teacher_rows.name] = named_teacher[teacher_rows.name].detach()[teacher_rows.ids].requires_grad_()
            inputs_embeds = teacher_rows.embed(wrt[teacher_rows.name])
        teacher_logits = model_outputs(teacher, batch, inputs_embeds=inputs_embeds).logits
        logit_gradient = t_alpha_kd * (minus - plus) / (2 * eps * temperature * len(teacher_logits))
        grads = dict(zip(wrt, torch.autograd.grad(teacher_logits, list(wrt.values()),
                                                  logit_gradient.to(teacher_logits.dtype),
                                                  allow_unused=True, materialize_grads=True)))
    if teacher_rows is not None:
        grads[teacher_rows.name] = Rows(teacher_rows.ids, grads[teacher_rows.name])
    return [grads[name] if name in grads else torch.zeros_like(p) for name, p in named_teacher.items()]


@torch.no_grad()
def _perturbed_probabilities(student, batch, direction, step, temperature, rows):
    """``softmax(s(theta + step v) / T)``, the student's forward in float32 (autocast off) or
    wider; the input-embedding entry of ``direction`` applied on the batch's ``rows`` only, where
    given."""
    named_params = dict(student.named_parameters())
    perturbed = {name: torch.add(named_params[name], v.dense(named_params[name]) if isinstance(v, Rows) else v,
                                 alpha=step)
                 for name, v in direction.items() if rows is None or name != rows.name}
    inputs_embeds = None
    if rows is not None:
        table = torch.add(named_params[rows.name][rows.ids], direction[rows.name].at(rows.ids), alpha=step)
        inputs_embeds = rows.embed(table)
    # in float32 whatever the run's autocast: the step eps v is about r = 0.01 of the parameters'
    # norm spread over all of them, far below bfloat16's (or float16's) rounding of one weight,
    # so that s(theta + eps v) - s(theta - eps v) would be rounding noise in 16 bits
    with torch.autocast(device_type=next(student.parameters()).device.type, enabled=False):
        logits = model_outputs(student, batch, perturbed, inputs_embeds).logits
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
    the look-ahead student is evaluated functionally, without a copy of the model. The input
    embeddings' look-ahead, quiz gradient, perturbations and influence are computed on the rows
    that x and q read (``EmbeddingRows``): every other row of them is zero or unchanged.
    """
    with modes_restored(teacher, student):
        trainable = {name: p for name, p in student.named_parameters() if p.requires_grad}
        batch_rows = embedding_rows(student, batch["input_ids"], trainable)
        teacher_grads, student_grads = _batch_gradients(
            teacher, student, batch, trainable, batch_rows,
            alpha_kd=alpha_kd, t_alpha_kd=t_alpha_kd, temperature=temperature)
        quiz_rows = embedding_rows(student, quiz_batch["input_ids"], trainable)
        lookahead = _lookahead(trainable, student_grads, student_optimizer, quiz_rows)
        del student_grads
        quiz_direction = _quiz_gradient(student, quiz_batch, lookahead, quiz_rows)
        del lookahead
    influence = _influence(teacher, student, batch, quiz_direction,
                           t_alpha_kd=t_alpha_kd, temperature=temperature, r=r)
    for g, h in zip(teacher_grads, influence):
        if isinstance(h, Rows):
            g.index_add_(0, h.ids, h.values, alpha=-teacher_lr)
        else:
            g.add_(h, alpha=-teacher_lr)
    return teacher_grads


def _batch_gradients(teacher, student, batch, trainable, rows, *, alpha_kd, t_alpha_kd, temperature):
    """``g_T = grad_phi L_T(x)`` (one tensor per teacher parameter, zeros where none) and
    ``g = grad_theta L_S(x)`` ({name: grad} over ``trainable``, None where unused; the input
    embedding's a ``Rows`` on ``rows`` where given), both from the same forwards of x.

    L_T sees the student's logits detached and L_S the teacher's, so one backward of
    ``L_T + L_S`` gives both gradients. Both losses are means over the batch, so their gradients
    are the sums over pieces of the batch of ``len(piece) / B`` times the piece's gradients: a
    batch of at least ``PIECES_FROM_TOKENS`` tokens goes through ``BATCH_PIECES`` pieces one by
    one, which keeps only one piece's activations of both models at a time.
    """
    teacher_params = list(teacher.parameters())
    trainable_teacher = [p for p in teacher_params if p.requires_grad]
    student_wrt = {name: p for name, p in trainable.items() if rows is None or name != rows.name}
    table, columns = None, dict(batch)
    if rows is not None:
        table = trainable[rows.name].detach()[rows.ids].requires_grad_()
        columns["embedding_positions"] = rows.positions
    wrt = trainable_teacher + list(student_wrt.values()) + ([] if table is None else [table])
    count = BATCH_PIECES if batch["input_ids"].numel() >= PIECES_FROM_TOKENS else 1
    totals = None
    for piece in _pieces(columns, count):
        weight = len(piece["input_ids"]) / len(batch["input_ids"])
        inputs_embeds = None if table is None else rows.embed(table, piece["embedding_positions"])
        teacher_out, student_out = model_outputs(teacher, piece), model_outputs(student, piece, None, inputs_embeds)
        total = weight * (lgtm_teacher_loss(teacher_out.logits, student_out.logits, teacher_out.loss,
                                            t_alpha_kd=t_alpha_kd, temperature=temperature)
                          + lgtm_student_loss(student_out.logits, teacher_out.logits, student_out.loss,
                                              alpha_kd=alpha_kd, temperature=temperature))
        totals = _accumulate(totals, torch.autograd.grad(total, wrt, allow_unused=True))
    by_teacher_param = dict(zip(map(id, trainable_teacher), totals))
    teacher_grads = [_or_zeros(by_teacher_param.get(id(p)), p) for p in teacher_params]
    student_grads = dict(zip(student_wrt, totals[len(trainable_teacher):]))
    if table is not None:
        student_grads[rows.name] = Rows(rows.ids, totals[-1])
    return teacher_grads, student_grads


def _lookahead(trainable, grads, optimizer, rows):
    """{name: theta'} (``adam_lookahead``); the input embedding's on ``rows`` only, where given."""
    names = [name for name in trainable if rows is None or name != rows.name]
    lookahead = dict(zip(names, adam_lookahead([trainable[name] for name in names],
                                               [grads[name] for name in names], optimizer)))
    if rows is not None:
        lookahead[rows.name] = adam_lookahead_rows(trainable[rows.name], grads[rows.name], optimizer,
                                                   rows.ids)
    return lookahead


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


def _quiz_gradient(student, quiz_batch, lookahead, rows):
    """``v = grad_theta' CE(student_theta'(q))``, the student in train mode, as {name: v}; the
    input embedding's a ``Rows`` on ``rows`` where given."""
    student.train()
    leaves = {name: theta.requires_grad_() for name, theta in lookahead.items()}
    parameters = {name: leaf for name, leaf in leaves.items() if rows is None or name != rows.name}
    inputs_embeds = None if rows is None else rows.embed(leaves[rows.name])
    quiz_loss = model_outputs(student, quiz_batch, parameters, inputs_embeds).loss
    direction = dict(zip(leaves, gradients_or_zeros(quiz_loss, list(leaves.values()))))
    if rows is not None:
        direction[rows.name] = Rows(rows.ids, direction[rows.name])
    return direction
