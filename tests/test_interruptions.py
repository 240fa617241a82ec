"""Killed and run again: every training script, stopped by SIGKILL after its first evaluation and a
checkpoint, resumes when its command is run again and ends with the weights and results of an
uninterrupted run; an unfinished run never passes for a finished one."""

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

from tests.squad_fixtures import write_squad_dir
from tests.test_imdb import write_acl_imdb
from utils.tiny_models import make_tiny_bert, make_tiny_distilbert

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
STEPS = ["--max_steps", "40", "--save_steps", "3", "--save_total_limit", "0", "--logging_steps", "1",
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


def run(argv):
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


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
def test_a_killed_run_resumes_to_the_uninterrupted_runs_weights_and_results(name, inputs, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run(command(name, inputs, whole)[0])
    argv, checkpoints = command(name, inputs, killed)
    kill_when(argv, checkpoints / "checkpoint-6")  # after the evaluations of steps 2 and 4, and 2 checkpoints
    assert not (killed / "run_complete.json").exists()
    again = run(argv)
    assert "resuming the interrupted run" in again.stderr and "from checkpoint-6" in again.stderr
    assert (killed / "run_complete.json").is_file()
    expected, got = weights(whole), weights(killed)
    assert expected.keys() == got.keys() and all(expected[key].equal(got[key]) for key in expected)
    assert json.loads((killed / "eval_results.json").read_text()) == json.loads((whole / "eval_results.json").read_text())


def test_a_resume_with_other_options_is_refused_unless_allowed(inputs, tmp_path):
    out = tmp_path / "changed"
    argv, checkpoints = command("run_glue.py", inputs, out)
    kill_when(argv, checkpoints / "checkpoint-3")
    recorded = (out / "run_args.json").read_text()
    changed = [*argv, "--learning_rate", "1e-3"]
    refused = subprocess.run([sys.executable, *changed], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert refused.returncode == 2
    error = refused.stderr.strip().splitlines()
    assert len(error) == 1 and "--learning_rate 5e-05 -> 0.001" in error[0] and "--allow_changed_args" in error[0]
    assert (out / "run_args.json").read_text() == recorded, "the record still tells the truth"
    # options that change no number (logging, checkpoint retention) do not block the resume
    run([*argv, "--logging_steps", "5", "--save_total_limit", "2", "--allow_changed_args", "False"])
    assert (out / "run_complete.json").is_file()
    refused = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert refused.returncode == 2 and "holds a finished run (run_complete.json)" in refused.stderr


def test_allowed_changes_continue_with_a_warning_and_keep_the_old_record(inputs, tmp_path):
    out = tmp_path / "allowed"
    argv, checkpoints = command("run_glue.py", inputs, out)
    kill_when(argv, checkpoints / "checkpoint-3")
    recorded = json.loads((out / "run_args.json").read_text())
    done = run([*argv, "--learning_rate", "1e-4", "--allow_changed_args"])
    assert "resuming" in done.stderr and "with changed options: --learning_rate 5e-05 -> 0.0001" in done.stderr
    assert json.loads((out / "run_args.json").read_text())["learning_rate"] == 1e-4
    before = sorted(out.glob("run_args.before_checkpoint-*.json"))
    assert len(before) == 1 and json.loads(before[0].read_text()) == recorded
