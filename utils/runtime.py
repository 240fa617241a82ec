"""Where a run computes and where it writes.

The runtime of a process (device: CUDA, else MPS, else CPU; torch.distributed data parallel when
launched by torchrun; mixed precision), the start every script makes (output folders checked
before any work, the seed set), and the folders and files a run writes its results to.
"""

import contextlib
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import transformers

from utils.checkpoints import TRAINING_STATE, checkpoints_in
from utils.errors import UserError

logger = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------- output folders


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
