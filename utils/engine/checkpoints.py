"""Checkpoints a run resumes from exactly: weights, optimizer, scheduler and the method's other
components, the position in the epoch, and every process's random-number generator states.

Each ``checkpoint-<step>`` folder is written into a temporary ``.checkpoint-<step>.partial``
folder, with a manifest of its files (sizes and SHA-256 hashes) written last, and renamed when
complete; a resume verifies the manifest (``verify_checkpoint``). A disk that fills up is said in
one line (``DiskFull``) and leaves nothing half-written behind.
"""

import contextlib
import errno
import hashlib
import json
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
# a checkpoint, or a saved model (utils.engine.runtime.save_trained), still being written
PARTIAL_PATTERN = re.compile(r"^\.(checkpoint-\d+|model)\.partial$")
TRAINING_STATE = "training_state.pt"
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"


class DiskFull(UserError):
    """A write ran out of disk space (or quota)."""

    def __init__(self, folder, what, needed, free):
        super().__init__(f"no space left on the disk of {folder} for {what}: it needs about {_readable(needed)}, "
                         f"{_readable(free)} {'is' if free < 2**30 else 'are'} free; nothing of it was kept and "
                         "earlier checkpoints are untouched: free space (or give another --output_dir) and run the "
                         "same command again")


def _readable(size):
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000


def tensor_bytes(value):
    """The bytes of the tensors in ``value`` (nested dicts, lists and tuples of them), about what
    saving it writes."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(item) for item in value)
    return 0


def free_bytes(folder):
    """Free space on the file system of ``folder`` (or of its nearest existing parent)."""
    folder = Path(folder).absolute()
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    return shutil.disk_usage(existing).free


def _is_disk_full(error, folder, needed):
    """Whether a failed write ran out of space: its errno or message says so, or torch's words for
    a failed write ("unexpected pos", "file write failed") with less free space than it needed."""
    text = str(error)
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text:
        return True
    if "Disk quota exceeded" in text:
        return True
    return ("unexpected pos" in text or "file write failed" in text) and free_bytes(folder) < needed


@contextlib.contextmanager
def disk_full_explained(folder, what, needed, cleanup=None):
    """Refuse to start writing ``what`` (about ``needed`` bytes) into ``folder`` when the disk has
    less free, and turn a write that runs out of space (torch's and safetensors' errors say so in
    their own words) into a ``DiskFull``; ``cleanup`` (a folder) is removed then."""
    margin = needed // 20 + 2**20  # the tokenizer, the config, the file systems' blocks
    if free_bytes(folder) < needed + margin:
        raise DiskFull(folder, what, needed + margin, free_bytes(folder))
    try:
        yield
    except Exception as error:
        # whether the disk is full is measured before the partial folder is removed
        full = ((isinstance(error, (OSError, RuntimeError)) or type(error).__name__ == "SafetensorError")
                and _is_disk_full(error, folder, needed + margin))
        free = free_bytes(folder) if full else None
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        if full:
            raise DiskFull(folder, what, needed + margin, free) from error
        raise


def file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(2**22):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder, world_size=1):
    """``manifest.json``: every file of ``folder`` with its size and SHA-256, written last; the RNG
    states of all ``world_size`` processes must be there."""
    missing = [f"rng_state_{rank}.pt" for rank in range(world_size) if not (Path(folder) / f"rng_state_{rank}.pt").is_file()]
    if missing:
        raise RuntimeError(f"checkpoint {folder}: no {', '.join(missing)} after every process saved its RNG states")
    files = {path.name: {"bytes": path.stat().st_size, "sha256": file_digest(path)}
             for path in sorted(Path(folder).iterdir()) if path.is_file() and path.name != MANIFEST}
    (Path(folder) / MANIFEST).write_text(json.dumps({"files": files}, indent=1, sort_keys=True) + "\n")


def verify_checkpoint(checkpoint, ranks=(0,), hashes=True):
    """None when ``checkpoint`` is whole for the processes ``ranks``, else why not (one phrase):
    its manifest's files all there, of their sizes and (``hashes``) hashes; the weights, the
    training state and those processes' RNG states among them. A checkpoint of a version without
    manifests is checked for those files."""
    checkpoint = Path(checkpoint)
    needed = (WEIGHTS, TRAINING_STATE, *(f"rng_state_{rank}.pt" for rank in ranks))
    manifest = checkpoint / MANIFEST
    if not manifest.is_file():
        missing = [name for name in needed
                   if not (checkpoint / name).is_file() or not (checkpoint / name).stat().st_size]
        return f"{', '.join(missing)} missing or empty" if missing else None
    try:
        files = json.loads(manifest.read_text())["files"]
        expected = {name: (int(entry["bytes"]), str(entry["sha256"])) for name, entry in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"its {MANIFEST} is damaged"
    lacking = [name for name in needed if name not in expected]
    if lacking:
        fewer = all(name.startswith("rng_state_") for name in lacking)
        return f"it has no {', '.join(lacking)}" + (" (written by fewer processes than this run has)" if fewer else "")
    for name, (size, digest) in expected.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, not {size}"
        if hashes and file_digest(path) != digest:
            return f"{name} does not match its hash"
    return None


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
    """Write ``checkpoint-<step>`` atomically: into ``.checkpoint-<step>.partial``, its manifest
    last, then renamed; then the oldest checkpoints beyond ``save_total_limit`` are removed.

    ``components`` maps names to objects with ``state_dict()`` (optimizer, scheduler, any extra
    model or optimizer of the method). Each process stores its own RNG states. A disk without
    room for it is a ``DiskFull`` before anything is written (or when a write fails for that),
    with the partial folder removed.
    """
    final = Path(output_dir) / f"checkpoint-{position.global_step}"
    partial = Path(output_dir) / f".checkpoint-{position.global_step}.partial"
    what = f"checkpoint-{position.global_step}"
    if runtime.is_main:
        shutil.rmtree(partial, ignore_errors=True)
        state = {"position": asdict(position),
                 "components": {name: item.state_dict() for name, item in components.items()}}
        needed = tensor_bytes(unwrap(model).state_dict()) + tensor_bytes(state)
        with disk_full_explained(output_dir, what, needed, cleanup=partial):
            partial.mkdir(parents=True)
            unwrap(model).save_pretrained(partial)
            if tokenizer is not None:
                tokenizer.save_pretrained(partial)
            torch.save(state, partial / TRAINING_STATE)
    runtime.barrier()
    with disk_full_explained(output_dir, what, 2**16, cleanup=partial if runtime.is_main else None):
        torch.save(rng_states(), partial / f"rng_state_{runtime.rank}.pt")
    runtime.barrier()
    if runtime.is_main:
        with disk_full_explained(output_dir, what, 2**16, cleanup=partial):
            write_manifest(partial, runtime.world_size)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        if save_total_limit and save_total_limit > 0:
            for old in checkpoints_in(output_dir)[:-save_total_limit]:
                shutil.rmtree(old)
        logger.info("saved %s", final)
    runtime.barrier()


def load_checkpoint(checkpoint, model, components, runtime):
    """Restore what ``save_checkpoint`` wrote; return the ``Position`` to continue from. The
    checkpoint's files must be there with their manifest's sizes (a UserError naming it otherwise);
    their hashes are ``utils.engine.runtime.prepare_output_dir``'s check, made before."""
    from safetensors.torch import load_file

    problem = verify_checkpoint(checkpoint, (runtime.rank,), hashes=False)
    if problem is not None:
        raise UserError(f"checkpoint {checkpoint} is damaged ({problem}): resume from another one "
                        "(--resume_from_checkpoint), or pass --overwrite_output_dir to start again")
    weights = load_file(str(Path(checkpoint) / WEIGHTS), device=str(runtime.device))
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
    restore_rng_states(torch.load(Path(checkpoint) / f"rng_state_{runtime.rank}.pt", weights_only=False))
    logger.info("resumed from %s", checkpoint)
    return Position(**state["position"])


def _is_tied(model, name):
    """Whether a parameter left out of a safetensors file is one tied to another (shared storage)."""
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    return name in tied
