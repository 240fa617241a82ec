"""``--cache_teacher``: the frozen teacher's outputs, computed once per training example before
training, stored in 16 bits and looked up in every epoch instead of running the teacher.

What is stored is what the loss reads: the logits and, when a feature loss is on, the last
hidden states of each example's real tokens (the rows where ``attention_mask == 1``, which do
not depend on how a batch is padded), example ``i`` in rows ``offsets[i]:offsets[i + 1]`` of one
``(real tokens, d)`` table. The logits are one ``(N, C)`` row per example (sequence
classification), or per token (SQuAD's start and end logits), then stored like the hidden
states, in rows of a ``(kept positions, C)`` table: at the real tokens, or at every position of
windows padded to a fixed length, whose padding the released span loss reads too. The tables
hold the 16-bit patterns as numpy ``int16`` (numpy has no bfloat16), in memory or memory-mapped
from a file. A training batch finds its rows by the ``example_index`` its features carry,
whatever its composition (shuffling, ``--group_by_length``, resuming).
"""

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from utils.engine.cli import add_flag, bounded, neutral
from utils.engine.errors import UserError
from utils.engine.runtime import checkpoint_dir, move_to_device
from utils.methods.teacher import TeacherOutputs

logger = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
GB = 1e9


def add_teacher_cache_args(parser):
    group = parser.add_argument_group("teacher cache")
    add_flag(group, "--cache_teacher",
             help="compute the frozen teacher's logits (and last hidden states of the real tokens, for the "
                  "feature losses) once per training example before training, in 16 bits, and reuse them in "
                  "every epoch instead of running the teacher")
    group.add_argument("--cache_teacher_dtype", choices=sorted(DTYPES), default="float16",
                       help="storage type of the cache: float16 (default; 11 significant bits) or bfloat16 (8 "
                            "bits, float32's range: for a teacher whose outputs exceed 65504)")
    neutral(group.add_argument("--cache_teacher_dir", default=None,
                               help="memory-map the cache from files in this folder instead of holding it in memory"))
    neutral(group.add_argument("--cache_teacher_max_memory_gb", type=bounded(float, at_least=0), default=4.0,
                               help="a cache larger than this is memory-mapped from <checkpoint dir>/teacher_cache "
                                    "(default 4)"))
    return group


def check_teacher_cache_args(args):
    if args.cache_teacher_dir and not args.cache_teacher:
        raise UserError("--cache_teacher_dir needs --cache_teacher")


def with_example_index(features):
    """Copies of the per-example feature dicts with their position as ``example_index`` (the
    collator makes it a long tensor; ``model_inputs`` never passes it to a model)."""
    return [dict(feature, example_index=index) for index, feature in enumerate(features)]


class TeacherCache:
    """``cache(batch) -> TeacherOutputs``, float32 on the batch's device, like the teacher
    function it was filled from; ``hidden`` is ``(B, T, d)`` with the cached rows at the real
    tokens and zeros at padding (which the losses never read); ``patience`` the ``(B, M, d)``
    [CLS] states of the layers PKD maps.

    Per-token logits (``logit_offsets`` set) come back as ``(B, T, C)`` with the cached values at
    the kept positions and zeros elsewhere (padding, which the caller masks); the kept positions
    are the real tokens, or, with ``padded_length``, all positions of batches padded to it.
    """

    def __init__(self, logits, hidden, offsets, dtype, logit_offsets=None, padded_length=None, patience=None,
                 patience_shape=None):
        self.logits = logits
        self.hidden = hidden
        self.patience, self.patience_shape = patience, patience_shape
        self.offsets = offsets
        self.dtype = dtype
        self.logit_offsets = logit_offsets
        self.padded_length = padded_length

    def __len__(self):
        return len(self.logits) if self.logit_offsets is None else len(self.logit_offsets) - 1

    def __call__(self, batch):
        indices = batch["example_index"].tolist()
        mask = batch["attention_mask"].bool()
        if self.logit_offsets is None:
            logits = self._values(self.logits[indices], mask.device)
        else:
            logits = self._gather(self.logits, self.logit_offsets, indices, self.logit_positions(batch))
        hidden = None if self.hidden is None else self._gather(self.hidden, self.offsets, indices, mask)
        patience = None
        if self.patience is not None:
            patience = self._values(self.patience[indices], mask.device).view(len(indices), *self.patience_shape)
        return TeacherOutputs(logits=logits, hidden=hidden, patience=patience)

    def logit_positions(self, batch):
        """``(B, T)`` bool: the positions whose per-token logits are cached."""
        mask = batch["attention_mask"].bool()
        if self.padded_length is None:
            return mask
        if mask.shape[1] != self.padded_length:
            raise RuntimeError(f"teacher cache: a batch of {mask.shape[1]} positions, but the logits are cached at "
                               f"all {self.padded_length} positions of windows padded to that length (the collator "
                               "must pad every batch to it)")
        return torch.ones_like(mask)

    def _gather(self, table, offsets, indices, positions):
        """``(B, T, width)``: the cached rows of the examples ``indices`` at ``positions``, zeros elsewhere."""
        rows = np.concatenate([table[offsets[i]:offsets[i + 1]] for i in indices])
        if len(rows) != int(positions.sum()):
            raise RuntimeError(f"teacher cache: {len(rows)} cached rows for {int(positions.sum())} positions of "
                               "the batch (the features changed after the cache was filled)")
        values = torch.zeros(*positions.shape, rows.shape[-1], device=positions.device)
        values[positions] = self._values(rows, positions.device)
        return values

    def _values(self, bits, device):
        """The 16-bit patterns ``bits`` as float32 on ``device``: moved in 16 bits (half the bytes
        of float32 over the bus to a GPU), widened there."""
        return torch.from_numpy(np.ascontiguousarray(bits)).view(self.dtype).to(device).float()

    @classmethod
    def fill(cls, args, runtime, teacher, teacher_outputs, dataset, collate_fn, *, num_logits, hidden_width=None,
             logits_per_token=False, padded_length=None, patience_shape=None):
        """Run ``teacher_outputs(batch) -> TeacherOutputs`` once over ``dataset`` (batches of
        ``--per_device_eval_batch_size``, longest examples first, no gradients, under the run's
        mixed precision as in training) and store its outputs; ``hidden_width`` None: no hidden
        states; ``patience_shape`` (M, d), or None: no [CLS] states. Every process fills the cache
        for the whole dataset.

        The logits are ``(B, C)``, or with ``logits_per_token`` ``(B, T, C)``, kept at the real
        tokens or, with ``padded_length``, at all positions of batches that ``collate_fn`` pads to
        that length (``--pad_to_max_length``: the released span loss reads the padding's logits).
        """
        if teacher.training or any(parameter.requires_grad for parameter in teacher.parameters()):
            raise UserError("--cache_teacher needs a frozen teacher (eval mode, no gradients): a teacher that "
                            "trains or draws dropout gives other outputs in every epoch")
        if len(dataset) == 0:
            raise UserError("the training set is empty")
        if padded_length is not None and not logits_per_token:
            raise ValueError("padded_length keeps per-token logits: it needs logits_per_token")
        dtype = DTYPES[args.cache_teacher_dtype]
        lengths = [len(feature["input_ids"]) for feature in dataset]
        offsets = _offsets(lengths) if hidden_width else None
        logit_offsets = None
        if logits_per_token:
            logit_offsets = _offsets([padded_length] * len(dataset) if padded_length else lengths)
        tokens = int(offsets[-1]) if hidden_width else 0
        logit_rows = len(dataset) if logit_offsets is None else int(logit_offsets[-1])
        patience_width = patience_shape[0] * patience_shape[1] if patience_shape else 0
        size = 2 * (logit_rows * num_logits + tokens * (hidden_width or 0) + len(dataset) * patience_width)
        folder = cache_folder(args, size)
        logger.info("teacher cache: %s examples, %s real tokens, %s in %s, %s", f"{len(dataset):,}",
                    f"{tokens:,}", _readable(size), args.cache_teacher_dtype,
                    "in memory" if folder is None else f"memory-mapped in {folder}")
        logits = _table(folder, "logits", (logit_rows, num_logits))
        hidden = _table(folder, "hidden", (tokens, hidden_width)) if hidden_width else None
        patience = _table(folder, "patience", (len(dataset), patience_width)) if patience_shape else None
        cache = cls(logits, hidden, offsets, dtype, logit_offsets, padded_length, patience, patience_shape)

        order = sorted(range(len(dataset)), key=lambda i: -lengths[i])
        batch_size = args.per_device_eval_batch_size
        batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        # A generator of its own: filling draws nothing from the global RNG, so training draws
        # the same dropout and sub-teacher masks with and without the cache.
        loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn,
                            pin_memory=runtime.device.type == "cuda", generator=torch.Generator())
        with torch.no_grad():
            for indices, batch in zip(batches, tqdm(loader, desc="caching the teacher", leave=False,
                                                     disable=None if runtime.is_main else True)):
                batch = move_to_device(batch, runtime.device)
                with runtime.autocast():
                    outputs = teacher_outputs(batch)
                if logit_offsets is None:
                    logits[indices] = _bits(outputs.logits, dtype)
                else:
                    kept = cache.logit_positions(batch)
                    _write_rows(logits, logit_offsets, indices, _bits(outputs.logits[kept], dtype))
                if hidden is not None:
                    _write_rows(hidden, offsets, indices, _bits(outputs.hidden[batch["attention_mask"].bool()], dtype))
                if patience is not None:
                    patience[indices] = _bits(outputs.patience.flatten(1), dtype)
        return cache


def cache_folder(args, size):
    """Where the cache is memory-mapped: ``--cache_teacher_dir``, else ``<checkpoint dir>/teacher_cache``
    for a cache above ``--cache_teacher_max_memory_gb``; None: in memory."""
    if args.cache_teacher_dir:
        return Path(args.cache_teacher_dir)
    if size > args.cache_teacher_max_memory_gb * GB:
        return checkpoint_dir(args) / "teacher_cache"
    return None


def _table(folder, name, shape):
    """An int16 table of ``shape``: in memory, or memory-mapped from a new file in ``folder``.

    The file is removed as soon as it is mapped (POSIX keeps the data until the mapping is
    closed), so that no cache is left behind, whatever way the run ends."""
    if folder is None:
        return np.empty(shape, dtype=np.int16)
    folder.mkdir(parents=True, exist_ok=True)
    handle, path = tempfile.mkstemp(prefix=f"teacher_{name}_", suffix=".bin", dir=folder)
    os.close(handle)
    table = np.memmap(path, dtype=np.int16, mode="w+", shape=shape)
    try:
        os.unlink(path)
    except OSError:  # Windows cannot remove a mapped file
        logger.warning("teacher cache: could not remove %s; delete it after the run", path)
    return table


def _write_rows(table, offsets, indices, rows):
    """Write ``rows`` (int16: the kept positions of the examples ``indices``, in batch order) to
    those examples' rows ``offsets[i]:offsets[i + 1]`` of ``table``."""
    counts = [int(offsets[i + 1] - offsets[i]) for i in indices]
    if sum(counts) != len(rows):
        raise RuntimeError(f"teacher cache: {len(rows)} rows for examples of {sum(counts)} kept positions "
                           "(the attention mask is not one per input id)")
    for i, count, end in zip(indices, counts, np.cumsum(counts)):
        table[offsets[i]:offsets[i + 1]] = rows[end - count:end]


def _offsets(counts):
    """``[0, c0, c0 + c1, ...]``: where each example's rows start in a table, and the end."""
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _bits(values, dtype):
    """``values`` rounded to ``dtype``, as int16 bit patterns on the CPU."""
    if not torch.isfinite(values).all():
        raise UserError("the teacher's outputs are not finite (NaN or infinite); check the teacher")
    stored = values.to(dtype)
    if not torch.isfinite(stored).all():
        raise UserError(f"the teacher's outputs (largest magnitude {values.abs().max().item():.3g}) do not fit in "
                        f"{dtype}: use --cache_teacher_dtype bfloat16")
    return stored.cpu().view(torch.int16).numpy()


def _readable(size):
    if size >= GB:
        return f"{size / GB:.1f} GB"
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"
