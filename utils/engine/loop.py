"""The one training loop every script uses, and the batches it draws.

Gradient accumulation, a learning-rate schedule with warm-up, gradient clipping, mixed precision
(autocast, and a gradient scaler for float16), logging (tqdm, TensorBoard), periodic evaluation,
checkpoints (``utils.engine.checkpoints``), optionally the trained forward compiled with torch.compile,
and the batch plans (shuffled or grouped by length, split across processes) that an interrupted
epoch replays.
"""

import contextlib
import logging
import math
import signal
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from utils.engine.checkpoints import Position, load_checkpoint, save_checkpoint
from utils.engine.errors import RunStopped, UserError
from utils.engine.runtime import checkpoint_dir, move_to_device

logger = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


# the exit status of a run that a signal stopped after saving its checkpoint (EX_TEMPFAIL: try
# again); the table scripts and the Slurm batch files read it
STOPPED_EXIT_STATUS = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# under data parallelism the processes agree on a stop every this many steps (a collective, which
# waits for the step's work on the device): a few seconds of BERT-base steps, well inside the
# warning that Slurm's --signal gives and the grace before a preemption's SIGKILL
STOP_CHECK_STEPS = 10


def ignore_stop_signals(worker_id):
    """A data-loading worker leaves SIGTERM and SIGUSR1 (sent to every process of a preempted job)
    to the training process, which stops at its next step."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


class StopSignals:
    """SIGTERM (sent before preemption and at a time limit) and SIGUSR1 (Slurm's ``--signal``) ask
    the run to stop: while training, their handlers only note the request, and the loop saves a
    checkpoint at the next optimizer-step boundary and stops (``requested``). Outside training the
    signals do what they did before."""

    def __init__(self):
        self.received = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self.previous[number] = signal.signal(number, self._note)
        return self

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _note(self, number, frame):
        if self.received is None:
            logger.warning("%s received: saving a checkpoint at the next optimizer step, then stopping",
                           signal.Signals(number).name)
        self.received = number

    def requested(self, runtime, step, last_step):
        """The signal to stop on after optimizer step ``step``, or None. Under data parallelism
        every process stops at the same step when any of them received one (the checkpoint is
        written together), asked every ``STOP_CHECK_STEPS`` steps and at the last one."""
        received = self.received or 0
        if runtime.distributed:
            if step % STOP_CHECK_STEPS and step != last_step:
                return None
            flag = torch.tensor([received], device=runtime.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            received = int(flag.item())
        return received or None


# --------------------------------------------------------------------------- batches


def epoch_batches(num_examples, batch_size, *, seed, epoch, shuffle=True, world_size=1, rank=0, lengths=None):
    """This process's batches (lists of example indices) for one epoch.

    The order depends only on ``seed`` and ``epoch``, so an interrupted epoch can be replayed
    and its first batches skipped. With ``lengths`` (one per example) batches are grouped by
    length: the shuffled order is cut into chunks of 50 global batches, each chunk sorted by
    length, cut into batches, and the batches shuffled; every example still comes once per
    epoch. Under data parallelism each global batch of ``batch_size * world_size`` examples is
    split into ``world_size`` contiguous parts; a last global batch smaller than
    ``world_size`` is topped up from the epoch's start so that every process gets an example.
    """
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(num_examples, generator=generator).tolist() if shuffle else list(range(num_examples))
    global_size = batch_size * world_size
    if lengths is not None:
        chunk = 50 * global_size
        order = [i for start in range(0, num_examples, chunk)
                 for i in sorted(order[start:start + chunk], key=lambda i: -lengths[i])]
    global_batches = [order[start:start + global_size] for start in range(0, num_examples, global_size)]
    if lengths is not None and shuffle:
        global_batches = [global_batches[i] for i in torch.randperm(len(global_batches), generator=generator)]
    batches = []
    for batch in global_batches:
        if len(batch) < world_size:
            batch = batch + order[:world_size - len(batch)]
        batches.append(batch[rank * len(batch) // world_size:(rank + 1) * len(batch) // world_size])
    return batches


def shard_indices(num_examples, runtime):
    """The examples this process evaluates: every ``world_size``-th one."""
    return list(range(runtime.rank, num_examples, runtime.world_size))


@torch.no_grad()
def predict(forward, dataset, collate_fn, batch_size, runtime, desc="predicting"):
    """Run ``forward(batch) -> tensor (B, ...)`` over ``dataset``; outputs of all processes in
    dataset order, as a float32 numpy array (on every process)."""
    indices = shard_indices(len(dataset), runtime)
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn,
                        pin_memory=runtime.device.type == "cuda", generator=torch.Generator())
    outputs = []
    for batch in tqdm(loader, desc=desc, disable=None if runtime.is_main else True, leave=False):
        with runtime.autocast():
            outputs.append(forward(move_to_device(batch, runtime.device)).float().cpu())
    local = torch.cat(outputs).numpy() if outputs else np.zeros((0,), dtype=np.float32)
    if not runtime.distributed:
        return local
    gathered = [None] * runtime.world_size
    dist.all_gather_object(gathered, (indices, local))
    ordered = np.empty((len(dataset),) + local.shape[1:], dtype=np.float32)
    for rank_indices, rank_outputs in gathered:
        ordered[rank_indices] = rank_outputs
    return ordered


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    global_step: int
    train_loss: float


def make_optimizer(model, args):
    """AdamW; no weight decay on biases and LayerNorm weights, as in the released scripts.

    The fused implementation (one kernel over all parameters) on CUDA and on the CPU: on a CPU it
    is several times faster than the per-tensor-list one, and for a small BERT on short batches the
    update of the 30522-row embedding matrix costs more than the forward and backward."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = next(model.parameters()).device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=args.learning_rate, eps=args.adam_epsilon, fused=fused)


def schedule_length(num_batches, args):
    """(optimizer steps per epoch, total optimizer steps, number of epochs)."""
    if num_batches == 0:
        raise UserError("the training set is empty")
    steps_per_epoch = math.ceil(num_batches / args.gradient_accumulation_steps)
    if args.max_steps > 0:
        return steps_per_epoch, args.max_steps, math.ceil(args.max_steps / steps_per_epoch)
    total = math.ceil(steps_per_epoch * args.num_train_epochs)
    return steps_per_epoch, total, math.ceil(args.num_train_epochs)


def planned_steps(num_examples, args, runtime):
    """(optimizer steps per epoch, total optimizer steps, number of epochs) of a training set."""
    batches = epoch_batches(num_examples, args.per_device_train_batch_size, seed=args.seed, epoch=0,
                            world_size=runtime.world_size, rank=runtime.rank)
    return schedule_length(len(batches), args)


def planned_hook_calls(num_examples, args, runtime):
    """How many times ``train`` calls its ``micro_batch_hook`` in a run, the length to give a
    schedule that the hook steps (a teacher trained beside the student, say): once per micro-batch, so total
    optimizer steps x ``--gradient_accumulation_steps``. An epoch whose last accumulation is not
    full calls it fewer times than that; the schedule then stops short of its end."""
    _, total_steps, _ = planned_steps(num_examples, args, runtime)
    return total_steps * args.gradient_accumulation_steps


def make_scheduler(optimizer, args, total_steps):
    """``--lr_scheduler_type`` over ``total_steps`` steps of ``optimizer``, warmed up over
    ``--warmup_steps`` (or, when 0, ``--warmup_ratio`` of them)."""
    warmup = args.warmup_steps or math.ceil(args.warmup_ratio * total_steps)
    return get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def example_lengths(dataset):
    """Token counts of the features (their ``input_ids``), for grouping batches by length."""
    return [len(features["input_ids"]) for features in dataset]


def compiled(model, args):
    """``model`` with its forward (and so its backward) compiled by ``torch.compile`` under
    ``--torch_compile``, else ``model`` itself.

    The compiled module is only what ``compute_loss`` calls: it shares ``model``'s parameters, and
    everything else (optimizer, gradient clipping, checkpoints, ``save_pretrained``, evaluation)
    uses the plain module, so state dicts never get the wrapper's ``_orig_mod.`` prefix. Under
    data parallelism the ``DistributedDataParallel`` module is compiled, as PyTorch recommends.
    """
    if not getattr(args, "torch_compile", False):
        return model
    logger.info("compiling the model's forward with torch.compile (backend %s)", args.torch_compile_backend)
    return torch.compile(model, backend=args.torch_compile_backend)


@contextlib.contextmanager
def compile_errors_explained(args):
    """Turn a failing ``torch.compile`` backend (compilation happens at the first forward) into a
    one-line UserError that names ``--torch_compile_backend``."""
    if not getattr(args, "torch_compile", False):
        yield
        return
    from torch._dynamo.exc import BackendCompilerFailed

    try:
        yield
    except BackendCompilerFailed as error:
        cause = getattr(error, "inner_exception", None) or error
        reason = type(cause).__name__ + (f": {str(cause).strip().splitlines()[0]}" if str(cause).strip() else "")
        raise UserError(f"--torch_compile: the {args.torch_compile_backend} backend failed ({reason}); run without "
                        "--torch_compile, or pass --torch_compile_backend aot_eager (on the CPU inductor needs a "
                        "C++ compiler)") from error


def backward_micro_batch(compute_loss, forward_model, batch, *, runtime, scaler, accumulation,
                         micro_batch_hook=None):
    """One micro-batch of training: under the run's autocast, the method's ``micro_batch_hook``
    (see ``train``) and then ``compute_loss``; the loss's backward, divided by ``accumulation``
    and scaled by ``scaler`` (float16). Returns ``(loss, terms)``, the hook's terms among them."""
    with runtime.autocast():
        hook_terms = micro_batch_hook(batch) if micro_batch_hook is not None else None
        loss, terms = compute_loss(forward_model, batch)
    scaler.scale(loss / accumulation).backward()
    return loss, {**terms, **(hook_terms or {})}


def optimizer_step(model, optimizer, scheduler, scaler, max_grad_norm):
    """The update after the last micro-batch of an accumulation: gradients unscaled (float16)
    and clipped to ``max_grad_norm`` (when above 0), the step (which the scaler skips when a
    float16 gradient overflowed), the scaler and the schedule advanced, gradients freed."""
    if max_grad_norm and max_grad_norm > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def train(args, runtime, *, model, train_dataset, collate_fn, compute_loss, tokenizer=None, evaluate=None,
          micro_batch_hook=None, extra_components=None, resume_from=None, optimizer=None):
    """Train ``model`` (its parameters with requires_grad) and return a ``TrainResult``.

    ``compute_loss(model, batch) -> (loss, terms)`` computes the scalar loss of one micro-batch
    and a dict of detached tensors to log, and changes nothing; it is given ``model`` wrapped for
    data parallelism and, with ``--torch_compile``, compiled (``compiled``), and should call that
    for the trained forward.

    ``micro_batch_hook(batch) -> terms or None`` is where a method updates another model on each
    micro-batch (``utils.methods.lgtm.TeacherStep`` documents the contract from the method's
    side). It is called once per micro-batch, before ``compute_loss`` and under the same autocast,
    whether or not that micro-batch ends an accumulation: with k accumulation steps, k times per
    optimizer step of ``model`` (``planned_hook_calls`` gives the count for its schedule). The
    terms it returns (a dict of detached tensors) are logged and watched for NaN like the loss's.
    Two optional attributes: ``components`` (objects with ``state_dict``: its optimizer, schedule,
    ...) are saved in checkpoints with the rest, and ``non_finite_advice`` ({term: advice}) is
    what the error says when only its terms became NaN or infinite.

    ``evaluate(global_step) -> dict`` runs every ``--eval_steps`` steps with
    ``--evaluate_during_training`` (and may keep the best model, say); its metrics are logged.
    ``extra_components`` (objects with ``state_dict``) are saved in and restored from checkpoints
    with the optimizer. ``optimizer`` defaults to ``make_optimizer(model, args)``.
    """
    model.to(runtime.device)
    model.train()
    optimizer = optimizer or make_optimizer(model, args)
    steps_per_epoch, total_steps, num_epochs = planned_steps(len(train_dataset), args, runtime)
    scheduler = make_scheduler(optimizer, args, total_steps)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
    components = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, **(extra_components or {}),
                  **getattr(micro_batch_hook, "components", {})}

    position = Position()
    if resume_from is not None:
        position = load_checkpoint(resume_from, model, components, runtime)
    ddp_model = model
    if runtime.distributed:
        ddp_model = DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    forward_model = compiled(ddp_model, args)

    logger.info("training on %s (mixed precision: %s): %d examples, %d epochs, %d optimizer steps (%d per epoch), "
                "batch %d x %d process(es) x %d accumulation", runtime.device, runtime.amp_dtype, len(train_dataset),
                num_epochs, total_steps, steps_per_epoch, args.per_device_train_batch_size, runtime.world_size,
                args.gradient_accumulation_steps)
    log = _TrainingLog(args, runtime, scheduler, total_steps, position.global_step,
                       getattr(micro_batch_hook, "non_finite_advice", {}))
    accumulation = args.gradient_accumulation_steps
    lengths = example_lengths(train_dataset) if args.group_by_length else None
    with StopSignals() as stop, log:
        while position.global_step < total_steps and position.epoch < num_epochs:
            plan = epoch_batches(len(train_dataset), args.per_device_train_batch_size, seed=args.seed,
                                 epoch=position.epoch, world_size=runtime.world_size, rank=runtime.rank,
                                 lengths=lengths)
            # A generator of its own: creating the iterator then draws nothing from the global RNG,
            # whose state (dropout, sub-teacher masks) checkpoints restore exactly.
            loader = DataLoader(train_dataset, batch_sampler=plan[position.batches_done:], collate_fn=collate_fn,
                                num_workers=args.dataloader_num_workers, pin_memory=runtime.device.type == "cuda",
                                generator=torch.Generator(), worker_init_fn=ignore_stop_signals)
            for batch_index, batch in enumerate(loader, start=position.batches_done):
                batch = move_to_device(batch, runtime.device)
                updates = (batch_index + 1) % accumulation == 0 or batch_index + 1 == len(plan)
                # DDP averages gradients across processes only on the micro-batch that ends an accumulation
                sync = contextlib.nullcontext() if updates or not runtime.distributed else ddp_model.no_sync()
                with sync, compile_errors_explained(args):
                    loss, terms = backward_micro_batch(compute_loss, forward_model, batch, runtime=runtime,
                                                       scaler=scaler, accumulation=accumulation,
                                                       micro_batch_hook=micro_batch_hook)
                log.add(loss.detach(), terms)
                position.batches_done = batch_index + 1
                if not updates:
                    continue
                optimizer_step(model, optimizer, scheduler, scaler, args.max_grad_norm)
                position.global_step += 1
                if position.batches_done == len(plan):
                    position.epoch, position.batches_done = position.epoch + 1, 0

                step = position.global_step
                stopping = stop.requested(runtime, step, total_steps)
                log.step(step, flush=stopping is not None)
                if evaluate is not None and args.evaluate_during_training and step % args.eval_steps == 0:
                    log.evaluation(step, evaluate(step))
                    model.train()
                saves = args.save_steps and args.save_steps > 0 and step % args.save_steps == 0
                if (saves and step < total_steps) or stopping:  # on the last step too: the rest resumes
                    save_checkpoint(checkpoint_dir(args), position, model, tokenizer, components, runtime,
                                    args.save_total_limit)
                if stopping:
                    raise RunStopped(f"{signal.Signals(stopping).name} received: saved checkpoint-{step} (step "
                                     f"{step} of {total_steps}) in {checkpoint_dir(args)}; the same command resumes "
                                     "the run there", STOPPED_EXIT_STATUS)
                if step >= total_steps:
                    break
    return TrainResult(global_step=position.global_step, train_loss=log.mean_loss)


class _TrainingLog:
    """What the loop reports: the progress bar, the logged means of the loss and its terms
    (``--logging_steps``, also at each checkpoint and at the end, checked for NaN), the learning
    rate and evaluations in TensorBoard (``--report_to tensorboard``), the mean training loss."""

    def __init__(self, args, runtime, scheduler, total_steps, first_step, non_finite_advice):
        self.args, self.scheduler, self.total_steps = args, scheduler, total_steps
        self.writer = None
        if runtime.is_main and args.report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(checkpoint_dir(args) / "runs"))
        self.progress = tqdm(total=total_steps, initial=first_step, desc="training",
                             disable=not runtime.is_main or args.disable_tqdm, dynamic_ncols=True)
        self.sums = _RunningSums(runtime.device, first_step + 1, non_finite_advice)
        self.total_loss, self.total_count = 0.0, 0

    def add(self, loss, terms):
        self.sums.add(loss, terms)

    def step(self, step, flush=False):
        """After optimizer step ``step``; ``flush``: log the means now (a checkpoint follows)."""
        self.progress.update(1)
        args = self.args
        if (flush or step % args.logging_steps == 0 or step == self.total_steps
                or (args.save_steps and step % args.save_steps == 0)):
            means, count = self.sums.pop_means(step)
            self.total_loss += means["loss"] * count
            self.total_count += count
            self.progress.set_postfix(loss=f"{means['loss']:.4f}")
            if self.writer is not None:
                self.writer.add_scalar("train/learning_rate", self.scheduler.get_last_lr()[0], step)
                for name, value in means.items():
                    self.writer.add_scalar(f"train/{name}", value, step)
        elif step % 10 == 0 and not self.progress.disable:
            self.progress.set_postfix(loss=f"{self.sums.peek_loss():.4f}")

    def evaluation(self, step, metrics):
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(f"eval/{name}", value, step)

    @property
    def mean_loss(self):
        """The mean training loss of the logged steps."""
        return self.total_loss / self.total_count if self.total_count else float("nan")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """The bar and the writer closed, however training ends."""
        self.progress.close()
        if self.writer is not None:
            self.writer.close()


class _RunningSums:
    """Sums of the loss and its terms on the device, read (one synchronisation) when logged."""

    def __init__(self, device, first_step=1, non_finite_advice=None):
        self.device = device
        self.sums = {}
        self.count = 0
        self.first_step = first_step  # the first optimizer step of the sums
        self.non_finite_advice = non_finite_advice or {}

    def add(self, loss, terms):
        for name, value in (("loss", loss), *terms.items()):
            value = value.float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += 1

    def peek_loss(self):
        """The mean loss since the last ``pop_means``, for the progress bar."""
        return self.sums["loss"].item() / max(self.count, 1)

    def pop_means(self, step):
        """(means since the last call, number of micro-batches they cover); a NaN or infinite
        loss, or logged term, stops training with a clear error that names it."""
        means = {name: value.item() / max(self.count, 1) for name, value in self.sums.items()}
        broken = [name for name, value in means.items() if not math.isfinite(value)]
        if broken:
            steps = f"at step {step}" if self.first_step >= step else f"between steps {self.first_step} and {step}"
            seen = ", ".join(f"{'the training loss' if name == 'loss' else name} became {means[name]}" for name in broken)
            advice = {self.non_finite_advice.get(name) for name in broken}
            remedy = (advice.pop() if len(advice) == 1 and None not in advice
                      else "lower the learning rate, or use --bf16 instead of --fp16")
            raise NonFiniteLossError(
                f"training stopped {steps}: {seen}; nothing from these steps was saved. Data with extreme values "
                f"(a label or score far out of range) can cause this: check them; otherwise {remedy}")
        count = self.count
        self.sums, self.count, self.first_step = {}, 0, step + 1
        return means, count
