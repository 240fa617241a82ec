"""Golden runs: a fixed tiny run of each of the seven scripts gives the training losses at every
logged step, the dev results and the final weights recorded in ``tests/golden_runs.json``.

They were recorded before the scripts' per-batch steps moved into ``utils/``, so that a change of
layout that alters a loss, a random draw, an update order or a schedule is caught. After a
deliberate change of behaviour, record them again:

    GOLDEN_RECORD=1 python -m pytest tests/test_golden.py
"""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import run_glue
import run_glue_w_distillation
import run_imdb
import run_imdb_w_distillation
import run_lgtm_glue
import run_squad
import run_squad_w_distillation
from tests.conftest import run_main
from tests.squad_fixtures import one_thread, write_squad_dir  # noqa: F401
from tests.test_imdb import write_acl_imdb
from utils.tiny_models import make_tiny_bert, make_tiny_distilbert

GOLDEN = Path(__file__).with_name("golden_runs.json")
RECORD = os.environ.get("GOLDEN_RECORD") == "1"
COMMON = ["--logging_steps", "1", "--disable_tqdm", "--seed", "7"]
SQUAD_WINDOWS = ["--max_seq_length", "64", "--doc_stride", "16", "--max_query_length", "16"]
LGTM = ["--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32", "--learning_rate", "3e-05",
        "--t_learning_rate", "3e-05", "--alpha_kd", "1.0", "--temperature", "1.0", "--num_train_epochs", "1",
        "--num_layers", "2", "--do_train", "--do_eval", "--eval_steps", "2", "--save_steps", "1", "--save_total_limit", "0"]
LGTM_METHODS = {"kd": ["--allow_untrained_teacher_head"], "prokt": ["--train_teacher", "--init_classifier_as_zero"],
                "lgtm": ["--train_teacher", "--init_classifier_to_zero", "--use_lgtm",
                         "--gradient_accumulation_steps", "2"]}


def weights_summary(tensors):
    """Two float64 numbers that any change of any weight moves: sum_k (k + 1) * sum(w_k) and
    sum_k ||w_k||, over the tensors in name order."""
    names = sorted(tensors)
    return {"weighted_sum": sum((k + 1) * tensors[name].double().sum().item() for k, name in enumerate(names)),
            "norms": sum(tensors[name].double().norm().item() for name in names),
            "tensors": len(names)}


def logged_losses(log_dir):
    """``[(step, train/loss)]`` from the run's TensorBoard events."""
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return [[event.step, event.value] for event in accumulator.Scalars("train/loss")]


def summary(out, log_root=None, teacher_checkpoint=None):
    values = {"losses": logged_losses(Path(log_root or out) / "runs"),
              "weights": weights_summary(load_file(str(Path(out) / "model.safetensors"))),
              "eval": json.loads((Path(out) / "eval_results.json").read_text())}
    if teacher_checkpoint is not None:
        state = torch.load(Path(teacher_checkpoint) / "training_state.pt", weights_only=False)
        values["teacher_at_checkpoint"] = weights_summary(state["components"]["teacher"])
    return values


@pytest.fixture(scope="module")
def runs(tmp_path_factory, glue_dir):
    """Every golden run, one after the other (the distillation runs read the teachers' output)."""
    root = tmp_path_factory.mktemp("golden")
    bert, distilbert = make_tiny_bert(root / "bert"), make_tiny_distilbert(root / "distilbert")
    squad_bert = make_tiny_bert(root / "squad_bert", classifier=False)
    squad_data = write_squad_dir(root / "squad")
    imdb_root = root / "imdb"
    write_acl_imdb(imdb_root)
    results = {}

    def run(name, main, argv, **where):
        assert run_main(main, [*argv, *COMMON]) == 0, name
        results[name] = summary(**where)

    glue_teacher = root / "glue_teacher"
    run("run_glue", run_glue.main,
        ["--model_name_or_path", str(bert), "--task_name", "rte", "--data_dir", str(glue_dir / "RTE"), "--do_train",
         "--per_device_train_batch_size", "16", "--num_train_epochs", "2", "--output_dir", str(glue_teacher)],
        out=glue_teacher)
    out = root / "glue_distillation"
    run("run_glue_w_distillation", run_glue_w_distillation.main,
        ["--teacher_model_name_or_path", str(glue_teacher), "--student_model_name_or_path", str(distilbert),
         "--task_name", "rte", "--data_dir", str(glue_dir / "RTE"), "--alpha_ce", "0.5", "--alpha_glue", "0.5",
         "--alpha_corr", "0.005", "--alpha_mse", "0.1", "--alpha_cos", "0.1", "--do_mask", "True",
         "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2", "--num_train_epochs", "2",
         "--output_dir", str(out)], out=out)
    squad_teacher = root / "squad_teacher"
    run("run_squad", run_squad.main,
        ["--model", str(squad_bert), "--output_dir", str(squad_teacher), "--data_dir", str(squad_data),
         "--train_file", "train.json", "--predict_file", "dev.json", *SQUAD_WINDOWS,
         "--per_device_train_batch_size", "8", "--num_train_epochs", "2"], out=squad_teacher)
    out = root / "squad_distillation"
    run("run_squad_w_distillation", run_squad_w_distillation.main,
        ["--model_name_or_path", str(distilbert), "--teacher_name_or_path", str(squad_teacher), "--data_dir",
         str(squad_data), "--train_file", "train.json", "--predict_file", "dev.json", "--do_train", "--do_eval",
         "--alpha_corr", "0.5", "--alpha_ce", "0.5", "--alpha_squad", "0.5", "--do_mask", "True", *SQUAD_WINDOWS,
         "--per_device_train_batch_size", "8", "--num_train_epochs", "2", "--output_dir", str(out),
         "--output_dir_intermed", str(root / "squad_distillation_intermed")],
        out=out, log_root=root / "squad_distillation_intermed")
    imdb_teacher = root / "imdb_teacher"
    run("run_imdb", run_imdb.main,
        ["--model", str(bert), "--output_dir", str(imdb_teacher), "--data_dir", str(imdb_root),
         "--max_seq_length", "48", "--per_device_train_batch_size", "4", "--num_train_epochs", "2"],
        out=imdb_teacher)
    out = root / "imdb_distillation"
    run("run_imdb_w_distillation", run_imdb_w_distillation.main,
        ["--teacher_model_name_or_path", str(imdb_teacher), "--student_model_name_or_path", str(distilbert),
         "--output_dir", str(out), "--data_dir", str(imdb_root), "--max_seq_length", "48", "--alpha_ce", "0.5",
         "--do_mask", "True", "--per_device_train_batch_size", "4", "--num_train_epochs", "2"], out=out)
    student = make_tiny_bert(root / "lgtm_student", num_layers=4, classifier=False, seed=1)
    teacher = make_tiny_bert(root / "lgtm_teacher", num_layers=2, classifier=False, seed=2)
    for method, flags in LGTM_METHODS.items():
        out = root / f"lgtm_{method}"
        run(f"run_lgtm_glue {method}", run_lgtm_glue.main,
            ["--model_name_or_path", str(student), "--teacher_model", str(teacher), "--task_name", "mnli",
             "--data_dir", str(glue_dir / "MNLI"), "--output_dir", str(out), *LGTM, *flags],
            out=out, teacher_checkpoint=out / "checkpoint-1")
    if RECORD:
        GOLDEN.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return results


RUN_NAMES = ["run_glue", "run_glue_w_distillation", "run_squad", "run_squad_w_distillation", "run_imdb",
             "run_imdb_w_distillation", "run_lgtm_glue kd", "run_lgtm_glue prokt", "run_lgtm_glue lgtm"]


def assert_close(actual, expected, where):
    if isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            assert_close(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert math.isclose(actual, expected, rel_tol=1e-6, abs_tol=1e-9), f"{where}: {actual} != {expected}"
    else:
        assert actual == expected, where


@pytest.mark.parametrize("name", RUN_NAMES)
def test_run_matches_its_golden_record(name, runs):
    golden = json.loads(GOLDEN.read_text())
    assert len(runs[name]["losses"]) >= 2, "each run logs several steps"
    assert_close(runs[name], golden[name], name)
