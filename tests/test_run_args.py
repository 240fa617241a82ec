"""``run_args.json`` records the command line as typed, and running a script again with it repeats
the run; the parsed arguments are never changed by the script."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import BertForQuestionAnswering

import run_glue_w_distillation
import run_imdb
import run_lgtm_glue
import run_squad_w_distillation
from tests.conftest import run_main
from utils.miniature.synthetic_imdb import write_acl_imdb
from utils.miniature.synthetic_squad import write_squad_dir
from utils.miniature.tiny_models import make_tiny_bert, make_tiny_distilbert

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--per_device_train_batch_size", "16", "--num_train_epochs", "1", "--logging_steps", "1", "--disable_tqdm"]


def argv_from_run_args(values, **changes):
    """The command line that ``values`` (a ``run_args.json``) records, with ``changes``."""
    argv = []
    for key, value in {**values, **changes}.items():
        if value is not None:
            argv += [f"--{key}", str(value)]
    return argv


@pytest.fixture(scope="module")
def commands(tmp_path_factory, glue_dir):
    """``(script, argv)`` per script, on tiny models and data made here."""
    root = tmp_path_factory.mktemp("run_args")
    teacher, student = make_tiny_bert(root / "teacher"), make_tiny_distilbert(root / "student")
    squad_teacher = make_tiny_bert(root / "squad_teacher", classifier=False)
    BertForQuestionAnswering.from_pretrained(squad_teacher).save_pretrained(squad_teacher)  # a SQuAD head
    squad = write_squad_dir(root / "squad")
    encoder = make_tiny_bert(root / "encoder", num_layers=4, classifier=False, seed=1)
    write_acl_imdb(root / "imdb")
    return {
        "imdb": (run_imdb.main, [  # --max_seq_length left to the models' limit, found at run time
            "--model", str(teacher), "--data_dir", str(root / "imdb"), *SMALL]),
        "glue distillation": (run_glue_w_distillation.main, [
            "--teacher_model_name_or_path", str(teacher), "--student_model_name_or_path", str(student),
            "--task_name", "RTE", "--data_dir", str(glue_dir / "RTE"), "--do_mask", "True", "--alpha_glue", "0.7",
            *SMALL]),
        "squad distillation": (run_squad_w_distillation.main, [
            "--model_name_or_path", str(student), "--teacher_name_or_path", str(squad_teacher), "--data_dir",
            str(squad), "--train_file", "train.json", "--predict_file", "dev.json", "--do_train", "--do_eval",
            "--alpha_squad", "0.5", "--alpha_corr", "0.5", "--max_seq_length", "64", "--doc_stride", "16",
            "--max_query_length", "16", *SMALL]),
        "lgtm": (run_lgtm_glue.main, [
            "--model_name_or_path", str(encoder), "--teacher_model", str(teacher), "--task_name", "rte",
            "--data_dir", str(glue_dir / "RTE"), "--do_train", "--do_eval", "--train_teacher",
            "--init_classifier_to_zero", "--use_lgtm", "--num_layers", "2", "--eval_steps", "2", *SMALL]),
    }


@pytest.mark.parametrize("name", ["imdb", "glue distillation", "squad distillation", "lgtm"])
def test_a_run_repeated_from_its_run_args_gives_the_same_result(name, commands, tmp_path):
    main, argv = commands[name]
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_main(main, [*argv, "--output_dir", str(first)]) == 0
    recorded = json.loads((first / "run_args.json").read_text())
    if "task_name" in recorded:
        assert recorded["task_name"] == argv[argv.index("--task_name") + 1], "the task name as typed"
    assert recorded["per_device_eval_batch_size"] is None and recorded["eval_steps"] in (None, 2), \
        "defaults that follow from other options are not written into the command"
    if name == "imdb":
        assert recorded["max_seq_length"] is None and recorded["model_name_or_path"] == argv[1]
    assert run_main(main, argv_from_run_args(recorded, output_dir=second)) == 0
    assert json.loads((second / "run_args.json").read_text()) == dict(recorded, output_dir=str(second))
    assert json.loads((second / "eval_results.json").read_text()) == json.loads((first / "eval_results.json").read_text())
    first_weights, second_weights = (load_file(str(Path(out) / "model.safetensors")) for out in (first, second))
    assert all(first_weights[key].equal(second_weights[key]) for key in first_weights)


def test_parsing_and_running_leave_the_parsed_arguments_as_typed(commands, tmp_path, monkeypatch):
    main, argv = commands["lgtm"]
    parsed = []
    parse_args = run_lgtm_glue.parse_args
    monkeypatch.setattr(run_lgtm_glue, "parse_args", lambda argv: parsed.append(parse_args(argv)) or parsed[-1])
    assert run_main(main, [*argv, "--output_dir", str(tmp_path / "out")]) == 0
    assert vars(parsed[0]) == vars(parse_args([*argv, "--output_dir", str(tmp_path / "out")]))
    assert parsed[0].task_name == "rte" and parsed[0].per_device_eval_batch_size is None
    assert not hasattr(parsed[0], "evaluate_during_training") or parsed[0].evaluate_during_training is False


# the options that change no number a run computes, as their definitions declare them
RESULT_NEUTRAL = {"output_dir", "overwrite_output_dir", "allow_changed_args", "resume_from_checkpoint",
                  "per_device_eval_batch_size", "max_predict_samples", "logging_steps", "save_steps",
                  "save_total_limit", "report_to", "disable_tqdm", "dataloader_num_workers", "cache_dir",
                  "local_rank"}
SCRIPT_NEUTRAL = {"run_glue.py": {"do_predict", "test_file"},
                  "run_glue_w_distillation.py": {"do_predict", "test_file", "cache_teacher_dir",
                                                 "cache_teacher_max_memory_gb"},
                  "run_lgtm_glue.py": {"do_predict", "test_file"},
                  "run_imdb.py": {"output_dir_intermed"},
                  "run_imdb_w_distillation.py": {"output_dir_intermed", "cache_teacher_dir",
                                                 "cache_teacher_max_memory_gb"},
                  "run_squad.py": {"output_dir_intermed"},
                  "run_squad_w_distillation.py": {"output_dir_intermed", "cache_teacher_dir",
                                                  "cache_teacher_max_memory_gb"}}


@pytest.mark.parametrize("script", sorted(SCRIPT_NEUTRAL))
def test_options_declare_where_they_are_defined_whether_they_change_results(script, tmp_path, monkeypatch):
    """Each script's parser knows its result-neutral options (a resume may differ in them), the
    parsed command keeps that beside its values, and ``run_args.json`` records only the values."""
    import importlib

    from utils.engine.cli import save_run_args

    module = importlib.import_module(script[:-3])
    parsed = {}
    monkeypatch.setattr(module, "check_training_args", lambda args: parsed.setdefault("command", args))
    pair = ["--teacher_model_name_or_path", "t", "--student_model_name_or_path", "s"]
    needed = {"run_glue.py": ["--model_name_or_path", "m", "--task_name", "rte"],
              "run_glue_w_distillation.py": [*pair, "--task_name", "rte"],
              "run_imdb_w_distillation.py": pair,
              "run_lgtm_glue.py": ["--model_name_or_path", "m", "--task_name", "rte"]}.get(
                  script, ["--model_name_or_path", "m"])
    module.parse_args([*needed, "--output_dir", str(tmp_path), "--do_eval"])
    command = parsed["command"]
    assert command.result_neutral == RESULT_NEUTRAL | SCRIPT_NEUTRAL[script]
    assert "result_neutral" not in vars(command)
    save_run_args(command, tmp_path)
    assert "result_neutral" not in json.loads((tmp_path / "run_args.json").read_text())


def test_a_record_under_a_released_spelling_still_compares(tmp_path):
    """A run recorded its teacher as ``teacher_model_name_or_path`` (or LGTM's ``teacher_model``)
    before the option got one name: resuming it with another teacher is still a change."""
    from utils.engine.runtime import changed_options

    command = run_glue_w_distillation.parse_args(["--teacher_model_name_or_path", "new", "--student_model_name_or_path",
                                                  "s", "--task_name", "rte", "--output_dir", str(tmp_path)])
    assert command.teacher_name_or_path == "new" and "teacher_model_name_or_path" not in vars(command)
    assert changed_options({"teacher_model_name_or_path": "old", "task_name": "rte"}, command) == {
        "teacher_name_or_path": ("old", "new")}
    lgtm = run_lgtm_glue.parse_args(["--model_name_or_path", "m", "--teacher_model", "new", "--task_name", "rte",
                                     "--do_train", "--output_dir", str(tmp_path)])
    assert changed_options({"teacher_model": "new", "seed": 42}, lgtm) == {}
    assert changed_options({"teacher_model": "old"}, lgtm) == {"teacher_name_or_path": ("old", "new")}
