"""Every numeric option declares its range where it is defined (``utils.engine.cli.bounded``), and
a value outside it (NaN and infinities included) is one line and exit status 2 before any work."""

import argparse

import pytest

import run_glue
import run_glue_w_distillation
import run_imdb
import run_imdb_w_distillation
import run_lgtm_glue
import run_squad
import run_squad_w_distillation
from tests.conftest import run_main
from utils.engine.cli import ArgumentParser, bounded

SCRIPTS = {"run_glue.py": run_glue, "run_glue_w_distillation.py": run_glue_w_distillation, "run_imdb.py": run_imdb,
           "run_imdb_w_distillation.py": run_imdb_w_distillation, "run_lgtm_glue.py": run_lgtm_glue,
           "run_squad.py": run_squad, "run_squad_w_distillation.py": run_squad_w_distillation}
# enough of each command line to parse; the paths are never read: a bad value stops the parse
NEEDED = {"run_glue.py": ["--model_name_or_path", "m", "--task_name", "rte", "--do_train"],
          "run_glue_w_distillation.py": ["--teacher_model_name_or_path", "t", "--student_model_name_or_path", "s",
                                         "--task_name", "rte"],
          "run_imdb.py": ["--model", "m"],
          "run_imdb_w_distillation.py": ["--teacher_model_name_or_path", "t", "--student_model_name_or_path", "s"],
          "run_lgtm_glue.py": ["--model_name_or_path", "m", "--teacher_model", "t", "--task_name", "rte",
                               "--do_train"],
          "run_squad.py": ["--model", "m"],
          "run_squad_w_distillation.py": ["--model_name_or_path", "m", "--teacher_name_or_path", "t"]}


def parser_of(script, monkeypatch):
    """The ``ArgumentParser`` that ``script``'s ``parse_args`` builds."""
    built = []

    def capture(self, args=None, namespace=None):
        built.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        SCRIPTS[script].parse_args([])
    return built[0]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_numeric_option_declares_its_range(script, monkeypatch):
    actions = parser_of(script, monkeypatch)._actions
    plain = [action.option_strings[0] for action in actions if action.type in (int, float)]
    assert not plain, f"numeric options without a declared range: {plain}"
    assert sum(getattr(action.type, "__qualname__", "").startswith("bounded.") for action in actions) >= 15


# (script, option, value, what the line says)
OUT_OF_RANGE = [
    ("run_glue_w_distillation.py", "--temperature", "nan", "--temperature must be a finite number, got nan"),
    ("run_glue.py", "--weight_decay", "nan", "--weight_decay must be a finite number, got nan"),
    ("run_glue_w_distillation.py", "--alpha_corr", "nan", "--alpha_corr must be a finite number, got nan"),
    ("run_imdb_w_distillation.py", "--alpha_corr", "-inf", "--alpha_corr must be a finite number, got -inf"),
    ("run_squad.py", "--max_grad_norm", "nan", "--max_grad_norm must be a finite number, got nan"),
    ("run_glue_w_distillation.py", "--off_diagonal_weight", "-1", "--off_diagonal_weight must not be negative"),
    ("run_glue_w_distillation.py", "--mask_prob", "1", "--mask_prob must be at least 0 and below 1, got 1"),
    ("run_lgtm_glue.py", "--alpha_kd", "1.5", "--alpha_kd must be between 0 and 1, got 1.5"),
    ("run_lgtm_glue.py", "--t_alpha_kd", "-1", "--t_alpha_kd must be between 0 and 1, got -1"),
    ("run_lgtm_glue.py", "--quiz_ratio", "1", "--quiz_ratio must be above 0 and below 1, got 1"),
    ("run_lgtm_glue.py", "--lgtm_r", "0", "--lgtm_r must be above 0, got 0"),
    ("run_glue.py", "--max_steps", "-5", "--max_steps must be -1 (train --num_train_epochs) or at least 1, got -5"),
    ("run_glue.py", "--seed", "-3", "--seed must be between 0 and 4294967295, got -3"),
    ("run_squad_w_distillation.py", "--doc_stride", "0", "--doc_stride must be at least 1, got 0"),
    ("run_imdb.py", "--per_gpu_train_batch_size", "0",
     "--per_device_train_batch_size must be at least 1, got 0"),
    ("run_glue.py", "--learning_rate", "inf", "--learning_rate must be a finite number, got inf"),
    ("run_glue.py", "--num_train_epochs", "two", "argument --num_train_epochs: expected a number, got 'two'"),
]


@pytest.mark.parametrize("script, option, value, message", OUT_OF_RANGE,
                         ids=[f"{script} {option} {value}" for script, option, value, _ in OUT_OF_RANGE])
def test_a_value_outside_its_range_is_one_line_before_any_work(script, option, value, message, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [*NEEDED[script], "--output_dir", str(out), f"{option}={value}"]
    assert run_main(SCRIPTS[script].main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("error: ") and message in error, error
    assert not out.exists()


def test_the_sentinel_and_the_bounds_themselves_are_accepted():
    parse = bounded(int, at_least=1, sentinel=(-1, "unset"))
    assert parse("-1") == -1 and parse("1") == 1
    assert bounded(float, at_least=0, at_most=1)("1") == 1.0 and bounded(float, above=0)("1e-300") == 1e-300
    for text in ("0", "-2", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
