"""The one training loop every script uses.

Device placement (CUDA, else MPS, else CPU), torch.distributed data parallel when launched by
torchrun, mixed precision, gradient accumulation, a learning-rate schedule with warm-up,
gradient clipping, logging (tqdm, TensorBoard), periodic evaluation, checkpoints that a run
resumes from exactly (weights, optimizer, scheduler, RNG states, position in the epoch), and
optionally the trained forward compiled with torch.compile.
"""

import contextlib
import json
import logging
import math
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
import transformers
from transformers import get_scheduler

from utils.errors import UserError

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINING_STATE = "training_state.pt"


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


# --------------------------------------------------------------------------- runtime


@dataclass
class Runtime:
    """Where and how this process computes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def barrier(self):
        if self.distributed:
            dist.barrier()


def setup_runtime(args):
    """Pick the device, join the process group under torchrun, set up logging and precision."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not args.use_cpu
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif world_size == 1 and not args.use_cpu and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        level=logging.INFO if rank == 0 else logging.WARNING,
    )
    transformers.utils.logging.disable_progress_bar()
    if rank != 0:
        transformers.utils.logging.set_verbosity_error()
    amp_dtype = None
    if args.fp16:
        if device.type != "cuda":
            raise UserError("--fp16 needs a CUDA GPU; on the CPU use --bf16")
        amp_dtype = torch.float16
    elif args.bf16:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("--bf16 is not supported by this GPU; use --fp16")
        amp_dtype = torch.bfloat16
    return Runtime(device=device, rank=rank, world_size=world_size, amp_dtype=amp_dtype)


def start_run(args):
    """The start of every script: the runtime, the output folders checked (before training),
    the seed set. Returns ``(runtime, checkpoint to resume from or None)``."""
    runtime = setup_runtime(args)
    resume = prepare_output_dir(args, runtime) if args.do_train else None
    if runtime.is_main:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)
    return runtime, resume


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def move_to_device(batch, device):
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


# --------------------------------------------------------------------------- output dir


def checkpoints_in(output_dir):
    """The ``checkpoint-N`` folders of ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in output_dir.iterdir()
             if path.is_dir() and (m := CHECKPOINT_PATTERN.match(path.name))]
    return [path for _, path in sorted(found)]


def checkpoint_dir(args):
    """Where checkpoints and TensorBoard logs go: ``--output_dir_intermed`` where a script has
    it (the SQuAD and IMDB scripts), else output_dir."""
    return Path(getattr(args, "output_dir_intermed", None) or args.output_dir)


def _non_empty(directory):
    return directory.is_dir() and any(directory.iterdir())


def prepare_output_dir(args, runtime, finished_marker="eval_results.json"):
    """Check the output folders before any work; return the checkpoint to resume from, or None.

    A non-empty output folder is refused unless ``--overwrite_output_dir`` is given (then old
    checkpoints are removed so that they are never resumed by mistake) or it holds the
    checkpoints of an unfinished run (then training resumes from the last one).
    """
    output_dir, work_dir = Path(args.output_dir), checkpoint_dir(args)
    resume = None
    if args.resume_from_checkpoint:
        resume = Path(args.resume_from_checkpoint)
        if not (resume / TRAINING_STATE).is_file():
            raise UserError(f"--resume_from_checkpoint {resume}: not a checkpoint folder "
                            f"(no {TRAINING_STATE} in it)")
    elif _non_empty(output_dir) or _non_empty(work_dir):
        checkpoints = checkpoints_in(work_dir)
        if args.overwrite_output_dir:
            if runtime.is_main:
                for checkpoint in checkpoints:
                    shutil.rmtree(checkpoint)
        elif checkpoints and not (output_dir / finished_marker).exists():
            resume = checkpoints[-1]
            logger.info("resuming the interrupted run in %s from %s", work_dir, resume.name)
        else:
            busy = output_dir if _non_empty(output_dir) else work_dir
            raise UserError(f"output directory {busy} is not empty; pass --overwrite_output_dir "
                            "to train again there, or choose another --output_dir")
    if runtime.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        work_dir.mkdir(parents=True, exist_ok=True)
    runtime.barrier()
    return resume


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


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Position:
    """Where training stands: optimizer steps taken, current epoch, micro-batches done in it."""

    global_step: int = 0
    epoch: int = 0
    batches_done: int = 0


def rng_states():
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states):
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def save_checkpoint(output_dir, position, model, tokenizer, components, runtime, save_total_limit):
    """Write ``checkpoint-<step>`` atomically (a temporary folder renamed when complete).

    ``components`` maps names to objects with ``state_dict()`` (optimizer, scheduler, any extra
    model or optimizer of the method). Each process stores its own RNG states.
    """
    final = Path(output_dir) / f"checkpoint-{position.global_step}"
    partial = Path(output_dir) / f".checkpoint-{position.global_step}.partial"
    if runtime.is_main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        unwrap(model).save_pretrained(partial)
        if tokenizer is not None:
            tokenizer.save_pretrained(partial)
        state = {"position": asdict(position),
                 "components": {name: item.state_dict() for name, item in components.items()}}
        torch.save(state, partial / TRAINING_STATE)
    runtime.barrier()
    torch.save(rng_states(), partial / f"rng_state_{runtime.rank}.pt")
    runtime.barrier()
    if runtime.is_main:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        if save_total_limit and save_total_limit > 0:
            for old in checkpoints_in(output_dir)[:-save_total_limit]:
                shutil.rmtree(old)
        logger.info("saved %s", final)
    runtime.barrier()


def load_checkpoint(checkpoint, model, components, runtime):
    """Restore what ``save_checkpoint`` wrote; return the ``Position`` to continue from."""
    from safetensors.torch import load_file

    weights = load_file(str(Path(checkpoint) / "model.safetensors"), device=str(runtime.device))
    missing, unexpected = unwrap(model).load_state_dict(weights, strict=False)
    if unexpected or any(not _is_tied(unwrap(model), name) for name in missing):
        raise UserError(f"checkpoint {checkpoint} does not match the model "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    state = torch.load(Path(checkpoint) / TRAINING_STATE, map_location="cpu", weights_only=False)
    for name, item in components.items():
        item.load_state_dict(state["components"][name])
    rng_file = Path(checkpoint) / f"rng_state_{runtime.rank}.pt"
    if rng_file.exists():
        restore_rng_states(torch.load(rng_file, weights_only=False))
    logger.info("resumed from %s", checkpoint)
    return Position(**state["position"])


def _is_tied(model, name):
    """Whether a parameter left out of a safetensors file is one tied to another (shared storage)."""
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    return name in tied


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    global_step: int
    train_loss: float


def make_optimizer(model, args):
    """AdamW; no weight decay on biases and LayerNorm weights, as in the released scripts."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = next(model.parameters()).device.type == "cuda"
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


def train(args, runtime, *, model, train_dataset, collate_fn, compute_loss, tokenizer=None,
          evaluate=None, extra_components=None, resume_from=None, optimizer=None):
    """Train ``model`` (its parameters with requires_grad) and return a ``TrainResult``.

    ``compute_loss(model, batch) -> (loss, terms)``: the scalar loss of one micro-batch and a
    dict of detached tensors to log; it is given ``model`` wrapped for data parallelism and, with
    ``--torch_compile``, compiled (``compiled``), and should call that for the trained forward.
    ``evaluate(global_step) -> dict`` runs every ``--eval_steps`` steps with
    ``--evaluate_during_training``. ``extra_components`` are saved in and restored from
    checkpoints with the optimizer (a method's second model or optimizer).
    ``optimizer`` defaults to ``make_optimizer(model, args)``.
    """
    model.to(runtime.device)
    model.train()
    optimizer = optimizer or make_optimizer(model, args)
    steps_per_epoch, total_steps, num_epochs = planned_steps(len(train_dataset), args, runtime)
    warmup = args.warmup_steps or math.ceil(args.warmup_ratio * total_steps)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=warmup,
                              num_training_steps=total_steps)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
    components = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, **(extra_components or {})}

    position = Position()
    if resume_from is not None:
        position = load_checkpoint(resume_from, model, components, runtime)
    ddp_model = model
    if runtime.distributed:
        ddp_model = DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    forward_model = compiled(ddp_model, args)

    writer = None
    if runtime.is_main and args.report_to == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(checkpoint_dir(args) / "runs"))
    logger.info("training on %s (mixed precision: %s): %d examples, %d epochs, %d optimizer steps (%d per epoch), "
                "batch %d x %d process(es) x %d accumulation", runtime.device, runtime.amp_dtype, len(train_dataset),
                num_epochs, total_steps, steps_per_epoch, args.per_device_train_batch_size, runtime.world_size,
                args.gradient_accumulation_steps)
    progress = tqdm(total=total_steps, initial=position.global_step, desc="training",
                    disable=not runtime.is_main or args.disable_tqdm, dynamic_ncols=True)
    logged = _RunningSums(runtime.device)
    total_loss, total_count = 0.0, 0
    accumulation = args.gradient_accumulation_steps

    lengths = example_lengths(train_dataset) if args.group_by_length else None
    while position.global_step < total_steps and position.epoch < num_epochs:
        plan = epoch_batches(len(train_dataset), args.per_device_train_batch_size, seed=args.seed,
                             epoch=position.epoch, world_size=runtime.world_size, rank=runtime.rank,
                             lengths=lengths)
        # A generator of its own: creating the iterator then draws nothing from the global RNG,
        # whose state (dropout, sub-teacher masks) checkpoints restore exactly.
        loader = DataLoader(train_dataset, batch_sampler=plan[position.batches_done:], collate_fn=collate_fn,
                            num_workers=args.dataloader_num_workers, pin_memory=runtime.device.type == "cuda",
                            generator=torch.Generator())
        for batch_index, batch in enumerate(loader, start=position.batches_done):
            batch = move_to_device(batch, runtime.device)
            updates = (batch_index + 1) % accumulation == 0 or batch_index + 1 == len(plan)
            sync = contextlib.nullcontext() if updates or not runtime.distributed else ddp_model.no_sync()
            with sync, compile_errors_explained(args):
                with runtime.autocast():
                    loss, terms = compute_loss(forward_model, batch)
                scaler.scale(loss / accumulation).backward()
            logged.add(loss.detach(), terms)
            position.batches_done = batch_index + 1
            if not updates:
                continue
            if args.max_grad_norm and args.max_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            position.global_step += 1
            if position.batches_done == len(plan):
                position.epoch, position.batches_done = position.epoch + 1, 0
            progress.update(1)

            step = position.global_step
            if step % args.logging_steps == 0 or step == total_steps or (args.save_steps and step % args.save_steps == 0):
                means, count = logged.pop_means(step)
                total_loss += means["loss"] * count
                total_count += count
                progress.set_postfix(loss=f"{means['loss']:.4f}")
                if writer is not None:
                    writer.add_scalar("train/learning_rate", scheduler.get_last_lr()[0], step)
                    for name, value in means.items():
                        writer.add_scalar(f"train/{name}", value, step)
            elif step % 10 == 0 and not progress.disable:
                progress.set_postfix(loss=f"{logged.peek_loss():.4f}")
            if evaluate is not None and args.evaluate_during_training and step % args.eval_steps == 0:
                metrics = evaluate(step)
                model.train()
                if writer is not None:
                    for name, value in metrics.items():
                        writer.add_scalar(f"eval/{name}", value, step)
            if args.save_steps and args.save_steps > 0 and step % args.save_steps == 0 and step < total_steps:
                save_checkpoint(checkpoint_dir(args), position, model, tokenizer, components, runtime,
                                args.save_total_limit)
            if step >= total_steps:
                break
    progress.close()
    if writer is not None:
        writer.close()
    return TrainResult(global_step=position.global_step,
                       train_loss=total_loss / total_count if total_count else float("nan"))


class _RunningSums:
    """Sums of the loss and its terms on the device, read (one synchronisation) when logged."""

    def __init__(self, device):
        self.device = device
        self.sums = {}
        self.count = 0

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
        loss stops training with a clear error."""
        means = {name: value.item() / max(self.count, 1) for name, value in self.sums.items()}
        if not math.isfinite(means.get("loss", 0.0)):
            raise NonFiniteLossError(
                f"the training loss became {means['loss']} between steps {step - self.count + 1} and {step}; "
                "stopped before saving anything from this point (lower the learning rate, or use --bf16 "
                "instead of --fp16)")
        count = self.count
        self.sums, self.count = {}, 0
        return means, count


def save_trained(model, tokenizer, output_dir, runtime, what="model", result=None):
    """``save_pretrained`` of the model and its tokenizer in ``output_dir`` (first process only);
    with a ``TrainResult``, log where it went and the mean training loss."""
    if not runtime.is_main:
        return
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    if result is not None:
        logger.info("saved the %s to %s (train loss %.4f)", what, output_dir, result.train_loss)


def write_json(path, values):
    Path(path).write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
