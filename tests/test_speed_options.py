"""The speed options change how fast a run computes, not what it computes.

On tiny models without dropout: ``--pad_to_max_length`` and dynamic padding, ``--torch_compile``
and eager execution give the same losses and weights up to floating-point noise; ``--bf16`` stays
within bfloat16's precision of float32; ``--group_by_length`` (other batches) sees every example
once per epoch in as many steps. Models load with PyTorch's scaled-dot-product attention.
"""

import json
import math
import shutil
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, FunnelConfig, FunnelForSequenceClassification

import run_glue_w_distillation
import utils.engine.loop
from tests.conftest import run_main
from utils.engine.cli import ArgumentParser, add_training_args, resolved_options
from utils.engine.features import PadCollator, model_inputs
from utils.engine.loop import train
from utils.engine.models import forward_arguments, load_classifier, load_tokenizer
from utils.engine.runtime import Runtime
from utils.miniature.tiny_models import make_tiny_bert, make_tiny_distilbert
from utils.tasks.glue_data import get_task, read_glue_tsv

# the paper's loss (task + cross-correlation with the sub-teacher) with logit KD added
LOSS = ["--alpha_glue", "0.5", "--alpha_ce", "0.5", "--alpha_corr", "0.01", "--alpha_mse", "0", "--alpha_cos", "0",
        "--do_mask", "True"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A BERT teacher and a DistilBERT student without dropout: equal batches give equal numbers."""
    root = tmp_path_factory.mktemp("no_dropout")
    return {"teacher": make_tiny_bert(root / "bert", hidden_dropout=0, attention_dropout=0),
            "student": make_tiny_distilbert(root / "distilbert", dropout=0)}


@pytest.fixture
def logged_losses(monkeypatch):
    """The means (loss and its terms) of every logging interval of the runs in this test, per run."""
    runs = []
    pop_means = utils.engine.loop._RunningSums.pop_means

    def recording(self, step):
        means, count = pop_means(self, step)
        if step == 1 or not runs:
            runs.append([])
        runs[-1].append(means)
        return means, count

    monkeypatch.setattr(utils.engine.loop._RunningSums, "pop_means", recording)
    return runs


def distil(models, glue_dir, out, *extra):
    argv = ["--teacher_model_name_or_path", str(models["teacher"]), "--student_model_name_or_path",
            str(models["student"]), "--task_name", "rte", "--data_dir", str(glue_dir / "RTE"), "--output_dir", str(out),
            "--max_seq_length", "48", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
            "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", *LOSS, *extra]
    assert run_main(run_glue_w_distillation.main, argv) == 0


def weights(path):
    return load_file(str(path / "model.safetensors"))


def assert_same_weights(out, reference, initial, atol):
    got, expected, start = weights(out), weights(reference), weights(initial)
    assert got.keys() == expected.keys()
    moved = max((expected[name] - start[name]).abs().max().item() for name in expected if name in start)
    assert moved > 100 * atol, "training moved the weights far more than the tolerance"
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=atol, msg=name)


def assert_same_losses(got, expected, rtol):
    assert len(got) == len(expected) and got
    for got_means, expected_means in zip(got, expected):
        assert got_means.keys() == expected_means.keys()
        for name, value in expected_means.items():
            assert got_means[name] == pytest.approx(value, rel=rtol, abs=1e-7), name


def results(out):
    return json.loads((out / "eval_results.json").read_text())


def test_padding_to_max_length_computes_what_dynamic_padding_does(models, glue_dir, tmp_path, logged_losses):
    dynamic, padded = tmp_path / "dynamic", tmp_path / "padded"
    distil(models, glue_dir, dynamic, "--max_steps", "6")
    distil(models, glue_dir, padded, "--max_steps", "6", "--pad_to_max_length")
    assert len(logged_losses) == 2 and len(logged_losses[0]) == 6
    assert set(logged_losses[0][0]) == {"loss", "task", "ce", "corr", "corr_sub_teacher"}
    assert_same_losses(logged_losses[1], logged_losses[0], rtol=1e-5)
    assert_same_weights(padded, dynamic, models["student"], atol=1e-5)
    assert results(padded) == pytest.approx(results(dynamic), abs=1e-9)


@pytest.mark.long
def test_torch_compile_computes_what_eager_execution_does(models, glue_dir, tmp_path, logged_losses):
    if not any(shutil.which(compiler) for compiler in ("g++", "c++", "clang++")):
        pytest.skip("torch.compile's inductor backend needs a C++ compiler on the CPU; none is installed")
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    # static shapes (--pad_to_max_length): one compilation for both steps
    options = ["--max_steps", "2", "--pad_to_max_length", "--max_seq_length", "32", "--do_eval", "False",
               "--save_steps", "1"]
    distil(models, glue_dir, eager, *options)
    torch._dynamo.reset()
    try:
        distil(models, glue_dir, compiled, *options, "--torch_compile")
    finally:
        torch._dynamo.reset()
    assert_same_losses(logged_losses[1], logged_losses[0], rtol=1e-4)
    assert_same_weights(compiled, eager, models["student"], atol=1e-5)
    # the checkpoint holds the plain model's state dict (no "_orig_mod." prefixes) and resumes eagerly
    assert weights(compiled / "checkpoint-1").keys() == weights(eager / "checkpoint-1").keys()
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(compiled / "checkpoint-1", resumed / "checkpoint-1")
    distil(models, glue_dir, resumed, *options)
    assert_same_weights(resumed, eager, models["student"], atol=1e-5)


def test_an_unknown_compile_backend_is_refused_in_one_line(models, glue_dir, tmp_path, capsys):
    argv = ["--teacher_model_name_or_path", str(models["teacher"]), "--student_model_name_or_path",
            str(models["student"]), "--task_name", "rte", "--data_dir", str(glue_dir / "RTE"),
            "--output_dir", str(tmp_path / "out"), "--torch_compile", "--torch_compile_backend", "no_such_backend"]
    assert run_main(run_glue_w_distillation.main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --torch_compile_backend no_such_backend: unknown; choose one of")
    assert "inductor" in error and "\n" not in error


def test_a_failing_compile_backend_stops_the_run_in_one_line(models, glue_dir, tmp_path, capsys):
    from torch._dynamo import register_backend

    @register_backend(name="failing_backend_for_tests")
    def failing_backend(graph_module, example_inputs):
        raise RuntimeError("no compiler here")

    torch._dynamo.reset()
    argv = ["--teacher_model_name_or_path", str(models["teacher"]), "--student_model_name_or_path",
            str(models["student"]), "--task_name", "rte", "--data_dir", str(glue_dir / "RTE"),
            "--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--report_to", "none", "--disable_tqdm",
            "--torch_compile", "--torch_compile_backend", "failing_backend_for_tests"]
    try:
        assert run_main(run_glue_w_distillation.main, argv) == 2
    finally:
        torch._dynamo.reset()
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: --torch_compile: the failing_backend_for_tests backend failed "
                            "(RuntimeError: no compiler here)")
    assert "--torch_compile_backend aot_eager" in error


def test_bf16_stays_within_bfloat16_precision_of_float32(models, glue_dir, tmp_path, logged_losses):
    distil(models, glue_dir, tmp_path / "fp32", "--max_steps", "2")
    distil(models, glue_dir, tmp_path / "bf16", "--max_steps", "2", "--bf16")
    float32, bfloat16 = logged_losses
    assert len(float32) == len(bfloat16) == 2
    for name, value in float32[0].items():  # the first step: the same weights, the same batch
        assert bfloat16[0][name] == pytest.approx(value, rel=3e-2, abs=1e-3), name
    assert bfloat16[1]["loss"] == pytest.approx(float32[1]["loss"], rel=3e-2)
    assert 0 <= results(tmp_path / "bf16")["accuracy"] <= 1


def training_args(tmp_path, *extra):
    parser = ArgumentParser()
    add_training_args(parser, batch_size=16, learning_rate=1e-3, epochs=2.0)
    args = parser.parse_args(["--output_dir", str(tmp_path), "--report_to", "none", "--disable_tqdm",
                              "--save_steps", "0", *extra])
    return resolved_options(args, per_device_eval_batch_size=16)


def test_group_by_length_sees_every_example_once_per_epoch_in_as_many_steps(models, glue_dir, tmp_path,
                                                                            logged_losses):
    tokenizer = load_tokenizer(str(models["student"]))
    examples = read_glue_tsv("rte", glue_dir, "train")
    features = [{"input_ids": tokenizer(example["text_a"], example["text_b"])["input_ids"],
                 "labels": example["label"], "idx": index} for index, example in enumerate(examples)]
    collate = PadCollator({"": tokenizer.pad_token_id})
    seen = {}
    for grouped in (False, True):
        model = load_classifier(str(models["student"]), get_task("rte"))
        accepted = forward_arguments(model)
        seen[grouped] = []

        def compute_loss(model, batch, log=seen[grouped]):
            log.append(batch["idx"].tolist())
            outputs = model(**model_inputs(batch, accepted), labels=batch["labels"])
            return outputs.loss, {}

        args = training_args(tmp_path / str(grouped), "--logging_steps", "1", "--group_by_length", str(grouped))
        result = train(args, Runtime(device=torch.device("cpu")), model=model, train_dataset=features,
                       collate_fn=collate, compute_loss=compute_loss)
        assert result.global_step == 2 * math.ceil(len(features) / 16) and math.isfinite(result.train_loss)
    assert len(seen[True]) == len(seen[False])
    steps_per_epoch = len(seen[True]) // 2
    for plan in seen.values():
        for epoch in range(2):
            batches = plan[epoch * steps_per_epoch:(epoch + 1) * steps_per_epoch]
            assert Counter(i for batch in batches for i in batch) == Counter(range(len(features)))
    assert seen[True] != seen[False], "grouping changes the batches"
    assert all(math.isfinite(means["loss"]) for run in logged_losses for means in run)

    out = tmp_path / "grouped_script"
    distil(models, glue_dir, out, "--num_train_epochs", "1", "--per_device_train_batch_size", "16", "--group_by_length")
    assert len(logged_losses[-1]) == steps_per_epoch
    assert all(math.isfinite(value) for means in logged_losses[-1] for value in means.values())
    assert 0 <= results(out)["accuracy"] <= 1 and results(out)["eval_samples"] == 32


def test_models_load_with_sdpa_attention_that_matches_eager(models, tmp_path):
    task = get_task("rte")
    for name in ("teacher", "student"):
        sdpa = load_classifier(str(models[name]), task, keep_head=True).eval()
        assert sdpa.config._attn_implementation == "sdpa"
        eager = AutoModelForSequenceClassification.from_pretrained(models[name], attn_implementation="eager").eval()
        batch = {"input_ids": torch.randint(5, 60, (3, 9)),
                 "attention_mask": torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7])}
        with torch.no_grad():
            torch.testing.assert_close(sdpa(**batch).logits, eager(**batch).logits, rtol=1e-5, atol=1e-5)
    # an architecture without SDPA support loads with its default attention
    config = FunnelConfig(vocab_size=60, d_model=8, n_head=2, d_head=4, d_inner=16, block_sizes=[1, 1],
                          num_labels=2)
    FunnelForSequenceClassification(config).save_pretrained(tmp_path / "funnel")
    funnel = load_classifier(str(tmp_path / "funnel"), task, keep_head=True)
    assert funnel.config._attn_implementation != "sdpa"


def test_torch_compile_is_an_option_of_every_script(capsys):
    import run_glue
    import run_imdb
    import run_imdb_w_distillation
    import run_lgtm_glue
    import run_squad
    import run_squad_w_distillation

    for script in (run_glue, run_glue_w_distillation, run_imdb, run_imdb_w_distillation, run_lgtm_glue, run_squad,
                   run_squad_w_distillation):
        with pytest.raises(SystemExit) as stop:
            script.parse_args(["--help"])
        assert stop.value.code == 0
        usage = capsys.readouterr().out
        assert "--torch_compile " in usage and "--torch_compile_backend" in usage, script.__name__
