"""run_lgtm_glue.py end to end: KD, ProKT and LGTM on tiny models, then --do_predict."""

import json
import shlex

import pytest
import torch
from safetensors.torch import load_file

import run_lgtm_glue
from tests.conftest import run_main
from utils.miniature.tiny_models import make_tiny_bert
from utils.tasks.glue_data import read_glue_tsv

SEED_COMMAND = ("--model_name_or_path {student} --teacher_model {teacher} --task_name {task} "
                "--per_device_train_batch_size 32 --per_device_eval_batch_size 32 --learning_rate 3e-05 "
                "--t_learning_rate 3e-05 --alpha_kd 1.0 --temperature 1.0 --num_train_epochs 6 --output_dir {out} "
                "--eval_steps 1000 --do_train --do_eval")
METHODS = {"kd": "--allow_untrained_teacher_head", "prokt": "--train_teacher --init_classifier_as_zero",
           "lgtm": "--train_teacher --init_classifier_to_zero --use_lgtm"}


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """Pre-trained-style encoders without a head: a 4-layer student source and a teacher."""
    root = tmp_path_factory.mktemp("encoders")
    return {"student": make_tiny_bert(root / "student", num_layers=4, classifier=False, seed=1),
            "teacher": make_tiny_bert(root / "teacher", num_layers=2, classifier=False, seed=2)}


def seed_argv(encoders, glue_dir, out, method, task="mnli", *extra):
    command = SEED_COMMAND.format(student=encoders["student"], teacher=encoders["teacher"], task=task, out=out)
    return shlex.split(command) + shlex.split(METHODS[method]) + [
        "--data_dir", str(glue_dir), "--num_layers", "2", "--num_train_epochs", "1", "--eval_steps", "1",
        "--save_steps", "1", "--save_total_limit", "0", "--per_device_train_batch_size", "16", *extra]


@pytest.mark.parametrize("method", ["kd", "prokt", "lgtm"])
def test_seed_command_trains_then_predicts(method, encoders, glue_dir, tmp_path):
    out = tmp_path / method
    assert run_main(run_lgtm_glue.main, seed_argv(encoders, glue_dir, out, method)) == 0
    student = json.loads((out / "eval_results.json").read_text())
    teacher = json.loads((out / "teacher_eval_results.json").read_text())
    assert {"accuracy", "accuracy_mm", "step"} <= set(student) and {"accuracy", "accuracy_mm"} <= set(teacher)
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 2, "the student keeps the first --num_layers layers"

    # the teacher in the checkpoints: frozen for KD, trained by ProKT and LGTM
    initial = load_file(str(encoders["teacher"] / "model.safetensors"))
    state = torch.load(out / "checkpoint-3" / "training_state.pt", weights_only=False)["components"]["teacher"]
    name = "encoder.layer.0.attention.self.query.weight"  # "bert." in front in the classifier
    assert torch.equal(state["bert." + name], initial[name]) == (method == "kd")

    predictions = tmp_path / f"{method}_predictions"
    argv = ["--model_name_or_path", str(out), "--task_name", "mnli", "--per_device_eval_batch_size", "32",
            "--output_dir", str(predictions), "--do_predict", "--data_dir", str(glue_dir)]
    assert run_main(run_lgtm_glue.main, argv) == 0
    for file_name, split in (("MNLI-m.tsv", "test_matched"), ("MNLI-mm.tsv", "test_mismatched")):
        lines = (predictions / file_name).read_text().splitlines()
        assert lines[0] == "index\tprediction"
        assert len(lines) - 1 == len(read_glue_tsv("mnli", glue_dir, split))
        assert {line.split("\t")[1] for line in lines[1:]} <= {"entailment", "neutral", "contradiction"}


def test_quiz_batches_from_a_held_out_part_of_train(encoders, glue_dir, tmp_path):
    out = tmp_path / "held_out"
    argv = seed_argv(encoders, glue_dir, out, "lgtm", "rte", "--quiz_source", "train_split", "--quiz_ratio", "0.25",
                     "--save_steps", "0")
    assert run_main(run_lgtm_glue.main, argv) == 0
    # 64 training rows, a quarter held out: 48 left, 3 steps of 16
    assert json.loads((out / "eval_results.json").read_text())["step"] in (1, 2, 3)
    assert json.loads((out / "run_args.json").read_text())["quiz_source"] == "train_split"


@pytest.mark.parametrize("extra, message", [
    (["--use_lgtm"], "--use_lgtm updates the teacher: it needs --train_teacher"),
    (["--quiz_source", "train_split", "--quiz_ratio", "0.01", "--train_teacher", "--use_lgtm"],
     "leaves no quiz example"),
])
def test_bad_options(extra, message, encoders, glue_dir, tmp_path, capsys):
    argv = seed_argv(encoders, glue_dir, tmp_path / "out", "kd", "rte", *extra)
    assert run_main(run_lgtm_glue.main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_teacher_with_other_labels_or_vocabulary_is_refused(encoders, glue_dir, tmp_path, capsys):
    two_labels = make_tiny_bert(tmp_path / "rte_teacher", num_labels=2)
    argv = seed_argv(dict(encoders, teacher=two_labels), glue_dir, tmp_path / "out", "kd")
    assert run_main(run_lgtm_glue.main, argv) == 2
    assert "has 2 output label(s) but task mnli has 3" in capsys.readouterr().err
    cased = make_tiny_bert(tmp_path / "cased", cased=True, classifier=False)
    argv = seed_argv(dict(encoders, teacher=cased), glue_dir, tmp_path / "out", "kd")
    assert run_main(run_lgtm_glue.main, argv) == 2
    assert "different vocabularies" in capsys.readouterr().err


def test_predict_without_test_data_is_refused(encoders, glue_dir, tmp_path, capsys):
    data = tmp_path / "RTE"
    data.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (data / name).write_text((glue_dir / "RTE" / name).read_text())
    student = make_tiny_bert(tmp_path / "student", num_labels=2)
    argv = ["--model_name_or_path", str(student), "--task_name", "rte", "--output_dir", str(tmp_path / "p"),
            "--do_predict", "--data_dir", str(data)]
    assert run_main(run_lgtm_glue.main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert "test" in error and len(error.splitlines()) == 1


@pytest.mark.long
def test_lgtm_in_two_processes(encoders, glue_dir, tmp_path):
    """torchrun, two CPU processes on gloo: the teachers' gradients are averaged, only the first
    process logs and writes."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "lgtm2"
    argv = seed_argv(encoders, glue_dir, out, "lgtm", "rte", "--per_device_train_batch_size", "8",
                     "--save_steps", "0", "--disable_tqdm")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "run_lgtm_glue.py", *argv], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("step 4: student") == 1, "only the first process logs"
    assert json.loads((out / "eval_results.json").read_text())["eval_samples"] == 32


@pytest.mark.parametrize("group_by_length", [False, True])
def test_quiz_batches_cover_the_quiz_set_each_pass_and_group_by_length(group_by_length):
    from utils.engine.features import PadCollator
    from utils.engine.runtime import Runtime
    from utils.methods.lgtm import QuizBatches

    lengths = [2 + (7 * i) % 31 for i in range(64)]
    features = [{"input_ids": list(range(1, n + 1)), "attention_mask": [1] * n, "labels": i % 2}
                for i, n in enumerate(lengths)]
    runtime = Runtime(device=torch.device("cpu"))
    quiz = QuizBatches(features, PadCollator({"": 0}, 64), batch_size=8, seed=4, group_by_length=group_by_length,
                       runtime=runtime)

    padded, real = 0, 0
    for _ in range(2):  # two passes: each example once per pass, in another order
        seen = []
        for _ in range(len(features) // 8):
            batch = quiz.next()
            seen += batch["attention_mask"].sum(1).tolist()
            padded, real = padded + batch["attention_mask"].numel(), real + int(batch["attention_mask"].sum())
        assert sorted(seen) == sorted(lengths)
    pad_share = 1 - real / padded
    assert (pad_share < 0.15) if group_by_length else (pad_share > 0.3)
