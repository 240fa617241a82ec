"""Feature (hidden-state) losses between student and teacher token rows."""

import torch
import torch.nn.functional as F


def token_rows(hidden, attention_mask):
    """Rows of ``hidden`` (B, T, d) at real tokens (``attention_mask == 1``), as (N, d)."""
    return hidden[attention_mask.bool()]


def _check_widths(z_s, z_t):
    if z_s.shape != z_t.shape:
        raise ValueError(
            f"student features {tuple(z_s.shape)} and teacher features {tuple(z_t.shape)} "
            "differ in shape: feature losses need the same tokens and the same hidden width"
        )


def standardize_columns(z):
    """``(z - mean_0 z) / std_0 z`` with Bessel's correction (divide by N - 1).

    A column with zero variance (a constant column, or N = 1) becomes all zeros instead of
    NaN; every other column is exactly the released code's standardisation (no epsilon).
    """
    centred = z - z.mean(dim=0, keepdim=True)
    variance = centred.square().sum(dim=0, keepdim=True) / max(z.shape[0] - 1, 1)
    safe_variance = torch.where(variance > 0, variance, torch.ones_like(variance))
    return centred / safe_variance.sqrt()


def cross_correlation_loss(z_s, z_t, *, off_diagonal_weight=5e-3, normalizer="elements", dims=None):
    """One-to-one mapping loss between student rows ``z_s`` and teacher rows ``z_t`` (N, d).

    ``C = standardize(z_s)^T standardize(z_t) / D`` and
    ``L = sum_i (C_ii - 1)^2 + off_diagonal_weight * sum_{i != j} C_ij^2``,
    with ``D = N * d`` for ``normalizer="elements"`` (the released code) or ``D = N`` for
    ``"tokens"`` (Barlow Twins). ``dims`` is an optional bool mask (d,) of kept columns (the
    specialised sub-teacher); ``D`` still uses the full width ``d``.
    """
    _check_widths(z_s, z_t)
    num_rows, width = z_s.shape
    if normalizer == "elements":
        denominator = num_rows * width
    elif normalizer == "tokens":
        denominator = num_rows
    else:
        raise ValueError(f"normalizer must be 'elements' or 'tokens', not {normalizer!r}")
    student = standardize_columns(z_s.float())
    teacher = standardize_columns(z_t.float())
    if dims is not None:
        student, teacher = student[:, dims], teacher[:, dims]
    correlation = student.T @ teacher / max(denominator, 1)
    diagonal = torch.diagonal(correlation)
    on_diagonal = (diagonal - 1).square().sum()
    off_diagonal = correlation.square().sum() - diagonal.square().sum()
    return on_diagonal + off_diagonal_weight * off_diagonal


def sub_teacher_mask(d, p=0.5, generator=None, device=None):
    """Bool mask (d,) keeping each feature dimension independently with probability ``1 - p``.

    Drawn on the CPU (from ``generator`` or the global RNG, so runs resume exactly) and then
    moved to ``device``.
    """
    return (torch.rand(d, generator=generator) >= p).to(device)


def hidden_mse_loss(z_s, z_t):
    """``mean((z_s - z_t)^2)`` over all elements; 0 when there are none (a sub-teacher mask
    that dropped every column), not NaN."""
    _check_widths(z_s, z_t)
    if z_s.numel() == 0:
        return z_s.float().sum() * 0
    return F.mse_loss(z_s.float(), z_t.float())


def hidden_cosine_loss(z_s, z_t):
    """``mean_rows(1 - cos(z_s[n], z_t[n]))``; a zero row counts as cosine 0, not NaN."""
    _check_widths(z_s, z_t)
    if z_s.shape[0] == 0:
        return z_s.float().sum() * 0
    cosine = F.cosine_similarity(z_s.float(), z_t.float(), dim=-1)
    return (1 - cosine).mean()


def patient_loss(student_cls, teacher_cls):
    """Patient Knowledge Distillation's hidden-state term (Sun et al., "Patient Knowledge
    Distillation for BERT Model Compression", EMNLP 2019), as its authors compute it:

        L_PT = mean_{b, j, k} (s_bj / ||s_bj||_2 - t_bj / ||t_bj||_2)_k^2

    ``student_cls`` s and ``teacher_cls`` t (B, M, d): the [CLS] (first-token) hidden states of
    the M mapped layers, student layer j against its teacher layer I(j). The mean over batch,
    layers and width is the paper's ``sum_j || . ||_2^2`` divided by B * M * d, which is why PKD's
    beta is large. A zero vector normalises to zero (its term is ``||t / ||t|| ||^2 / d``), not NaN.
    """
    _check_widths(student_cls, teacher_cls)
    if student_cls.numel() == 0:
        return student_cls.float().sum() * 0
    student = F.normalize(student_cls.float(), p=2, dim=-1)
    teacher = F.normalize(teacher_cls.float(), p=2, dim=-1)
    return F.mse_loss(student, teacher)
