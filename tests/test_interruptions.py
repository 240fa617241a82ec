"""Killed and run again: every training script, stopped by SIGKILL after its first evaluation and a
checkpoint, resumes when its command is run again and ends with the weights and results of an
uninterrupted run; an unfinished run never passes for a finished one.

The run that is killed is a process of its own, started as a user starts it; the uninterrupted
run and the resumed one run in this process (on one thread, as the killed one), which saves two
interpreter start-ups a test and computes the same numbers.
"""

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import BertForQuestionAnswering

from tests.conftest import run_main
from utils.miniature.synthetic_imdb import write_acl_imdb
from utils.miniature.synthetic_squad import write_squad_dir
from utils.miniature.tiny_models import make_tiny_bert, make_tiny_distilbert

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
STEPS = ["--max_steps", "12", "--save_steps", "3", "--save_total_limit", "0", "--logging_steps", "1",
         "--disable_tqdm", "--report_to", "none"]
EVAL = ["--evaluate_during_training", "--eval_steps", "2"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, glue_dir):
    root = tmp_path_factory.mktemp("interrupted")
    bert, distilbert = make_tiny_bert(root / "bert"), make_tiny_distilbert(root / "distilbert")
    squad_bert = make_tiny_bert(root / "squad_bert", classifier=False)
    BertForQuestionAnswering.from_pretrained(squad_bert).save_pretrained(squad_bert)
    encoder = make_tiny_bert(root / "encoder", num_layers=4, classifier=False, seed=1)
    write_acl_imdb(root / "imdb")
    return {"bert": bert, "distilbert": distilbert, "squad_bert": squad_bert, "encoder": encoder,
            "glue": glue_dir / "RTE", "squad": write_squad_dir(root / "squad"), "imdb": root / "imdb"}


def command(name, inputs, out):
    """``(script, argv, folder of the checkpoints)`` of each training script writing to ``out``."""
    squad = ["--data_dir", str(inputs["squad"]), "--train_file", "train.json", "--predict_file", "dev.json",
             "--max_seq_length", "64", "--doc_stride", "16", "--max_query_length", "16",
             "--per_device_train_batch_size", "4"]
    intermed = f"{out}_intermed"
    commands = {
        "run_glue.py": ["--model_name_or_path", inputs["bert"], "--task_name", "rte", "--data_dir", inputs["glue"],
                        "--do_train", "--do_eval", "--per_device_train_batch_size", "8", *EVAL],
        "run_glue_w_distillation.py": ["--teacher_model_name_or_path", inputs["bert"], "--student_model_name_or_path",
                                       inputs["distilbert"], "--task_name", "rte", "--data_dir", inputs["glue"],
                                       "--do_mask", "True", "--alpha_ce", "0.5", "--per_device_train_batch_size", "8",
                                       *EVAL],
        "run_squad.py": ["--model", inputs["squad_bert"], "--output_dir_intermed", intermed, *squad, *EVAL],
        "run_squad_w_distillation.py": ["--model_name_or_path", inputs["distilbert"], "--teacher_name_or_path",
                                        inputs["squad_bert"], "--do_train", "--do_eval", "--alpha_corr", "0.5",
                                        "--alpha_ce", "0.5", "--output_dir_intermed", intermed, *squad, *EVAL],
        "run_imdb.py": ["--model", inputs["bert"], "--data_dir", inputs["imdb"], "--max_seq_length", "48",
                        "--per_device_train_batch_size", "2", "--output_dir_intermed", intermed, *EVAL],
        "run_imdb_w_distillation.py": ["--teacher_model_name_or_path", inputs["bert"], "--student_model_name_or_path",
                                       inputs["distilbert"], "--data_dir", inputs["imdb"], "--max_seq_length", "48",
                                       "--per_device_train_batch_size", "2", "--output_dir_intermed", intermed, *EVAL],
        "run_lgtm_glue.py": ["--model_name_or_path", inputs["encoder"], "--teacher_model", inputs["bert"],
                             "--task_name", "rte", "--data_dir", inputs["glue"], "--do_train", "--do_eval",
                             "--train_teacher", "--init_classifier_to_zero", "--use_lgtm", "--num_layers", "2",
                             "--per_device_train_batch_size", "8", "--eval_steps", "2"],
    }
    checkpoints = Path(intermed) if "--output_dir_intermed" in commands[name] else Path(out)
    return [str(ROOT / name), *map(str, commands[name]), "--output_dir", str(out), *STEPS], checkpoints


pytestmark = pytest.mark.usefixtures("one_thread")


def run_here(argv, caplog):
    """Run the script of ``argv`` (a path and its arguments) in this process; the log it wrote."""
    caplog.clear()
    with caplog.at_level("INFO"):
        assert run_main(importlib.import_module(Path(argv[0]).stem).main, argv[1:]) == 0
    return caplog.text


def kill_when(argv, path):
    """Start ``argv``, SIGKILL it as soon as ``path`` exists; fail if it finished first."""
    process = subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=ENV, cwd=ROOT)
    deadline = time.monotonic() + 300
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path} appeared: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


@pytest.mark.parametrize("name", ["run_glue.py", "run_glue_w_distillation.py", "run_squad.py",
                                  "run_squad_w_distillation.py", "run_imdb.py", "run_imdb_w_distillation.py",
                                  "run_lgtm_glue.py"])
def test_a_killed_run_resumes_to_the_uninterrupted_runs_weights_and_results(name, inputs, tmp_path, caplog):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    argv, checkpoints = command(name, inputs, killed)
    kill_when(argv, checkpoints / "checkpoint-6")  # after the evaluations of steps 2 and 4, and 2 checkpoints
    assert not (killed / "run_complete.json").exists()
    run_here(command(name, inputs, whole)[0], caplog)
    log = run_here(argv, caplog)
    assert "resuming the interrupted run" in log and "from checkpoint-6" in log
    assert (killed / "run_complete.json").is_file()
    expected, got = weights(whole), weights(killed)
    assert expected.keys() == got.keys() and all(expected[key].equal(got[key]) for key in expected)
    assert json.loads((killed / "eval_results.json").read_text()) == json.loads((whole / "eval_results.json").read_text())


def refused_here(argv, capsys):
    """Run the script of ``argv`` in this process, expecting a refusal; its stderr lines."""
    capsys.readouterr()
    assert run_main(importlib.import_module(Path(argv[0]).stem).main, argv[1:]) == 2
    return capsys.readouterr().err.strip().splitlines()


def test_a_resume_with_other_options_is_refused_unless_allowed(inputs, tmp_path, caplog, capsys):
    out = tmp_path / "changed"
    argv, checkpoints = command("run_glue.py", inputs, out)
    kill_when(argv, checkpoints / "checkpoint-3")
    recorded = (out / "run_args.json").read_text()
    error = refused_here([*argv, "--learning_rate", "1e-3"], capsys)
    assert len(error) == 1 and "--learning_rate 5e-05 -> 0.001" in error[0] and "--allow_changed_args" in error[0]
    assert (out / "run_args.json").read_text() == recorded, "the record still tells the truth"
    # options that change no number (logging, checkpoint retention) do not block the resume
    run_here([*argv, "--logging_steps", "5", "--save_total_limit", "2", "--allow_changed_args", "False"], caplog)
    assert (out / "run_complete.json").is_file()
    assert "holds a finished run (run_complete.json)" in refused_here(argv, capsys)[-1]


def test_allowed_changes_continue_with_a_warning_and_keep_the_old_record(inputs, tmp_path, caplog):
    out = tmp_path / "allowed"
    argv, checkpoints = command("run_glue.py", inputs, out)
    kill_when(argv, checkpoints / "checkpoint-3")
    recorded = json.loads((out / "run_args.json").read_text())
    log = run_here([*argv, "--learning_rate", "1e-4", "--allow_changed_args"], caplog)
    assert "resuming" in log and "with changed options: --learning_rate 5e-05 -> 0.0001" in log
    assert json.loads((out / "run_args.json").read_text())["learning_rate"] == 1e-4
    before = sorted(out.glob("run_args.before_checkpoint-*.json"))
    assert len(before) == 1 and json.loads(before[0].read_text()) == recorded
