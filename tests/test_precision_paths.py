"""The mixed-precision and CUDA paths as far as a CPU checks them: padding to a multiple of 8, the
float16 teacher scaler of ProKT, LGTM's finite differences in float32, LGTM refusing float16."""

import math

import pytest
import torch

from utils.engine.features import PadCollator
from utils.engine.runtime import Runtime
from utils.methods.lgtm import TeacherStep, _perturbed_probabilities
from utils.miniature.tiny_models import random_batch, tiny_bert


def test_batches_are_padded_to_a_multiple_of_8_on_cuda_capped_at_max_length():
    assert Runtime(device=torch.device("cuda", 0)).pad_multiple == 8
    assert Runtime(device=torch.device("cpu")).pad_multiple is None
    features = [{"input_ids": list(range(1, n + 1)), "labels": 0} for n in (3, 13)]
    for multiple, max_length, to_max, width in ((None, 20, False, 13), (8, 20, False, 16), (8, 14, False, 14),
                                                (8, None, False, 16), (8, 20, True, 20), (4, 20, False, 16)):
        batch = PadCollator({"": 0}, max_length, to_max, pad_to_multiple_of=multiple)(features)
        assert batch["input_ids"].shape == (2, width), (multiple, max_length, to_max)
        assert batch["attention_mask"].sum(dim=1).tolist() == [3, 13]
        assert batch["input_ids"][1, 13:].eq(0).all()


class Schedule:
    """The scheduler methods TeacherStep calls."""

    def __init__(self):
        self.steps = 0

    def step(self):
        self.steps += 1

    def get_last_lr(self):
        return [1e-3]


def prokt_update(amp_dtype):
    teacher, student = tiny_bert(seed=3), tiny_bert(num_layers=1, seed=4)
    runtime = Runtime(device=torch.device("cpu"), amp_dtype=amp_dtype)
    update = TeacherStep(teacher, student, runtime, learning_rate=1e-3, adam_epsilon=1e-8,
                         make_schedule=lambda optimizer: Schedule(), t_alpha_kd=0.4,
                         temperature=2.0, max_grad_norm=1.0)
    return update, teacher


def test_prokt_under_float16_scales_the_teacher_loss_and_steps_like_float32():
    """The scaler multiplies the loss by its scale and divides the gradients by it before the
    clip and the step: on gradients that do not overflow the step is the unscaled one."""
    update, teacher = prokt_update(torch.float16)
    assert update.scaler.is_enabled() and update.scaler.get_scale() == 65536.0
    reference_update, reference = prokt_update(None)
    assert not reference_update.scaler.is_enabled()
    batch = random_batch(5)
    before = {name: p.detach().clone() for name, p in teacher.named_parameters()}
    terms = update(batch)  # outside autocast: float32 arithmetic, only the scaling differs
    reference_terms = reference_update(batch)
    assert set(reference_terms) == {"teacher_grad_norm"}
    assert set(terms) == {"teacher_grad_norm", "teacher_fp16_skipped"} and terms["teacher_fp16_skipped"] == 0
    assert math.isclose(terms["teacher_grad_norm"].item(), reference_terms["teacher_grad_norm"].item(), rel_tol=1e-5)
    moved = [name for name, p in teacher.named_parameters() if not torch.equal(p, before[name])]
    assert moved
    for (name, p), q in zip(teacher.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=name)


def test_an_overflowing_float16_teacher_step_is_skipped_and_logged():
    update, teacher = prokt_update(torch.float16)
    update.scaler = torch.amp.GradScaler("cpu", init_scale=math.inf)  # every scaled gradient overflows
    before = {name: p.detach().clone() for name, p in teacher.named_parameters()}
    terms = update(random_batch(6))
    assert terms["teacher_fp16_skipped"] == 1 and terms["teacher_grad_norm"] == 0
    assert all(torch.equal(p, before[name]) for name, p in teacher.named_parameters())
    assert update.scheduler.steps == 1, "the schedule goes on, as the loop's does on a skipped student step"
    assert all(p.grad is None for p in teacher.parameters())


def test_lgtm_refuses_a_float16_teacher_update():
    update, teacher = prokt_update(None)
    with pytest.raises(ValueError, match="use bfloat16"):
        TeacherStep(teacher, tiny_bert(num_layers=1), Runtime(device=torch.device("cpu"), amp_dtype=torch.float16),
                    learning_rate=1e-3, adam_epsilon=1e-8, make_schedule=lambda optimizer: Schedule(), t_alpha_kd=0.5,
                    temperature=1.0, max_grad_norm=1.0, quiz_batches=object(), student_optimizer=object(),
                    alpha_kd=1.0)


def test_the_script_refuses_use_lgtm_with_fp16_in_one_line(capsys):
    import run_lgtm_glue

    with pytest.raises(SystemExit) as stop:
        run_lgtm_glue.main(["--model_name_or_path", "x", "--teacher_model", "y", "--task_name", "rte", "--do_train",
                            "--train_teacher", "--use_lgtm", "--fp16", "--output_dir", "/nonexistent/never"])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--use_lgtm with --fp16" in error[0] and "use --bf16" in error[0]


def test_the_finite_difference_forwards_run_in_float32_under_bfloat16_autocast():
    """s(theta + eps v) with eps v far below bfloat16's resolution: the probabilities must move as
    in float32, not be rounded back to s(theta)."""
    student = tiny_bert(num_layers=1, seed=7)
    batch = random_batch(8)
    direction = {name: torch.randn_like(p) for name, p in student.named_parameters()}
    norm = torch.sqrt(sum(v.square().sum() for v in direction.values()))
    step = 0.01 / norm.item()
    expected = [_perturbed_probabilities(student, batch, direction, sign * step, 2.0, None) for sign in (1, -1)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = [_perturbed_probabilities(student, batch, direction, sign * step, 2.0, None) for sign in (1, -1)]
    for a, e in zip(actual, expected):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    assert not torch.equal(expected[0], expected[1]), "the perturbation moves the probabilities in float32"


def test_lgtm_refuses_a_regression_task_whose_kd_only_loss_is_zero(capsys):
    import run_lgtm_glue

    with pytest.raises(SystemExit) as stop:
        run_lgtm_glue.main(["--model_name_or_path", "x", "--teacher_model", "y", "--task_name", "stsb", "--do_train",
                            "--alpha_kd", "1.0", "--output_dir", "/nonexistent/never"])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "regression task" in error[0] and "--alpha_kd below 1" in error[0]


def test_a_checkpoint_without_a_newer_component_resumes_with_it_afresh(tmp_path, caplog):
    """An fp16 ProKT checkpoint written before the teacher's scaler existed still resumes."""
    import logging

    from utils.engine.checkpoints import Position, load_checkpoint, save_checkpoint

    model = tiny_bert(seed=9)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    runtime = Runtime(device=torch.device("cpu"))
    save_checkpoint(tmp_path, Position(global_step=3), model, None, {"optimizer": optimizer}, runtime,
                    save_total_limit=0)
    folder = tmp_path / "checkpoint-3"
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    with caplog.at_level(logging.WARNING, logger="utils.engine.checkpoints"):
        position = load_checkpoint(folder, model, {"optimizer": optimizer, "teacher_scaler": scaler}, runtime)
    assert position.global_step == 3 and scaler.get_scale() == 1024.0
    assert "has no teacher_scaler (written by an earlier version): it starts afresh" in caplog.text
