"""run_glue.py and run_glue_w_distillation.py end to end on tiny models and synthetic data."""

import functools
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
import transformers
from safetensors.torch import load_file

import run_glue
import run_glue_w_distillation
from tests.conftest import run_main
from utils.tasks.glue_data import get_task, read_glue_tsv

ROOT = Path(__file__).resolve().parents[1]

TEACHER_COMMAND = ("--model_type bert --model_name_or_path {model} --task_name {task} --data_dir {data} "
                   "--do_lower_case --max_seq_length 128 --do_train --per_gpu_train_batch_size 32 "
                   "--per_gpu_eval_batch_size 32 --learning_rate 5e-5 --num_train_epochs 3.0 --output_dir {out}")
DISTILLATION_COMMAND = ("--teacher_model_name_or_path {teacher} --student_model_name_or_path {student} "
                        "--task_name rte --max_seq_length 128 --output_dir {out} --alpha_ce 0 --alpha_glue 0.5 "
                        "--alpha_corr 0.005 --alpha_mse 0 --alpha_cos 0 --do_mask True --num_train_epochs 3.0")

EXPECTED_METRICS = {
    "cola": {"matthews_correlation"}, "sst2": {"accuracy"}, "mrpc": {"accuracy", "f1"},
    "stsb": {"pearson", "spearmanr"}, "qqp": {"accuracy", "f1"}, "mnli": {"accuracy", "accuracy_mm"},
    "qnli": {"accuracy"}, "rte": {"accuracy"}, "wnli": {"accuracy"},
}
SUBMISSION_FILES = {
    "cola": ["CoLA.tsv"], "sst2": ["SST-2.tsv"], "mrpc": ["MRPC.tsv"], "stsb": ["STS-B.tsv"], "qqp": ["QQP.tsv"],
    "mnli": ["MNLI-m.tsv", "MNLI-mm.tsv"], "qnli": ["QNLI.tsv"], "rte": ["RTE.tsv"], "wnli": ["WNLI.tsv"],
}


def teacher_argv(model, task, data, out, *extra):
    return shlex.split(TEACHER_COMMAND.format(model=model, task=task, data=data, out=out)) + list(extra)


def distillation_argv(teacher, student, out, *extra):
    return shlex.split(DISTILLATION_COMMAND.format(teacher=teacher, student=student, out=out)) + list(extra)


def results(out):
    return json.loads((Path(out) / "eval_results.json").read_text())


@pytest.fixture(scope="module")
def rte_teacher(tiny_models, glue_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "RTE"
    assert run_main(run_glue.main, teacher_argv(tiny_models["bert"], "rte", glue_dir / "RTE", out)) == 0
    return out


@pytest.mark.parametrize("task_name", ["cola", "SST-2", "mrpc", "sts-b", "qqp", "MNLI", "qnli", "rte", "wnli"])
def test_teacher_seed_command_on_each_task(task_name, tiny_models, glue_dir, tmp_path):
    task = get_task(task_name)
    out = tmp_path / "teacher"
    argv = teacher_argv(tiny_models["bert"], task_name, glue_dir / task.dir_name, out, "--do_predict")
    assert run_main(run_glue.main, argv) == 0
    metrics = results(out)
    assert EXPECTED_METRICS[task.name] <= set(metrics)
    assert metrics["eval_samples"] == 32
    config = json.loads((out / "config.json").read_text())
    assert config["num_labels"] if "num_labels" in config else len(config["id2label"]) == task.num_labels
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    for name, split in zip(SUBMISSION_FILES[task.name], task.test_splits):
        lines = (out / name).read_text().splitlines()
        assert lines[0] == "index\tprediction"
        indices = [example["idx"] for example in read_glue_tsv(task, glue_dir, split)]
        assert [int(line.split("\t")[0]) for line in lines[1:]] == indices
    if task.name == "mnli":
        diagnostic = (out / "AX.tsv").read_text().splitlines()
        assert len(diagnostic) == 17 and diagnostic[1].split("\t")[1] in {"entailment", "neutral", "contradiction"}


def test_teacher_learns_the_synthetic_rule(tiny_models, glue_dir, tmp_path):
    argv = teacher_argv(tiny_models["bert"], "sst2", glue_dir / "SST-2", tmp_path / "out")
    argv[argv.index("--learning_rate") + 1] = "3e-3"
    argv[argv.index("--num_train_epochs") + 1] = "8"
    assert run_main(run_glue.main, argv + ["--per_gpu_train_batch_size", "8"]) == 0
    assert results(tmp_path / "out")["accuracy"] > 0.9


def test_distillation_seed_command(rte_teacher, tiny_models, glue_dir, tmp_path):
    out = tmp_path / "student"
    argv = distillation_argv(rte_teacher, tiny_models["distilbert"], out, "--data_dir", str(glue_dir / "RTE"),
                             "--logging_steps", "2", "--evaluate_during_training")
    assert run_main(run_glue_w_distillation.main, argv) == 0
    assert set(results(out)) == {"accuracy", "eval_samples"}
    assert (out / "model.safetensors").is_file()
    run_args = json.loads((out / "run_args.json").read_text())
    assert run_args["alpha_corr"] == 0.005 and run_args["do_mask"] is True and run_args["alpha_glue"] == 0.5
    assert list((out / "runs").iterdir()), "TensorBoard events are written"


def test_distillation_seed_command_reads_the_hub_without_data_dir(rte_teacher, tiny_models, glue_dir, tmp_path,
                                                                   monkeypatch):
    requested = []

    def fake_load_dataset(path, name, split, cache_dir=None, **kwargs):
        requested.append((path, name, split))
        examples = read_glue_tsv("rte", glue_dir, split)
        return datasets.Dataset.from_dict({
            "sentence1": [e["text_a"] for e in examples], "sentence2": [e["text_b"] for e in examples],
            "label": [e["label"] for e in examples], "idx": [e["idx"] for e in examples]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = tmp_path / "student"
    assert run_main(run_glue_w_distillation.main, distillation_argv(rte_teacher, tiny_models["distilbert"], out)) == 0
    assert ("nyu-mll/glue", "rte", "train") in requested and ("nyu-mll/glue", "rte", "validation") in requested
    assert results(out)["eval_samples"] == 32


def test_cased_student_with_uncased_teacher_is_refused_with_a_reason(rte_teacher, tiny_models, glue_dir, tmp_path,
                                                                       capsys):
    out = tmp_path / "student"
    argv = distillation_argv(rte_teacher, tiny_models["distilbert_cased"], out, "--data_dir", str(glue_dir / "RTE"))
    assert run_main(run_glue_w_distillation.main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "tokenise differently" in error and "distilbert-base-uncased" in error
    assert not (out / "eval_results.json").exists()


def test_released_behaviour_feeds_the_student_ids_to_the_teacher(rte_teacher, tiny_models, glue_dir, tmp_path):
    from utils.miniature.tiny_models import make_tiny_bert

    # an uncased student and a cased teacher: different vocabularies, the student's the smaller
    cased_teacher = make_tiny_bert(tmp_path / "cased_teacher", cased=True)
    common = ["--data_dir", str(glue_dir / "RTE"), "--max_steps", "2"]
    refused = distillation_argv(cased_teacher, tiny_models["distilbert"], tmp_path / "a", *common)
    assert run_main(run_glue_w_distillation.main, refused) == 2
    released = distillation_argv(cased_teacher, tiny_models["distilbert"], tmp_path / "b", *common,
                                 "--feed_student_ids_to_teacher")
    assert run_main(run_glue_w_distillation.main, released) == 0
    assert "accuracy" in results(tmp_path / "b")
    # the cased student's vocabulary is larger than the uncased teacher's embedding table
    too_large = distillation_argv(rte_teacher, tiny_models["distilbert_cased"], tmp_path / "c", *common,
                                  "--feed_student_ids_to_teacher")
    assert run_main(run_glue_w_distillation.main, too_large) == 2


def test_cased_student_with_logit_kd_only_tokenises_for_each_model(rte_teacher, tiny_models, glue_dir, tmp_path):
    out = tmp_path / "student"
    argv = distillation_argv(rte_teacher, tiny_models["distilbert_cased"], out, "--data_dir", str(glue_dir / "RTE"),
                             "--alpha_ce", "0.5", "--alpha_corr", "0")
    assert run_main(run_glue_w_distillation.main, argv) == 0
    assert "accuracy" in results(out)


def test_width_mismatch_is_refused(rte_teacher, tiny_models, glue_dir, tmp_path, capsys):
    argv = distillation_argv(rte_teacher, tiny_models["distilbert_wide"], tmp_path / "s", "--data_dir",
                             str(glue_dir / "RTE"))
    assert run_main(run_glue_w_distillation.main, argv) == 2
    assert "hidden width (48) differs from the teacher's (32)" in capsys.readouterr().err


def test_teacher_gets_token_type_ids_unless_the_released_omission_is_asked(rte_teacher, tiny_models, glue_dir,
                                                                           tmp_path, monkeypatch):
    seen = []
    original = transformers.BertForSequenceClassification.forward

    @functools.wraps(original)
    def spy(self, *args, **kwargs):
        if not self.training:
            token_type_ids = kwargs.get("token_type_ids")
            seen.append(token_type_ids is not None and bool(token_type_ids.any()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.BertForSequenceClassification, "forward", spy)
    base = distillation_argv(rte_teacher, tiny_models["distilbert"], tmp_path / "a", "--data_dir",
                             str(glue_dir / "RTE"), "--max_steps", "1", "--do_eval", "False")
    assert run_main(run_glue_w_distillation.main, base) == 0
    assert seen and all(seen)
    seen.clear()
    base[base.index("--output_dir") + 1] = str(tmp_path / "b")
    assert run_main(run_glue_w_distillation.main, base + ["--omit_teacher_token_type_ids"]) == 0
    assert seen and not any(seen)


def test_teacher_with_another_label_count_is_refused(rte_teacher, tiny_models, glue_dir, tmp_path, capsys):
    argv = distillation_argv(rte_teacher, tiny_models["distilbert"], tmp_path / "s", "--data_dir", str(glue_dir))
    argv[argv.index("--task_name") + 1] = "mnli"
    assert run_main(run_glue_w_distillation.main, argv) == 2
    assert "has 2 output label(s) but task mnli has 3" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"--task_name": "squad"}, "unknown GLUE task 'squad'"),
    ({"--data_dir": "{tmp}/nowhere"}, "nowhere"),
    ({"--student_model_name_or_path": "./no/such/model"}, "student tokenizer path ./no/such/model does not exist"),
    ({"--alpha_glue": "0", "--alpha_corr": "0"}, "all loss weights are zero"),
    ({"--do_mask": "maybe"}, "expected a boolean"),
])
def test_bad_input_gives_one_clear_line(change, message, rte_teacher, tiny_models, glue_dir, tmp_path, capsys):
    argv = distillation_argv(rte_teacher, tiny_models["distilbert"], tmp_path / "s", "--data_dir",
                             str(glue_dir / "RTE"))
    for flag, value in change.items():
        argv[argv.index(flag) + 1] = value.format(tmp=tmp_path)
    assert run_main(run_glue_w_distillation.main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_non_empty_output_dir_is_protected_in_a_subprocess(rte_teacher, tiny_models, glue_dir, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    argv = distillation_argv(rte_teacher, tiny_models["distilbert"], out, "--data_dir", str(glue_dir / "RTE"))
    done = subprocess.run([sys.executable, "run_glue_w_distillation.py", *argv], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"error: output directory {out} is not empty; pass --overwrite_output_dir to train again there, "
        "or choose another --output_dir"]
    assert (out / "notes.txt").read_text() == "keep me"
    assert list(out.iterdir()) == [out / "notes.txt"]


def test_padding_to_max_length_gives_the_same_metrics(rte_teacher, glue_dir, tmp_path):
    outputs = []
    for name, extra in (("dynamic", []), ("padded", ["--pad_to_max_length"])):
        out = tmp_path / name
        argv = ["--model_name_or_path", str(rte_teacher), "--task_name", "rte", "--data_dir", str(glue_dir),
                "--do_eval", "--output_dir", str(out), *extra]
        assert run_main(run_glue.main, argv) == 0
        outputs.append(results(out))
    assert outputs[0] == pytest.approx(outputs[1])


def test_bf16_run(rte_teacher, tiny_models, glue_dir, tmp_path):
    argv = distillation_argv(rte_teacher, tiny_models["distilbert"], tmp_path / "s", "--data_dir",
                             str(glue_dir / "RTE"), "--bf16", "--max_steps", "3")
    assert run_main(run_glue_w_distillation.main, argv) == 0
    assert 0 <= results(tmp_path / "s")["accuracy"] <= 1


def test_nan_loss_stops_with_a_clear_error(rte_teacher, tiny_models, glue_dir, tmp_path, capsys):
    argv = distillation_argv(rte_teacher, tiny_models["distilbert"], tmp_path / "s", "--data_dir",
                             str(glue_dir / "RTE"), "--learning_rate", "1e20", "--max_grad_norm", "0",
                             "--logging_steps", "1")
    assert run_main(run_glue_w_distillation.main, argv) == 2
    assert "the training loss became nan" in capsys.readouterr().err
    assert not (tmp_path / "s" / "model.safetensors").exists()


def student_weights(out):
    return load_file(str(Path(out) / "model.safetensors"))


def test_interrupted_run_resumes_to_the_same_weights(rte_teacher, tiny_models, glue_dir, tmp_path):
    """Three epochs of 4 steps; checkpoint-6 is in the middle of the second epoch. Dropout and the
    sub-teacher mask draw random numbers, so equal weights need the RNG states restored too."""
    common = ["--data_dir", str(glue_dir / "RTE"), "--save_steps", "3", "--save_total_limit", "0",
              "--alpha_ce", "0.3", "--alpha_mse", "0.1"]
    full = tmp_path / "full"
    assert run_main(run_glue_w_distillation.main,
                    distillation_argv(rte_teacher, tiny_models["distilbert"], full, *common)) == 0
    assert sorted(p.name for p in full.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6", "checkpoint-9"]

    explicit = tmp_path / "explicit"
    argv = distillation_argv(rte_teacher, tiny_models["distilbert"], explicit, *common,
                             "--resume_from_checkpoint", str(full / "checkpoint-6"))
    assert run_main(run_glue_w_distillation.main, argv) == 0

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    subprocess.run(["cp", "-r", str(full / "checkpoint-6"), str(interrupted)], check=True)
    argv = distillation_argv(rte_teacher, tiny_models["distilbert"], interrupted, *common)
    assert run_main(run_glue_w_distillation.main, argv) == 0

    reference = student_weights(full)
    for resumed in (explicit, interrupted):
        weights = student_weights(resumed)
        assert weights.keys() == reference.keys()
        for name in reference:
            assert torch.equal(weights[name], reference[name]), name
        assert results(resumed) == results(full)


def test_max_steps_and_max_samples(rte_teacher, tiny_models, glue_dir, tmp_path):
    out = tmp_path / "s"
    argv = distillation_argv(rte_teacher, tiny_models["distilbert"], out, "--data_dir", str(glue_dir / "RTE"),
                             "--max_steps", "5", "--save_steps", "2", "--max_train_samples", "16",
                             "--max_eval_samples", "8", "--per_device_train_batch_size", "4")
    assert run_main(run_glue_w_distillation.main, argv) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert results(out)["eval_samples"] == 8


KD_ONLY = ["--alpha_corr", "0", "--alpha_ce", "0.5", "--do_mask", "False"]
CORRELATION = ["--alpha_corr", "0.005", "--alpha_ce", "0.5", "--do_mask", "True"]


@pytest.mark.long
@pytest.mark.parametrize("cache, loss", [(["--cache_teacher", "--cache_teacher_max_memory_gb", "0"], KD_ONLY),
                                         ([], CORRELATION)],
                         ids=["memory-mapped teacher cache", "correlation and sub-teacher"])
def test_two_processes_match_one_with_the_same_global_batch(cache, loss, rte_teacher, tiny_models, glue_dir, tmp_path):
    """torchrun with two CPU processes on gloo: batch 8 x 2 processes against 16 x 1, no dropout
    randomness in the loss; with the teacher cache, each process fills its own. The task loss and
    logit KD (in both cases) are batch means that split evenly; the correlation terms standardise and correlate
    the token rows of the global batch (gathered from both processes) under the first process's
    sub-teacher mask, as one process does."""
    common = ["--data_dir", str(glue_dir / "RTE"), *loss, "--max_steps", "4", "--disable_tqdm", *cache]
    student = tmp_path / "student_no_dropout"
    from utils.miniature.tiny_models import make_tiny_distilbert

    make_tiny_distilbert(student, dropout=0.0)
    single, double = tmp_path / "single", tmp_path / "double"
    argv = distillation_argv(rte_teacher, student, single, *common, "--per_device_train_batch_size", "16")
    assert run_main(run_glue_w_distillation.main, argv) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    argv = distillation_argv(rte_teacher, student, double, *common, "--per_device_train_batch_size", "8")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "run_glue_w_distillation.py", *argv], cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "INFO" in done.stderr and done.stderr.count("dev results") == 1, "only the first process logs"
    reference, weights = student_weights(single), student_weights(double)
    for name in reference:
        torch.testing.assert_close(weights[name], reference[name], rtol=1e-4, atol=1e-5)
    assert results(double) == pytest.approx(results(single))
    assert ("teacher cache:" in done.stderr and "memory-mapped in" in done.stderr) == bool(cache)
    assert not list(double.glob("checkpoint-*/teacher_cache/*")), "no cache file is left behind"


def test_teacher_from_csv_and_json_files(tiny_models, glue_dir, tmp_path):
    examples = read_glue_tsv("rte", glue_dir, "train")
    rows = ["sentence1,sentence2,label"] + [f"{e['text_a']},{e['text_b']},{['entailment', 'not_entailment'][e['label']]}"
                                            for e in examples]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    dev = [{"sentence1": e["text_a"], "sentence2": e["text_b"], "label": e["label"]}
           for e in read_glue_tsv("rte", glue_dir, "validation")[:10]]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(row) + "\n" for row in dev))
    out = tmp_path / "teacher"
    argv = ["--model_name_or_path", str(tiny_models["bert"]), "--task_name", "RTE", "--train_file",
            str(tmp_path / "train.csv"), "--validation_file", str(tmp_path / "dev.jsonl"), "--do_train",
            "--max_steps", "2", "--output_dir", str(out)]
    assert run_main(run_glue.main, argv) == 0
    assert results(out)["eval_samples"] == 10


def test_fp16_on_the_cpu_is_refused_in_one_line(rte_teacher, tiny_models, glue_dir, tmp_path, capsys):
    argv = distillation_argv(rte_teacher, tiny_models["distilbert"], tmp_path / "s", "--data_dir",
                             str(glue_dir / "RTE"), "--fp16", "--use_cpu")
    assert run_main(run_glue_w_distillation.main, argv) == 2
    assert capsys.readouterr().err.strip() == "error: --fp16 needs a CUDA GPU; on the CPU use --bf16"


def test_missing_test_split_stops_before_training(tiny_models, glue_dir, tmp_path, capsys):
    data = tmp_path / "RTE"
    data.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (data / name).write_text((glue_dir / "RTE" / name).read_text())
    out = tmp_path / "teacher"
    assert run_main(run_glue.main, teacher_argv(tiny_models["bert"], "rte", data, out, "--do_predict")) == 2
    assert "test.tsv" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists() and not list(out.glob("checkpoint-*"))


def test_nothing_to_do_is_said_in_one_line(capsys):
    argv = ["--model_name_or_path", "unused", "--task_name", "rte", "--output_dir", "unused"]
    assert run_main(run_glue.main, argv) == 2
    assert capsys.readouterr().err.strip() == "error: nothing to do: pass --do_train, --do_eval, --do_predict"
