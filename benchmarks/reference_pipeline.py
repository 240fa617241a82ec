"""The released code's pipeline choices, as the baseline of ``benchmarks/run_all.py``.

REFERENCE.md sections 1 and 2: every batch padded to 128 tokens and drawn at random (no length
grouping), float32 throughout, the token rows of the hidden states taken with ``masked_select``,
the frozen teacher run on every step, plain (not fused) AdamW, and the LGTM teacher gradient
computed with a deep copy of the student per step (``released_lgtm_teacher_grads`` of
``benchmarks/lgtm_step.py``, re-exported here).

Only the choices that cost time or memory are reproduced; the numbers computed are the ones the
project computes (tests/test_lgtm.py checks ``released_lgtm_teacher_grads`` against
``utils.lgtm.lgtm_teacher_grads``).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lgtm_step import released_lgtm_teacher_grads  # noqa: E402,F401
from utils.features import PadCollator  # noqa: E402

MAX_SEQ_LENGTH = 128


def reference_collator(pad_token_id, max_length=MAX_SEQ_LENGTH):
    """Every batch padded to ``max_length`` (the released ``--pad_to_max_length`` behaviour)."""
    return PadCollator({"": pad_token_id}, max_length, pad_to_max_length=True)


def reference_optimizer(parameters, lr):
    """AdamW as the released scripts build it: no weight decay here, not fused."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)


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
