"""Checkpoints a run resumes from exactly: weights, optimizer, scheduler and the method's other
components, the position in the epoch, and every process's random-number generator states.

Each ``checkpoint-<step>`` folder is written atomically (a temporary folder renamed when complete).
"""

import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from utils.engine.errors import UserError

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINING_STATE = "training_state.pt"


def checkpoints_in(output_dir):
    """The ``checkpoint-N`` folders of ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in output_dir.iterdir()
             if path.is_dir() and (m := CHECKPOINT_PATTERN.match(path.name))]
    return [path for _, path in sorted(found)]


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
        if name not in state["components"]:
            # a component this version adds (e.g. the float16 scaler of ProKT's teacher): starts afresh
            logger.warning("checkpoint %s has no %s (written by an earlier version): it starts afresh", checkpoint, name)
            continue
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
