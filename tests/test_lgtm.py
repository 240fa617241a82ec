"""The LGTM teacher gradient (utils/methods/lgtm.py): the finite difference against the exact mixed
derivative, the Adam look-ahead against a real AdamW step, the efficient gradient against the
released recipe, and the student left exactly as it was."""

import copy

import pytest
import torch
import torch.nn.functional as F

from benchmarks.reference_pipeline import released_lgtm_teacher_grads
from losses import lgtm_student_loss
from utils.methods import lgtm
from utils.methods.lgtm import (
    Rows,
    adam_lookahead,
    adam_lookahead_rows,
    finite_difference_influence,
    lgtm_teacher_grads,
    model_outputs,
)
from utils.miniature.tiny_models import random_batch, tiny_bert, tiny_distilbert

HYPER_PARAMETERS = {"alpha_kd": 0.7, "t_alpha_kd": 0.4, "temperature": 2.0}


def trained_optimizer(student, teacher, steps=3, weight_decay=0.0):
    """AdamW over two parameter groups (different learning rates), ``steps`` steps in."""
    params = list(student.parameters())
    optimizer = torch.optim.AdamW([{"params": params[:3], "lr": 2e-2}, {"params": params[3:]}],
                                  lr=1e-2, weight_decay=weight_decay)
    for step in range(steps):
        batch = random_batch(100 + step)
        with torch.no_grad():
            teacher_logits = model_outputs(teacher, batch).logits
        student_out = model_outputs(student, batch)
        lgtm_student_loss(student_out.logits, teacher_logits, student_out.loss,
                          alpha_kd=0.5, temperature=1.0).backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def relative_error(actual, expected):
    difference = torch.cat([(a - e).flatten() for a, e in zip(actual, expected)])
    return float(difference.norm() / torch.cat([e.flatten() for e in expected]).norm())


def exact_influence(teacher, student, batch, direction, *, t_alpha_kd, temperature):
    """``h = grad_phi [(grad_theta L_T(phi, theta)) . v]`` by double backward: the limit of the
    finite difference as eps -> 0 (the mixed second derivative of L_T along v)."""
    teacher_out, student_logits = model_outputs(teacher, batch), model_outputs(student, batch).logits
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_out.logits / temperature, dim=-1)
    kd = (student_log_probs.exp() * (student_log_probs - teacher_log_probs)).sum(-1).mean()
    teacher_loss = t_alpha_kd * kd + (1 - t_alpha_kd) * teacher_out.loss
    student_params = dict(student.named_parameters())
    student_grads = torch.autograd.grad(teacher_loss, [student_params[name] for name in direction],
                                        create_graph=True)
    along_direction = sum((grad * v).sum() for grad, v in zip(student_grads, direction.values()))
    return torch.autograd.grad(along_direction, list(teacher.parameters()))


def test_finite_difference_influence_converges_to_the_mixed_second_derivative():
    teacher = tiny_bert(seed=0, dtype=torch.float64).eval()
    student = tiny_bert(1, seed=1, dtype=torch.float64).eval()
    batch = random_batch(0)
    generator = torch.Generator().manual_seed(0)
    direction = {name: torch.randn(p.shape, generator=generator, dtype=torch.float64)
                 for name, p in student.named_parameters()}
    exact = exact_influence(teacher, student, batch, direction, t_alpha_kd=0.4, temperature=2.0)
    errors = [relative_error(finite_difference_influence(
        teacher, student, batch, direction, t_alpha_kd=0.4, temperature=2.0, r=r), exact)
        for r in (1e-1, 1e-2, 1e-3)]
    assert errors[1] < 1e-3
    assert errors[1] < errors[0] / 10 and errors[2] < errors[1] / 10


@pytest.mark.parametrize("steps_before", [0, 3])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_lookahead_is_one_real_adamw_step(steps_before, weight_decay):
    teacher, student = tiny_bert(seed=0), tiny_bert(1, seed=1)
    optimizer = trained_optimizer(student, teacher, steps_before, weight_decay)
    params = list(student.parameters())
    generator = torch.Generator().manual_seed(1)
    grads = [None if index == 5 else torch.randn(p.shape, generator=generator)
             for index, p in enumerate(params)]

    lookahead = adam_lookahead(params, grads, optimizer)

    stepped_student, stepped_optimizer = copy.deepcopy((student, optimizer))
    for param, grad in zip(stepped_student.parameters(), grads):
        param.grad = grad
    stepped_optimizer.step()
    for theta_prime, stepped in zip(lookahead, stepped_student.parameters()):
        assert torch.equal(theta_prime, stepped)
    assert torch.equal(lookahead[5], params[5])
    assert not torch.equal(lookahead[0], params[0])


@pytest.mark.parametrize("steps_before", [0, 3])
def test_adam_lookahead_on_rows_is_those_rows_of_the_full_lookahead(steps_before):
    teacher, student = tiny_bert(seed=0), tiny_bert(1, seed=1)
    optimizer = trained_optimizer(student, teacher, steps_before, weight_decay=0.01)
    embedding = student.get_input_embeddings().weight
    grad_ids = torch.tensor([0, 3, 4, 9, 40])
    grad = Rows(grad_ids, torch.randn(len(grad_ids), embedding.shape[1]))
    wanted = torch.tensor([1, 3, 9, 41, 59])  # some rows with a gradient, some without

    rows = adam_lookahead_rows(embedding, grad, optimizer, wanted)

    full = adam_lookahead([embedding], [grad.dense(embedding)], optimizer)[0]
    assert torch.equal(rows, full[wanted])
    assert torch.equal(grad.at(wanted)[1], grad.values[1]) and not grad.at(wanted)[0].any()


def test_rows_path_equals_the_full_embedding_matrix(monkeypatch):
    """The input embeddings handled on the rows x and q read (``embedding_rows``) against the whole
    matrix (``embedding_rows`` disabled): a quiz without padding, a batch with it, ids in one only."""
    teacher, student = tiny_bert(seed=0), tiny_bert(1, seed=1)
    optimizer = trained_optimizer(student, teacher, weight_decay=0.01)
    batch = random_batch(0, batch_size=5)
    quiz_batch = random_batch(1, length=6)
    quiz_batch["attention_mask"][:] = 1
    quiz_batch["input_ids"] = quiz_batch["input_ids"] % 30 + 1
    assert (batch["input_ids"] == 0).any() and not (quiz_batch["input_ids"] == 0).any()
    arguments = (teacher, student, batch, quiz_batch, optimizer)

    rows_used = []
    embedding_rows = lgtm.embedding_rows
    monkeypatch.setattr(lgtm, "embedding_rows", lambda *a: rows_used.append(embedding_rows(*a)) or rows_used[-1])
    on_rows = lgtm_teacher_grads(*arguments, **HYPER_PARAMETERS, teacher_lr=1.0)
    assert rows_used and all(rows is not None for rows in rows_used)
    monkeypatch.setattr(lgtm, "embedding_rows", lambda *a: None)
    on_matrix = lgtm_teacher_grads(*arguments, **HYPER_PARAMETERS, teacher_lr=1.0)
    assert relative_error(on_rows, on_matrix) < 1e-5


@pytest.mark.parametrize("pieces_from_tokens", [10_000, 0], ids=["whole batch", "in pieces"])
@pytest.mark.parametrize("make_student", [lambda: tiny_bert(1, seed=1), tiny_distilbert],
                         ids=["bert", "distilbert"])
def test_efficient_gradient_equals_the_released_recipe(make_student, pieces_from_tokens, monkeypatch):
    monkeypatch.setattr(lgtm, "PIECES_FROM_TOKENS", pieces_from_tokens)
    teacher, student = tiny_bert(seed=0), make_student()
    optimizer = trained_optimizer(student, teacher)
    batch, quiz_batch = random_batch(0, batch_size=5), random_batch(1)
    arguments = (teacher, student, batch, quiz_batch, optimizer)

    efficient = lgtm_teacher_grads(*arguments, **HYPER_PARAMETERS, teacher_lr=0.0)
    efficient_with_influence = lgtm_teacher_grads(*arguments, **HYPER_PARAMETERS, teacher_lr=1.0)
    released = released_lgtm_teacher_grads(*arguments, **HYPER_PARAMETERS, teacher_lr=1.0)

    influence = [g - g_lr for g, g_lr in zip(efficient, efficient_with_influence)]
    released_influence = [g - g_lr for g, g_lr in zip(efficient, released)]
    assert relative_error(influence, released_influence) < 1e-3
    assert relative_error(efficient_with_influence, released) < 1e-4
    assert relative_error(efficient, efficient_with_influence) > 1e-2


def snapshot(student, optimizer):
    """Copies of the student's parameters, grads, optimizer state and hyper-parameters."""
    return (
        [p.detach().clone() for p in student.parameters()],
        [None if p.grad is None else p.grad.clone() for p in student.parameters()],
        {id(p): {key: value.clone() for key, value in state.items()}
         for p, state in optimizer.state.items()},
        [{key: value for key, value in group.items() if key != "params"}
         for group in optimizer.param_groups],
    )


def assert_bitwise_equal(before, after):
    params, grads, states, groups = before
    params_after, grads_after, states_after, groups_after = after
    assert all(torch.equal(a, b) for a, b in zip(params, params_after))
    assert [g is None for g in grads] == [g is None for g in grads_after]
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_after) if a is not None)
    assert states.keys() == states_after.keys()
    for key, state in states.items():
        assert state.keys() == states_after[key].keys()
        assert all(torch.equal(value, states_after[key][name]) for name, value in state.items())
    assert groups == groups_after


def training_flags(*models):
    return [module.training for model in models for module in model.modules()]


@pytest.mark.parametrize("steps_before", [0, 3])
def test_student_teacher_and_modes_are_left_as_they_were(steps_before):
    teacher, student = tiny_bert(seed=0), tiny_bert(1, seed=1)
    optimizer = trained_optimizer(student, teacher, steps_before, weight_decay=0.01)
    for index, param in enumerate(student.parameters()):
        param.grad = torch.randn_like(param) if index % 2 else None
    teacher_grads = [torch.randn_like(p) for p in teacher.parameters()]
    for param, grad in zip(teacher.parameters(), teacher_grads):
        param.grad = grad.clone()
    student.eval()
    student.classifier.train()
    teacher.train()
    teacher.bert.pooler.eval()
    modes = training_flags(student, teacher)
    before = snapshot(student, optimizer)

    lgtm_teacher_grads(teacher, student, random_batch(0), random_batch(1), optimizer,
                       **HYPER_PARAMETERS, teacher_lr=1e-3)

    assert_bitwise_equal(before, snapshot(student, optimizer))
    assert len(optimizer.state) == (0 if steps_before == 0 else len(list(student.parameters())))
    assert all(torch.equal(p.grad, g) for p, g in zip(teacher.parameters(), teacher_grads))
    assert modes == training_flags(student, teacher)


@pytest.mark.parametrize("frozen_name", ["token_type_embeddings", "word_embeddings"])
def test_gradient_aligns_with_teacher_parameters_and_is_zero_where_frozen(frozen_name):
    teacher, student = tiny_bert(seed=0), tiny_distilbert()
    frozen = getattr(teacher.bert.embeddings, frozen_name).weight
    frozen.requires_grad_(False)
    student.get_input_embeddings().weight.requires_grad_(frozen_name == "token_type_embeddings")
    optimizer = trained_optimizer(student, teacher, steps=1)

    grads = lgtm_teacher_grads(teacher, student, random_batch(0), random_batch(1), optimizer,
                               **HYPER_PARAMETERS, teacher_lr=1e-3)

    params = list(teacher.parameters())
    assert len(grads) == len(params)
    assert all(g is not None and g.shape == p.shape for g, p in zip(grads, params))
    assert not grads[[p is frozen for p in params].index(True)].any()
    assert all(g.any() for g, p in zip(grads, params) if p is not frozen)
