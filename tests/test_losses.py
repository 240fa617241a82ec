"""The losses against hand-worked values and independent formulas."""

import math

import numpy as np
import pytest
import torch

from losses import (
    OneToOneLoss,
    cross_correlation_loss,
    hidden_cosine_loss,
    hidden_mse_loss,
    kd_loss,
    lgtm_kd_loss,
    sub_teacher_mask,
    token_rows,
)

LAMBDA = 5e-3
# Columns a = [1, 2, 3] (standardised: [-1, 0, 1]) and b = [0, 0, 3] (mean 1, variance 3,
# standardised: [-1, -1, 2] / sqrt 3). With z_s = z_t, N = 3, d = 2, D = N * d = 6:
# C_aa = 2/6 = 1/3, C_bb = 6/3/6 = 1/3, C_ab = C_ba = (1 + 0 + 2)/sqrt(3)/6 = 1/(2 sqrt 3).
HAND = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 3.0]])


def numpy_cross_correlation(z_s, z_t, off_diagonal_weight, denominator, keep=None):
    """Independent formula: Pearson correlations rescaled from (N - 1) to the chosen denominator."""
    z_s, z_t = np.asarray(z_s, dtype=np.float64), np.asarray(z_t, dtype=np.float64)
    n, d = z_s.shape
    correlation = np.corrcoef(z_s.T, z_t.T)[:d, d:] * (n - 1) / denominator
    if keep is not None:
        correlation = correlation[np.ix_(keep, keep)]
    diagonal = np.diag(correlation)
    return ((diagonal - 1) ** 2).sum() + off_diagonal_weight * ((correlation**2).sum() - (diagonal**2).sum())


def test_cross_correlation_hand_worked_released_normaliser():
    expected = 2 * (1 / 3 - 1) ** 2 + LAMBDA * 2 * (1 / (2 * math.sqrt(3))) ** 2  # = 8/9 + lambda/6
    assert cross_correlation_loss(HAND, HAND).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(8 / 9 + LAMBDA / 6)


def test_cross_correlation_tokens_normaliser():
    # D = N = 3: C_aa = C_bb = 2/3, C_ab = 1/sqrt(3)
    expected = 2 * (2 / 3 - 1) ** 2 + LAMBDA * 2 * (1 / 3)
    assert cross_correlation_loss(HAND, HAND, normalizer="tokens").item() == pytest.approx(expected, rel=1e-6)


def test_cross_correlation_sub_teacher_keeps_full_width_normaliser():
    keep = torch.tensor([True, False])
    # only C_aa = 1/3 remains, still divided by N * d = 6
    assert cross_correlation_loss(HAND, HAND, dims=keep).item() == pytest.approx((1 / 3 - 1) ** 2, rel=1e-6)


@pytest.mark.parametrize("normalizer", ["elements", "tokens"])
def test_cross_correlation_matches_independent_formula(normalizer):
    generator = torch.Generator().manual_seed(0)
    z_s = torch.randn(37, 8, generator=generator)
    z_t = 0.5 * z_s + torch.randn(37, 8, generator=generator)
    keep = sub_teacher_mask(8, generator=torch.Generator().manual_seed(3))
    denominator = 37 * 8 if normalizer == "elements" else 37
    for dims in (None, keep):
        expected = numpy_cross_correlation(z_s, z_t, 0.01, denominator, None if dims is None else dims.numpy())
        actual = cross_correlation_loss(z_s, z_t, off_diagonal_weight=0.01, normalizer=normalizer, dims=dims)
        assert actual.item() == pytest.approx(expected, rel=1e-5)


def test_constant_column_and_single_row_give_no_nan():
    z_s = torch.randn(5, 4, requires_grad=True)
    z_t = torch.randn(5, 4)
    z_t[:, 1] = 7.0
    loss = cross_correlation_loss(z_s, z_t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z_s.grad).all()
    single = torch.randn(1, 4, requires_grad=True)
    loss = cross_correlation_loss(single, torch.randn(1, 4))
    loss.backward()
    # every column is constant: C = 0, so the loss is d * (0 - 1)^2
    assert loss.item() == pytest.approx(4.0)
    assert torch.isfinite(single.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_compute_in_float32(dtype):
    generator = torch.Generator().manual_seed(1)
    z_s, z_t = torch.randn(20, 6, generator=generator), torch.randn(20, 6, generator=generator)
    for loss_fn in (cross_correlation_loss, hidden_mse_loss, hidden_cosine_loss):
        reference = loss_fn(z_s.to(dtype).float(), z_t.to(dtype).float())
        half = loss_fn(z_s.to(dtype), z_t.to(dtype))
        assert half.dtype == torch.float32
        assert half.item() == pytest.approx(reference.item(), rel=1e-5)
    logits = torch.randn(4, 3, generator=generator)
    assert kd_loss(logits.to(dtype), logits.flip(0).to(dtype), 2.0).dtype == torch.float32


def test_width_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3, 5\)"):
        cross_correlation_loss(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3, 5\)"):
        hidden_mse_loss(torch.zeros(3, 4), torch.zeros(3, 5))


def test_token_rows_excludes_padding():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert token_rows(hidden, mask).tolist() == [[0, 1], [2, 3], [6, 7]]


def test_padding_does_not_change_feature_losses():
    generator = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(2, 5, 4, generator=generator), torch.randn(2, 5, 4, generator=generator)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    garbage_student, garbage_teacher = student.clone(), teacher.clone()
    garbage_student[0, 3:] = 1e4
    garbage_teacher[0, 3:] = -1e4
    for loss_fn in (cross_correlation_loss, hidden_mse_loss, hidden_cosine_loss):
        clean = loss_fn(token_rows(student, mask), token_rows(teacher, mask))
        noisy = loss_fn(token_rows(garbage_student, mask), token_rows(garbage_teacher, mask))
        assert clean.item() == pytest.approx(noisy.item())


def test_mse_and_cosine_hand_worked():
    z_s = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    z_t = torch.tensor([[0.0, 1.0], [6.0, 8.0]])
    assert hidden_mse_loss(z_s, z_t).item() == pytest.approx((1 + 1 + 9 + 16) / 4)
    # orthogonal rows: 1 - 0; parallel rows: 1 - 1
    assert hidden_cosine_loss(z_s, z_t).item() == pytest.approx(0.5)
    assert torch.isfinite(hidden_cosine_loss(torch.zeros(2, 2), z_t))


def test_kd_loss_hand_worked_with_temperature():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    # T = 1: p_t = (3/4, 1/4), p_s = (1/2, 1/2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(kl, rel=1e-6)
    assert lgtm_kd_loss(student, teacher, 1.0).item() == pytest.approx(kl, rel=1e-6)
    # T = 2: p_t = (sqrt3, 1) / (sqrt3 + 1); kd carries T^2 = 4, LGTM's does not
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl2 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert kd_loss(student, teacher, 2.0).item() == pytest.approx(4 * kl2, rel=1e-6)
    assert lgtm_kd_loss(student, teacher, 2.0).item() == pytest.approx(kl2, rel=1e-6)


def test_kd_loss_is_batch_mean():
    student = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    single = kd_loss(student[:1], teacher[:1], 1.0).item()
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(single / 2, rel=1e-6)


def test_sub_teacher_mask_probability_and_reproducibility():
    mask = sub_teacher_mask(20000, p=0.5, generator=torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and abs(mask.float().mean().item() - 0.5) < 0.02
    again = sub_teacher_mask(20000, p=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    assert sub_teacher_mask(10, p=0.0).all()
    assert abs(sub_teacher_mask(20000, p=0.25).float().mean().item() - 0.75) < 0.02


def test_one_to_one_loss_is_the_weighted_sum_of_its_terms():
    generator = torch.Generator().manual_seed(4)
    student_hidden = torch.randn(2, 6, 8, generator=generator, requires_grad=True)
    teacher_hidden = torch.randn(2, 6, 8, generator=generator, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    student_logits = torch.randn(2, 3, generator=generator, requires_grad=True)
    teacher_logits = torch.randn(2, 3, generator=generator, requires_grad=True)
    task_loss = torch.tensor(0.7, requires_grad=True)
    objective = OneToOneLoss(alpha_task=0.5, alpha_ce=0.3, alpha_corr=0.005, alpha_mse=0.2, alpha_cos=0.1,
                             temperature=2.0, do_mask=True)
    torch.manual_seed(11)
    loss, terms = objective(task_loss=task_loss, student_logits=student_logits, teacher_logits=teacher_logits,
                            student_hidden=student_hidden, teacher_hidden=teacher_hidden, attention_mask=mask)
    torch.manual_seed(11)
    keep = sub_teacher_mask(8)
    z_s, z_t = token_rows(student_hidden, mask), token_rows(teacher_hidden, mask)
    expected = (0.5 * 0.7 + 0.3 * kd_loss(student_logits, teacher_logits, 2.0)
                + 0.005 * (cross_correlation_loss(z_s, z_t) + cross_correlation_loss(z_s, z_t, dims=keep))
                + 0.2 * hidden_mse_loss(z_s[:, keep], z_t[:, keep]) + 0.1 * hidden_cosine_loss(z_s, z_t))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(terms) == {"task", "ce", "corr", "corr_sub_teacher", "mse", "cos"}
    loss.backward()
    assert student_hidden.grad is not None and student_logits.grad is not None
    assert teacher_hidden.grad is None and teacher_logits.grad is None


def test_one_to_one_loss_start_end_logits_are_averaged():
    generator = torch.Generator().manual_seed(5)
    starts = torch.randn(2, 7, generator=generator), torch.randn(2, 7, generator=generator)
    ends = torch.randn(2, 7, generator=generator), torch.randn(2, 7, generator=generator)
    objective = OneToOneLoss(alpha_task=0.0, alpha_ce=1.0)
    loss, _ = objective(task_loss=torch.tensor(0.0), student_logits=(starts[0], ends[0]),
                        teacher_logits=(starts[1], ends[1]))
    expected = (kd_loss(starts[0], starts[1], 2.0) + kd_loss(ends[0], ends[1], 2.0)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_mask_that_drops_every_column_gives_zero_not_nan():
    z_s, z_t = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    nothing = torch.zeros(3, dtype=torch.bool)
    assert cross_correlation_loss(z_s, z_t, dims=nothing).item() == 0.0
    loss = hidden_mse_loss(z_s[:, nothing], z_t[:, nothing])
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z_s.grad).all()
