"""PKD (Patient Knowledge Distillation): the patient loss against hand-worked values and an
independent formula, the layer maps of PKD-Skip and PKD-Last, and the GLUE and IMDB distillation
scripts with ``--alpha_pkd`` on a deeper BERT teacher and a DistilBERT student."""

import argparse
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import run_glue_w_distillation
import run_imdb_w_distillation
from losses import OneToOneLoss, patient_loss
from tests.conftest import run_main
from utils.engine.errors import UserError
from utils.methods.one_to_one import cls_states, patient_layers
from utils.miniature.synthetic_imdb import write_acl_imdb
from utils.miniature.tiny_models import make_tiny_bert, make_tiny_distilbert


def numpy_patient_loss(student, teacher):
    """sum_{b, j} || s_bj / ||s_bj|| - t_bj / ||t_bj|| ||^2 / (B * M * d), a zero vector kept at zero."""
    student, teacher = np.asarray(student, dtype=np.float64), np.asarray(teacher, dtype=np.float64)

    def unit(x):
        norms = np.linalg.norm(x, axis=-1, keepdims=True)
        return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)

    return ((unit(student) - unit(teacher)) ** 2).sum() / student.size


def test_patient_loss_hand_worked():
    # b=0: s/|s| = (0.6, 0.8), t/|t| = (1, 0): 0.16 + 0.64 = 0.8; b=1: s = 0 stays 0, t/|t| = (0, 1): 1
    student = torch.tensor([[[3.0, 4.0]], [[0.0, 0.0]]])
    teacher = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]])
    assert patient_loss(student, teacher).item() == pytest.approx((0.8 + 1.0) / 4)
    assert patient_loss(teacher, teacher).item() == 0.0


def test_patient_loss_matches_the_independent_formula_in_float32():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 3, 8, generator=generator), torch.randn(5, 3, 8, generator=generator)
    student[1, 2] = 0.0  # a zero vector: no NaN
    got = patient_loss(student.bfloat16(), teacher.bfloat16())
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert got.item() == pytest.approx(numpy_patient_loss(student.bfloat16().float(), teacher.bfloat16().float()),
                                       rel=1e-5)
    # scale-free in each vector, as the L2 normalisation makes it
    assert patient_loss(3 * student, teacher).item() == pytest.approx(patient_loss(student, teacher).item(), rel=1e-6)


def test_patient_loss_refuses_other_shapes_and_is_zero_when_empty():
    with pytest.raises(ValueError, match=r"\(2, 5, 8\).*\(2, 5, 6\)"):
        patient_loss(torch.zeros(2, 5, 8), torch.zeros(2, 5, 6))
    assert patient_loss(torch.zeros(2, 0, 8), torch.zeros(2, 0, 8)).item() == 0.0


def test_the_one_to_one_objective_adds_beta_times_the_patient_term():
    generator = torch.Generator().manual_seed(1)
    logits, teacher_logits = torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator)
    student_cls = torch.randn(4, 2, 6, generator=generator, requires_grad=True)
    teacher_cls = torch.randn(4, 2, 6, generator=generator, requires_grad=True)
    task = torch.tensor(0.9)
    loss_fn = OneToOneLoss(alpha_task=0.3, alpha_ce=0.7, alpha_pkd=500.0, temperature=10.0)
    assert loss_fn.uses_teacher and loss_fn.uses_patience and not loss_fn.uses_features
    loss, terms = loss_fn(task_loss=task, student_logits=logits, teacher_logits=teacher_logits,
                          student_patience=student_cls, teacher_patience=teacher_cls)
    assert set(terms) == {"task", "ce", "pkd"}
    assert terms["pkd"].item() == pytest.approx(numpy_patient_loss(student_cls.detach(), teacher_cls.detach()), rel=1e-5)
    assert loss.item() == pytest.approx(0.3 * 0.9 + 0.7 * terms["ce"].item() + 500 * terms["pkd"].item(), rel=1e-6)
    loss.backward()
    assert student_cls.grad is not None and teacher_cls.grad is None, "the teacher's states are targets"


def model_of(layers, attribute="num_hidden_layers"):
    return SimpleNamespace(config=SimpleNamespace(**{attribute: layers}))


def pkd_args(**values):
    return argparse.Namespace(**{"pkd_layers": "skip", "pkd_teacher_layers": None, **values})


@pytest.mark.parametrize("mode, expected", [("skip", [2, 4, 6, 8, 10]), ("last", [7, 8, 9, 10, 11])])
def test_pkd_skip_and_last_map_a_6_layer_student_as_the_pkd_paper(mode, expected):
    layers = patient_layers(pkd_args(pkd_layers=mode), model_of(6, "n_layers"), model_of(12))
    assert layers == tuple(zip(range(1, 6), expected))


def test_explicit_teacher_layers_and_maps_that_do_not_fit():
    student, teacher = model_of(6, "n_layers"), model_of(12)
    assert patient_layers(pkd_args(pkd_teacher_layers="3,6,9"), student, teacher) == ((1, 3), (2, 6), (3, 9))
    assert patient_layers(pkd_args(), model_of(3, "n_layers"), model_of(6)) == ((1, 2), (2, 4))
    for bad, message in (("2,4,6,8,10,12", "maps at most 5 layers"), ("0,4", "between 1 and 12"),
                         ("2,13", "between 1 and 12"), ("2;4", "separated by commas")):
        with pytest.raises(UserError, match=message):
            patient_layers(pkd_args(pkd_teacher_layers=bad), student, teacher)
    with pytest.raises(UserError, match="the student has 6 layers and the teacher 4"):
        patient_layers(pkd_args(), student, model_of(4))


def test_cls_states_are_the_first_token_of_each_mapped_layer():
    hidden_states = tuple(torch.full((2, 5, 3), float(layer)) + torch.arange(5.0)[None, :, None]
                          for layer in range(4))
    states = cls_states(hidden_states, [1, 3])
    assert states.shape == (2, 2, 3) and states[:, 0].eq(1).all() and states[:, 1].eq(3).all()


# ---------------------------------------------------------------------------- end to end

PKD = ["--alpha_glue", "0.5", "--alpha_ce", "0.5", "--alpha_corr", "0", "--alpha_mse", "0", "--alpha_cos", "0",
       "--do_mask", "False", "--temperature", "10", "--alpha_pkd", "500"]


@pytest.fixture(scope="module")
def deep_teacher(tmp_path_factory):
    """A 4-layer BERT teacher for a 2-layer DistilBERT student (PKD-Skip: layer 1 from layer 2)."""
    root = tmp_path_factory.mktemp("pkd")
    return {"teacher": make_tiny_bert(root / "teacher", num_layers=4),
            "student": make_tiny_distilbert(root / "student", num_layers=2),
            "wide_student": make_tiny_distilbert(root / "wide", num_layers=2, hidden_size=48)}


def glue_argv(models, glue_dir, out, *extra, student="student"):
    return ["--teacher_model_name_or_path", str(models["teacher"]), "--student_model_name_or_path",
            str(models[student]), "--task_name", "rte", "--data_dir", str(glue_dir / "RTE"), "--output_dir", str(out),
            "--per_device_train_batch_size", "16", "--num_train_epochs", "1", "--logging_steps", "1",
            "--disable_tqdm", *PKD, *extra]


def test_glue_distillation_with_pkd_trains_and_reads_the_mapped_layers(deep_teacher, glue_dir, tmp_path, monkeypatch):
    seen = []
    original = OneToOneLoss.__call__

    def spy(self, **inputs):
        seen.append(inputs)
        return original(self, **inputs)

    monkeypatch.setattr(OneToOneLoss, "__call__", spy)
    out = tmp_path / "pkd"
    assert run_main(run_glue_w_distillation.main, glue_argv(deep_teacher, glue_dir, out, "--pkd_layers", "last")) == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert 0 <= results["accuracy"] <= 1
    run_args = json.loads((out / "run_args.json").read_text())
    assert run_args["alpha_pkd"] == 500 and run_args["pkd_layers"] == "last"
    student_patience, teacher_patience = seen[0]["student_patience"], seen[0]["teacher_patience"]
    assert student_patience.shape == teacher_patience.shape == (16, 1, 32)  # one mapped layer, width 32
    initial, trained = load_file(str(deep_teacher["student"] / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert not torch.equal(initial["distilbert.transformer.layer.0.attention.q_lin.weight"],
                           trained["distilbert.transformer.layer.0.attention.q_lin.weight"])


def test_glue_pkd_with_the_teacher_cache_matches_the_live_teacher(deep_teacher, glue_dir, tmp_path):
    live, cached = tmp_path / "live", tmp_path / "cached"
    assert run_main(run_glue_w_distillation.main, glue_argv(deep_teacher, glue_dir, live)) == 0
    assert run_main(run_glue_w_distillation.main, glue_argv(deep_teacher, glue_dir, cached, "--cache_teacher")) == 0
    live_weights, cached_weights = (load_file(str(path / "model.safetensors")) for path in (live, cached))
    # the cache holds the teacher's outputs in float16: the runs agree to that rounding
    assert all(torch.allclose(live_weights[key], cached_weights[key], atol=1e-3) for key in live_weights)


@pytest.mark.parametrize("extra, student, message", [
    (["--pkd_teacher_layers", "1,2"], "student", "the 2-layer student maps at most 1 layers"),
    (["--pkd_teacher_layers", "9"], "student", "each to a teacher layer between 1 and 4"),
    ([], "wide_student", "the student's hidden width (48) differs from the teacher's (32)"),
])
def test_a_pkd_map_or_width_that_does_not_fit_is_one_clear_error(extra, student, message, deep_teacher, glue_dir,
                                                                 tmp_path, capsys):
    argv = glue_argv(deep_teacher, glue_dir, tmp_path / "out", *extra, student=student)
    assert run_main(run_glue_w_distillation.main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_imdb_distillation_takes_the_pkd_options(deep_teacher, tmp_path):
    write_acl_imdb(tmp_path / "imdb")
    out = tmp_path / "imdb_pkd"
    argv = ["--teacher_model_name_or_path", str(deep_teacher["teacher"]), "--student_model_name_or_path",
            str(deep_teacher["student"]), "--output_dir", str(out), "--data_dir", str(tmp_path / "imdb"),
            "--max_seq_length", "48", "--disable_tqdm", "--per_device_train_batch_size", "4", "--num_train_epochs", "1",
            "--alpha_imdb", "0.5", "--alpha_ce", "0.5", "--alpha_corr", "0", "--alpha_pkd", "100",
            "--pkd_teacher_layers", "3"]
    assert run_main(run_imdb_w_distillation.main, argv) == 0
    assert 0 <= json.loads((out / "eval_results.json").read_text())["accuracy"] <= 1
