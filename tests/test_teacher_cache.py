"""--cache_teacher: the cache against the teacher's outputs rounded to 16 bits, and the GLUE, IMDB
and SQuAD distillation scripts with and without it."""

import argparse
import functools
import logging
import random
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import BertForQuestionAnswering, BertTokenizer

import run_glue_w_distillation
import run_imdb_w_distillation
import run_squad_w_distillation
import utils.methods.one_to_one
from losses import OneToOneLoss
from tests.conftest import run_main
from utils.engine.errors import UserError
from utils.engine.features import PadCollator
from utils.engine.runtime import Runtime
from utils.methods.teacher import TeacherOutputs
from utils.methods.teacher_cache import DTYPES, TeacherCache, with_example_index
from utils.miniature.synthetic_imdb import write_acl_imdb
from utils.miniature.synthetic_squad import write_squad_dir

VOCAB, WIDTH, LABELS, PADDED_LENGTH = 30, 16, 3, 12
COLLATE = PadCollator({"": 0})
PADDED_COLLATE = PadCollator({"": 0}, PADDED_LENGTH, pad_to_max_length=True)


class FakeTeacher(torch.nn.Module):
    """Outputs of each example that do not depend on its batch: logits from the mean of its real
    tokens' hidden states, hidden states from an embedding table (values not exact in 16 bits)."""

    def __init__(self, scale=3.0):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.embedding = torch.nn.Parameter(scale * torch.randn(VOCAB, WIDTH, generator=generator))
        self.head = torch.nn.Parameter(torch.randn(WIDTH, LABELS, generator=generator))
        self.eval().requires_grad_(False)

    def outputs(self, batch):
        hidden = self.embedding[batch["input_ids"]]
        mask = batch["attention_mask"][..., None].float()
        logits = ((hidden * mask).sum(1) / mask.sum(1)) @ self.head
        # two "layers" of [CLS]
        return TeacherOutputs(logits, hidden, torch.stack([hidden[:, 0], 2 * hidden[:, 0] + 1], dim=1))

    def token_outputs(self, batch):
        """Per-token logits ``(B, T, C)``, as a span predictor's, padding positions included."""
        hidden = self.embedding[batch["input_ids"]]
        return TeacherOutputs(hidden @ self.head, hidden)


def fake_features(count=11, seed=0):
    rng = random.Random(seed)
    return [{"input_ids": [rng.randrange(1, VOCAB) for _ in range(rng.randint(1, 9))], "labels": rng.randrange(LABELS)}
            for _ in range(count)]


def cache_args(tmp_path, **values):
    defaults = dict(cache_teacher=True, cache_teacher_dtype="float16", cache_teacher_dir=None,
                    cache_teacher_max_memory_gb=4.0, per_device_eval_batch_size=3, output_dir=str(tmp_path / "out"))
    return argparse.Namespace(**{**defaults, **values})


def fill(args, teacher, features, with_hidden=True):
    return TeacherCache.fill(args, Runtime(torch.device("cpu")), teacher, teacher.outputs, features, COLLATE,
                             num_logits=LABELS, hidden_width=WIDTH if with_hidden else None)



def fill_per_token(args, teacher, features, padded, with_hidden=True):
    return TeacherCache.fill(args, Runtime(torch.device("cpu")), teacher, teacher.token_outputs, features,
                             PADDED_COLLATE if padded else COLLATE, num_logits=LABELS,
                             hidden_width=WIDTH if with_hidden else None, logits_per_token=True,
                             padded_length=PADDED_LENGTH if padded else None)


def shuffled_batches(features, batch_size=4, seed=1, collate=COLLATE):
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed)).tolist()
    return [collate([features[i] for i in order[start:start + batch_size]])
            for start in range(0, len(order), batch_size)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("mapped", [False, True])
def test_cached_outputs_and_losses_equal_those_of_the_rounded_teacher(dtype, mapped, tmp_path):
    teacher, features = FakeTeacher(), with_example_index(fake_features())
    args = cache_args(tmp_path, cache_teacher_dtype=dtype, cache_teacher_dir=str(tmp_path / "cache") if mapped else None)
    cache = fill(args, teacher, features)
    assert isinstance(cache.hidden, np.memmap) == mapped and isinstance(cache.logits, np.memmap) == mapped
    if mapped:
        assert not list((tmp_path / "cache").iterdir()), "the mapped files are removed at once"
    loss = OneToOneLoss(alpha_task=0.5, alpha_ce=0.5, alpha_corr=0.1, alpha_mse=0.5, alpha_cos=0.5, do_mask=True)
    generator = torch.Generator().manual_seed(2)
    torch.manual_seed(0)  # the sub-teacher masks
    for batch in shuffled_batches(features):
        logits, hidden, _ = teacher.outputs(batch)
        rounded_logits, rounded_hidden = (t.to(DTYPES[dtype]).float() for t in (logits, hidden))
        assert not torch.equal(rounded_hidden, hidden), "the test values are not exact in 16 bits"
        cached_logits, cached_hidden, cached_patience = cache(batch)
        mask = batch["attention_mask"].bool()
        assert cached_patience is None and torch.equal(cached_logits, rounded_logits)
        assert torch.equal(cached_hidden[mask], rounded_hidden[mask]) and not cached_hidden[~mask].any()
        student_logits = torch.randn(logits.shape, generator=generator)
        student_hidden = torch.randn(hidden.shape, generator=generator)
        task_loss = torch.tensor(0.7)
        state = torch.get_rng_state()  # the sub-teacher mask: the same draw for both
        expected, expected_terms = loss(task_loss=task_loss, student_logits=student_logits,
                                        teacher_logits=rounded_logits, student_hidden=student_hidden,
                                        teacher_hidden=rounded_hidden, attention_mask=batch["attention_mask"])
        torch.set_rng_state(state)
        got, terms = loss(task_loss=task_loss, student_logits=student_logits, teacher_logits=cached_logits,
                          student_hidden=student_hidden, teacher_hidden=cached_hidden,
                          attention_mask=batch["attention_mask"])
        assert torch.isfinite(got) and torch.equal(got, expected) and terms.keys() == expected_terms.keys()


def test_the_cache_covers_every_example_and_logits_alone(tmp_path):
    teacher, features = FakeTeacher(), with_example_index(fake_features(count=7))
    cache = fill(cache_args(tmp_path), teacher, features, with_hidden=False)
    assert len(cache) == 7 and cache.hidden is None
    batch = COLLATE(features)
    logits, hidden, patience = cache(batch)
    assert hidden is None and patience is None and torch.equal(logits, teacher.outputs(batch)[0].half().float())
    cache = fill(cache_args(tmp_path), teacher, features)
    assert cache.offsets[-1] == sum(len(feature["input_ids"]) for feature in features) == len(cache.hidden)


@pytest.mark.parametrize("mapped", [False, True])
def test_cached_cls_states_of_the_pkd_layers_equal_those_of_the_rounded_teacher(mapped, tmp_path):
    teacher, features = FakeTeacher(), with_example_index(fake_features())
    args = cache_args(tmp_path, cache_teacher_dir=str(tmp_path / "cache") if mapped else None)
    cache = TeacherCache.fill(args, Runtime(torch.device("cpu")), teacher, teacher.outputs, features, COLLATE,
                              num_logits=LABELS, patience_shape=(2, WIDTH))
    assert cache.hidden is None and cache.patience.shape == (len(features), 2 * WIDTH)
    assert isinstance(cache.patience, np.memmap) == mapped
    for batch in shuffled_batches(features):
        logits, _, patience = teacher.outputs(batch)
        cached_logits, cached_hidden, cached_patience = cache(batch)
        assert cached_hidden is None and torch.equal(cached_logits, logits.half().float())
        assert not torch.equal(patience.half().float(), patience), "the test values are not exact in 16 bits"
        assert torch.equal(cached_patience, patience.half().float())


def test_a_cache_above_the_memory_limit_is_mapped_under_the_checkpoint_dir(tmp_path, caplog):
    teacher, features = FakeTeacher(), with_example_index(fake_features())
    with caplog.at_level(logging.INFO, logger="utils.methods.teacher_cache"):
        cache = fill(cache_args(tmp_path, cache_teacher_max_memory_gb=0.0), teacher, features)
    assert isinstance(cache.hidden, np.memmap)
    tokens = sum(len(feature["input_ids"]) for feature in features)
    size = 2 * (cache.logits.shape[0] * cache.logits.shape[1] + tokens * WIDTH)
    assert f"teacher cache: 11 examples, {tokens:,} real tokens, {size / 1e3:.1f} kB in float16, memory-mapped " \
           f"in {tmp_path}/out/teacher_cache" in caplog.text
    assert cache.hidden.shape == (tokens, WIDTH)


@pytest.mark.parametrize("padded", [False, True])
def test_per_token_logits_equal_those_of_the_rounded_teacher_at_the_kept_positions(padded, tmp_path):
    """The logits at the real tokens, or at every position of windows padded to a fixed length."""
    teacher, features = FakeTeacher(), with_example_index(fake_features())
    cache = fill_per_token(cache_args(tmp_path), teacher, features, padded)
    tokens = sum(len(feature["input_ids"]) for feature in features)
    assert len(cache) == len(features) and cache.hidden.shape == (tokens, WIDTH)
    assert cache.logits.shape == (len(features) * PADDED_LENGTH if padded else tokens, LABELS)
    widths = set()
    for batch in shuffled_batches(features, collate=PADDED_COLLATE if padded else COLLATE):
        logits, hidden, _ = teacher.token_outputs(batch)
        mask = batch["attention_mask"].bool()
        kept = torch.ones_like(mask) if padded else mask
        assert not mask.all() and not torch.equal(logits.half().float()[kept], logits[kept])
        cached_logits, cached_hidden, _ = cache(batch)
        assert cached_logits.shape == logits.shape and cached_hidden.shape == hidden.shape
        assert torch.equal(cached_logits[kept], logits.half().float()[kept]) and not cached_logits[~kept].any()
        assert torch.equal(cached_hidden[mask], hidden.half().float()[mask]) and not cached_hidden[~mask].any()
        widths.add(mask.shape[1])
    assert (widths == {PADDED_LENGTH}) if padded else len(widths) > 1, "batches of different padding"


def test_per_token_logits_alone_are_counted_in_the_size_and_checked_for_padding(tmp_path):
    teacher, features = FakeTeacher(), with_example_index(fake_features())
    size = 2 * len(features) * PADDED_LENGTH * LABELS
    for limit, mapped in ((size - 1, True), (size, False)):
        args = cache_args(tmp_path, cache_teacher_max_memory_gb=limit / 1e9)
        cache = fill_per_token(args, teacher, features, padded=True, with_hidden=False)
        assert cache.hidden is None and isinstance(cache.logits, np.memmap) == mapped
    batch = COLLATE(features)
    width = batch["input_ids"].shape[1]
    assert width < PADDED_LENGTH
    with pytest.raises(RuntimeError, match=f"a batch of {width} positions, but the logits are cached at all 12 "):
        cache(batch)
    with pytest.raises(RuntimeError, match="the collator must pad every batch to it"):
        TeacherCache.fill(args, Runtime(torch.device("cpu")), teacher, teacher.token_outputs, features, COLLATE,
                          num_logits=LABELS, logits_per_token=True, padded_length=PADDED_LENGTH)


def test_refusals(tmp_path):
    features = with_example_index(fake_features())
    teacher = FakeTeacher().train()
    with pytest.raises(UserError, match="needs a frozen teacher"):
        fill(cache_args(tmp_path), teacher, features)
    teacher = FakeTeacher(scale=1e5)
    with pytest.raises(UserError, match="do not fit in torch.float16: use --cache_teacher_dtype bfloat16"):
        fill(cache_args(tmp_path), teacher, features)
    fill(cache_args(tmp_path, cache_teacher_dtype="bfloat16"), teacher, features)


# ---------------------------------------------------------------------------- the scripts

GLUE_LOSS = ["--alpha_ce", "0.5", "--alpha_corr", "0.01", "--alpha_mse", "0.5", "--alpha_cos", "0.5",
             "--do_mask", "True", "--learning_rate", "2e-3", "--max_train_samples", "16", "--max_eval_samples", "8",
             "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "5", "--num_train_epochs", "2",
             "--do_eval", "False", "--report_to", "none", "--disable_tqdm"]


def glue_argv(tiny_models, glue_dir, out, *extra):
    """The untrained tiny BERT classifier serves as the frozen teacher."""
    return ["--teacher_model_name_or_path", str(tiny_models["bert"]), "--student_model_name_or_path",
            str(tiny_models["distilbert"]), "--task_name", "rte", "--data_dir", str(glue_dir / "RTE"),
            "--output_dir", str(out), *GLUE_LOSS, *extra]


def weights(out):
    return load_file(str(out / "model.safetensors"))


def assert_close_weights(out, reference, initial, atol):
    got, expected, start = weights(out), weights(reference), weights(initial)
    moved = max((expected[name] - start[name]).abs().max().item() for name in expected if name in start)
    assert moved > 10 * atol, "training moved the weights far more than the tolerance"
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=atol)


def assert_near_weights(out, reference, initial, fraction):
    """AdamW turns a tiny difference in a near-zero gradient into a step of up to the learning rate,
    so a few weights may differ by that: compare the whole update instead,
    ``|w_out - w_ref| <= fraction * |w_ref - w_initial|``."""
    got, expected, start = weights(out), weights(reference), weights(initial)
    names = [name for name in expected if name in start]
    difference = torch.cat([(got[name] - expected[name]).flatten() for name in names]).norm()
    update = torch.cat([(expected[name] - start[name]).flatten() for name in names]).norm()
    assert difference <= fraction * update, (difference, update)


def rounded_teacher(monkeypatch, dtype, module=utils.methods.one_to_one, name="classifier_teacher_outputs"):
    """Make the scripts' live teacher (``module.name`` makes its outputs function) return its
    outputs rounded to ``dtype``, as the cache stores them."""
    live = getattr(module, name)

    def rounded(*args, **kwargs):
        outputs = live(*args, **kwargs)
        return lambda batch: TeacherOutputs(*(None if t is None else t.to(dtype).float() for t in outputs(batch)))

    monkeypatch.setattr(module, name, rounded)


def test_glue_with_the_cache_matches_the_teacher_resumes_and_maps(tiny_models, glue_dir, tmp_path, monkeypatch):
    plain, rounded, cached = tmp_path / "plain", tmp_path / "rounded", tmp_path / "cached"
    assert run_main(run_glue_w_distillation.main, glue_argv(tiny_models, glue_dir, plain)) == 0
    argv = glue_argv(tiny_models, glue_dir, cached, "--cache_teacher", "--save_steps", "4", "--save_total_limit", "0")
    assert run_main(run_glue_w_distillation.main, argv) == 0
    with monkeypatch.context() as patch:
        rounded_teacher(patch, torch.float16)
        assert run_main(run_glue_w_distillation.main, glue_argv(tiny_models, glue_dir, rounded)) == 0
    # the same run as with the teacher rounded to float16 (up to float32 rounding of the teacher's
    # batches), and near the run with the unrounded teacher
    assert_close_weights(cached, rounded, tiny_models["distilbert"], atol=1e-6)
    assert_near_weights(cached, plain, tiny_models["distilbert"], fraction=0.01)

    # interrupted after step 4 of 8; resumed with the cache memory-mapped
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    subprocess.run(["cp", "-r", str(cached / "checkpoint-4"), str(resumed)], check=True)
    argv = glue_argv(tiny_models, glue_dir, resumed, "--cache_teacher", "--cache_teacher_dir",
                     str(tmp_path / "mapped"), "--save_steps", "4")
    assert run_main(run_glue_w_distillation.main, argv) == 0
    reference, got = weights(cached), weights(resumed)
    assert all(torch.equal(got[name], reference[name]) for name in reference)
    assert not list((tmp_path / "mapped").iterdir())


def test_imdb_with_the_cache_matches_the_teacher(tiny_models, tmp_path):
    write_acl_imdb(tmp_path / "imdb")
    runs = {}
    for name, extra in (("plain", []), ("cached", ["--cache_teacher", "--cache_teacher_dtype", "bfloat16"])):
        runs[name] = tmp_path / name
        argv = ["--student_model_name_or_path", str(tiny_models["distilbert"]), "--teacher_model_name_or_path",
                str(tiny_models["bert"]), "--output_dir", str(runs[name]), "--data_dir", str(tmp_path / "imdb"),
                "--max_seq_length", "48", "--alpha_ce", "0.5", "--alpha_corr", "0.01", "--alpha_cos", "0.5",
                "--learning_rate", "2e-3", "--per_device_train_batch_size", "4", "--num_train_epochs", "2",
                "--report_to", "none", "--disable_tqdm", *extra]
        assert run_main(run_imdb_w_distillation.main, argv) == 0
    assert_near_weights(runs["cached"], runs["plain"], tiny_models["distilbert"], fraction=0.03)


def test_cache_dir_without_the_cache_is_refused_in_one_line(tiny_models, glue_dir, tmp_path, capsys):
    argv = glue_argv(tiny_models, glue_dir, tmp_path / "s", "--cache_teacher_dir", str(tmp_path / "c"))
    assert run_main(run_glue_w_distillation.main, argv) == 2
    assert capsys.readouterr().err.strip() == "error: --cache_teacher_dir needs --cache_teacher"


SQUAD_LOSS = ["--alpha_squad", "0.5", "--alpha_ce", "0.5", "--alpha_corr", "0.01", "--alpha_mse", "0.5",
              "--alpha_cos", "0.5", "--do_mask", "True", "--temperature", "2", "--learning_rate", "2e-3",
              "--max_seq_length", "64", "--doc_stride", "16", "--max_query_length", "16", "--max_train_samples", "6",
              "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "5", "--num_train_epochs", "2",
              "--do_train", "--report_to", "none", "--disable_tqdm"]


@pytest.fixture(scope="module")
def squad_teacher(tiny_models, tmp_path_factory):
    """The tiny BERT with a new (untrained) question-answering head, saved as a SQuAD teacher."""
    directory = tmp_path_factory.mktemp("squad_teacher")
    torch.manual_seed(0)
    BertForQuestionAnswering.from_pretrained(tiny_models["bert"]).save_pretrained(directory)
    BertTokenizer.from_pretrained(tiny_models["bert"]).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def squad_dir(tmp_path_factory):
    return write_squad_dir(tmp_path_factory.mktemp("squad_data"))


def squad_argv(tiny_models, squad_teacher, squad_dir, out, *extra):
    return ["--model_name_or_path", str(tiny_models["distilbert"]), "--teacher_name_or_path", str(squad_teacher),
            "--data_dir", str(squad_dir), "--train_file", "train.json", "--output_dir", str(out), *SQUAD_LOSS,
            *extra]


@pytest.mark.parametrize("padding", [[], ["--pad_to_max_length"]], ids=["dynamic", "padded"])
def test_squad_with_the_cache_matches_the_teacher(padding, tiny_models, squad_teacher, squad_dir, tmp_path,
                                                  monkeypatch):
    """Start and end logits cached at the real tokens (dynamic padding) or at all max_seq_length
    positions (--pad_to_max_length, whose span loss reads the padding's logits too)."""
    plain, rounded, cached = tmp_path / "plain", tmp_path / "rounded", tmp_path / "cached"
    argv = functools.partial(squad_argv, tiny_models, squad_teacher, squad_dir)
    assert run_main(run_squad_w_distillation.main, argv(plain, *padding)) == 0
    assert run_main(run_squad_w_distillation.main, argv(cached, *padding, "--cache_teacher")) == 0
    with monkeypatch.context() as patch:
        rounded_teacher(patch, torch.float16, utils.methods.one_to_one, "span_teacher_outputs")
        assert run_main(run_squad_w_distillation.main, argv(rounded, *padding)) == 0
    assert_close_weights(cached, rounded, tiny_models["distilbert"], atol=1e-6)
    assert_near_weights(cached, plain, tiny_models["distilbert"], fraction=0.01)


def test_a_resumed_squad_run_with_the_cache_gives_the_same_weights(tiny_models, squad_teacher, squad_dir, tmp_path):
    """Interrupted after step 3 of 28; resumed with the cache memory-mapped."""
    cached, resumed = tmp_path / "cached", tmp_path / "resumed"
    argv = functools.partial(squad_argv, tiny_models, squad_teacher, squad_dir)
    assert run_main(run_squad_w_distillation.main, argv(cached, "--cache_teacher", "--save_steps", "3",
                                                        "--save_total_limit", "0")) == 0
    resumed.mkdir()
    subprocess.run(["cp", "-r", str(cached / "checkpoint-3"), str(resumed)], check=True)
    assert run_main(run_squad_w_distillation.main, argv(resumed, "--cache_teacher", "--save_steps", "3",
                                                        "--cache_teacher_dir", str(tmp_path / "mapped"))) == 0
    reference, got = weights(cached), weights(resumed)
    assert all(torch.equal(got[name], reference[name]) for name in reference)
    assert not list((tmp_path / "mapped").iterdir())


def test_the_squad_cache_is_filled_by_the_frozen_teacher_with_its_inputs_only_once(
        tiny_models, squad_teacher, squad_dir, tmp_path, monkeypatch, capsys):
    calls = []
    original = BertForQuestionAnswering.forward

    @functools.wraps(original)
    def spy(self, *args, **kwargs):
        calls.append((self.training, torch.is_grad_enabled(), "token_type_ids" in kwargs, len(kwargs["input_ids"])))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BertForQuestionAnswering, "forward", spy)
    for out, extra, token_types in (("a", [], True), ("b", ["--omit_teacher_token_type_ids"], False)):
        calls.clear()
        argv = squad_argv(tiny_models, squad_teacher, squad_dir, tmp_path / out, "--cache_teacher", *extra)
        assert run_main(run_squad_w_distillation.main, argv) == 0
        assert all(call[:3] == (False, False, token_types) for call in calls)
        assert [call[3] for call in calls] == [5] * 10 + [4], "the 54 training windows once, in batches of 5"

    argv = squad_argv(tiny_models, squad_teacher, squad_dir, tmp_path / "c", "--cache_teacher_dir", str(tmp_path))
    assert run_main(run_squad_w_distillation.main, argv) == 2
    assert capsys.readouterr().err.strip() == "error: --cache_teacher_dir needs --cache_teacher"
