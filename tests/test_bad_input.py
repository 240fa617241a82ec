"""Bad input ends in one clear line on stderr and exit status 2, before any work and without
destroying anything; a failed start does not block the corrected rerun."""

import json
import shutil
import socket
import time

import pytest

import run_glue
import run_glue_w_distillation
import run_imdb
import run_lgtm_glue
import run_squad
from tests.conftest import run_main
from utils.engine import models
from utils.engine.errors import UserError
from utils.miniature.synthetic_imdb import write_acl_imdb
from utils.miniature.synthetic_squad import write_squad_dir
from utils.miniature.tiny_models import make_tiny_bert, make_tiny_distilbert

FAST = ["--max_steps", "2", "--disable_tqdm", "--report_to", "none", "--logging_steps", "1"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, glue_dir):
    root = tmp_path_factory.mktemp("bad")
    bert, distilbert = make_tiny_bert(root / "bert"), make_tiny_distilbert(root / "distilbert")
    no_tokenizer = make_tiny_bert(root / "no_tokenizer")
    for path in no_tokenizer.iterdir():
        if path.name not in ("config.json", "model.safetensors"):
            path.unlink()
    damaged = make_tiny_bert(root / "damaged")
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    not_safetensors = make_tiny_bert(root / "not_safetensors")
    (not_safetensors / "model.safetensors").write_text("these are not weights")
    (root / "empty").mkdir()
    encoder = make_tiny_bert(root / "encoder", classifier=False)
    write_acl_imdb(root / "imdb")
    return {"bert": bert, "distilbert": distilbert, "no_tokenizer": no_tokenizer, "damaged": damaged,
            "not_safetensors": not_safetensors, "empty": root / "empty", "encoder": encoder,
            "rte": glue_dir / "RTE", "squad": write_squad_dir(root / "squad"), "imdb": root / "imdb"}


def glue(inputs, out, model="bert", *extra):
    return ["--model_name_or_path", str(inputs[model]), "--task_name", "rte", "--data_dir", str(inputs["rte"]),
            "--do_train", "--output_dir", str(out), *FAST, *extra]


def distil(inputs, out, student="distilbert", teacher="bert", *extra):
    return ["--teacher_model_name_or_path", str(inputs[teacher]), "--student_model_name_or_path", str(inputs[student]),
            "--task_name", "rte", "--data_dir", str(inputs["rte"]), "--output_dir", str(out), *FAST, *extra]


def lgtm(inputs, out, *extra):
    return ["--model_name_or_path", str(inputs["encoder"]), "--teacher_model", str(inputs["bert"]), "--task_name",
            "rte", "--data_dir", str(inputs["rte"]), "--do_train", "--do_eval", "--num_layers", "1",
            "--output_dir", str(out), *FAST, *extra]


def one_line_error(main, argv, capsys, message):
    assert run_main(main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("error: "), error
    assert message in error, error
    return error


CASES = {
    # a model folder without tokenizer files: every word would be [UNK]
    "no tokenizer (run_glue)": (run_glue.main, lambda i, o: glue(i, o, "no_tokenizer"), "has no tokenizer"),
    "no tokenizer (run_imdb)": (run_imdb.main, lambda i, o: ["--model", str(i["no_tokenizer"]), "--data_dir",
                                                             str(i["imdb"]), "--output_dir", str(o), *FAST],
                                "has no tokenizer"),
    "no tokenizer (run_squad)": (run_squad.main, lambda i, o: ["--model", str(i["no_tokenizer"]), "--data_dir",
                                                               str(i["squad"]), "--train_file", "train.json",
                                                               "--predict_file", "dev.json", "--output_dir", str(o),
                                                               *FAST], "has no tokenizer"),
    "no tokenizer (student, logit KD)": (
        run_glue_w_distillation.main,
        lambda i, o: distil(i, o, "no_tokenizer", "bert", "--alpha_corr", "0", "--alpha_mse", "0", "--alpha_cos", "0"),
        "the student folder"),
    "damaged weights (model)": (run_glue.main, lambda i, o: glue(i, o, "damaged"), "damaged or not a safetensors"),
    "not safetensors (student)": (run_glue_w_distillation.main, lambda i, o: distil(i, o, "not_safetensors"),
                                  "damaged or not a safetensors"),
    "damaged weights (teacher)": (run_glue_w_distillation.main, lambda i, o: distil(i, o, "distilbert", "damaged"),
                                  "damaged or not a safetensors"),
    "empty model folder": (run_glue.main, lambda i, o: glue(i, o, "empty"), "is empty: not a saved model"),
    "max_seq_length 0": (run_glue.main, lambda i, o: glue(i, o, "bert", "--max_seq_length", "0"),
                         "--max_seq_length must be between 5"),
    "max_seq_length 1 (distillation)": (run_glue_w_distillation.main,
                                        lambda i, o: distil(i, o, "distilbert", "bert", "--max_seq_length", "1"),
                                        "--max_seq_length must be between 5"),
    "max_seq_length past the positions (LGTM)": (run_lgtm_glue.main,
                                                 lambda i, o: lgtm(i, o, "--max_seq_length", "1000"),
                                                 "and 512 (what the model reads), got 1000"),
    "negative learning rate": (run_glue.main, lambda i, o: glue(i, o, "bert", "--learning_rate", "-0.001"),
                               "--learning_rate must be above 0"),
    "learning rate 0": (run_glue.main, lambda i, o: glue(i, o, "bert", "--learning_rate", "0"),
                        "--learning_rate must be above 0"),
    "negative teacher learning rate": (run_lgtm_glue.main,
                                       lambda i, o: lgtm(i, o, "--train_teacher", "--t_learning_rate", "-0.003"),
                                       "--t_learning_rate must be above 0"),
    "0 epochs": (run_glue.main, lambda i, o: [*glue(i, o)[:-len(FAST)], "--num_train_epochs", "0"],
                 "--num_train_epochs must be above 0"),
    "-1 epochs (LGTM)": (run_lgtm_glue.main, lambda i, o: [*lgtm(i, o)[:-len(FAST)], "--num_train_epochs", "-1"],
                         "--num_train_epochs must be above 0"),
    "warmup ratio above 1": (run_glue.main, lambda i, o: glue(i, o, "bert", "--warmup_ratio", "1.5"),
                             "--warmup_ratio must be between 0 and 1"),
    "negative save steps": (run_glue.main, lambda i, o: glue(i, o, "bert", "--save_steps", "-1"),
                            "--save_steps must not be negative"),
    "doc stride past the window": (run_squad.main, lambda i, o: [
        "--model", str(i["bert"]), "--data_dir", str(i["squad"]), "--train_file", "train.json", "--predict_file",
        "dev.json", "--output_dir", str(o), "--max_seq_length", "64", "--max_query_length", "16",
        "--doc_stride", "60", *FAST], "--doc_stride 60 is longer than the context part of a window with a question of"),
    "head_tail without room": (run_imdb.main, lambda i, o: [
        "--model", str(i["bert"]), "--data_dir", str(i["imdb"]), "--output_dir", str(o), "--max_seq_length", "48",
        "--truncation", "head_tail", "--head_tokens", "48", *FAST], "leaves no room for the tail"),
    "a teacher without a trained head": (run_glue_w_distillation.main,
                                         lambda i, o: distil(i, o, "distilbert", "encoder"),
                                         "saved without a trained classification head (BertModel)"),
    "KD from a teacher without a trained head": (
        run_lgtm_glue.main, lambda i, o: [*lgtm(i, o)[:2], "--teacher_model", str(i["encoder"]), *lgtm(i, o)[4:]],
        "saved without a trained classification head (BertModel)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_before_any_work(case, inputs, tmp_path, capsys):
    main, argv, message = CASES[case]
    out = tmp_path / "out"
    one_line_error(main, argv(inputs, out), capsys, message)
    assert not out.exists() or not (out / "run_args.json").exists(), "refused before the run started"


def test_an_output_dir_that_is_a_file_is_refused_before_loading(inputs, tmp_path, capsys, monkeypatch):
    target = tmp_path / "results.txt"
    target.write_text("mine")
    monkeypatch.setattr(models, "load_classifier", lambda *a, **k: pytest.fail("a model was loaded"))
    one_line_error(run_glue.main, glue(inputs, target), capsys, "is a file, not a folder")
    one_line_error(run_glue.main, glue(inputs, target / "sub"), capsys, "is a file, not a folder")
    assert target.read_text() == "mine"


def test_the_untrained_head_refusal_can_be_overridden_with_a_warning(inputs, tmp_path, caplog):
    out = tmp_path / "allowed"
    argv = distil(inputs, out, "distilbert", "encoder", "--allow_untrained_teacher_head")
    assert run_main(run_glue_w_distillation.main, argv) == 0
    assert "distilling from a teacher with a random classification head" in caplog.text
    assert (out / "run_complete.json").is_file()


def test_a_failed_start_does_not_block_the_corrected_rerun(inputs, tmp_path, capsys):
    out = tmp_path / "diverged"
    error = one_line_error(run_glue.main, glue(inputs, out, "bert", "--learning_rate", "1e20", "--max_grad_norm", "0",
                                              "--report_to", "tensorboard"), capsys, "training stopped at step ")
    assert "the training loss became nan" in error and "between steps 1 and 1" not in error
    assert "check them; otherwise lower the learning rate" in error
    assert sorted(path.name for path in out.iterdir()) == ["run_args.json", "runs"]
    assert run_main(run_glue.main, glue(inputs, out)) == 0
    assert (out / "run_complete.json").is_file()
    assert json.loads((out / "run_args.json").read_text())["learning_rate"] == 5e-5


def test_a_diverging_lgtm_teacher_stops_the_run_naming_its_gradient(inputs, tmp_path, capsys):
    argv = lgtm(inputs, tmp_path / "teacher", "--train_teacher", "--init_classifier_to_zero", "--use_lgtm",
                "--t_learning_rate", "1e30", "--max_grad_norm", "0", "--max_steps", "6")
    error = one_line_error(run_lgtm_glue.main, argv, capsys, "teacher_grad_norm became")
    assert "training stopped at step" in error


def test_a_finished_run_is_not_overwritten_without_the_flag(inputs, tmp_path, capsys):
    out = tmp_path / "done"
    assert run_main(run_glue.main, glue(inputs, out)) == 0
    before = (out / "model.safetensors").read_bytes()
    one_line_error(run_glue.main, glue(inputs, out), capsys, "holds a finished run (run_complete.json)")
    assert (out / "model.safetensors").read_bytes() == before
    assert run_main(run_glue.main, glue(inputs, out, "bert", "--overwrite_output_dir", "--seed", "3")) == 0
    assert (out / "run_complete.json").is_file()


def test_an_unreachable_hub_is_said_once_and_fast(monkeypatch, caplog):
    import huggingface_hub.constants

    probed = []
    monkeypatch.setattr(models, "probe_hub", lambda endpoint: probed.append(endpoint) or "network is unreachable")
    connections = []

    def offline(*args, **kwargs):  # as on a machine without a network
        connections.append(args)
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models.hub_reachable, "answer", None, raising=False)
    start = time.monotonic()
    for _ in range(2):
        with pytest.raises(UserError) as refused:
            models.load_config("someone/no-such-model-here", what="teacher")
    assert time.monotonic() - start < 10
    message = str(refused.value)
    assert "\n" not in message and "could not load the teacher config 'someone/no-such-model-here'" in message
    assert caplog.text.count("cannot be reached (network is unreachable)") == 1 and len(probed) == 1
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False, "the hub client's own setting is left as it was"
    # the loads themselves stay in the local cache; the hub client may try once, for itself, to
    # fetch the registry its user-agent header reads (and keeps it for the process)
    assert len(connections) <= 1


def test_a_model_folder_that_lost_its_tokenizer_after_training_is_named(inputs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(inputs["bert"], copy)
    for name in models.TOKENIZER_FILES:
        (copy / name).unlink(missing_ok=True)
    with pytest.raises(UserError, match=f"the student folder {copy} has no tokenizer"):
        models.load_tokenizer(str(copy), what="student")


def test_overwriting_or_resuming_a_finished_run_unmarks_it_until_it_finishes(inputs, tmp_path, capsys):
    out = tmp_path / "again"
    assert run_main(run_glue.main, glue(inputs, out, "bert", "--save_steps", "1", "--save_total_limit", "0")) == 0
    assert (out / "run_complete.json").is_file() and (out / "eval_results.json").is_file()
    diverging = ["--learning_rate", "1e20", "--max_grad_norm", "0"]
    # an explicit resume of a finished run's checkpoint, which then fails: no longer marked finished
    argv = glue(inputs, out, "bert", "--resume_from_checkpoint", str(out / "checkpoint-1"), "--allow_changed_args",
                "--max_seq_length", "1")
    one_line_error(run_glue.main, argv, capsys, "--max_seq_length must be between")
    assert not (out / "run_complete.json").exists()
    # --overwrite_output_dir removes the old run's mark and results before the new run starts
    assert run_main(run_glue.main, glue(inputs, out)[:-len(FAST)] + FAST + ["--overwrite_output_dir"]) == 0
    one_line_error(run_glue.main, glue(inputs, out, "bert", "--overwrite_output_dir", *diverging), capsys,
                   "training stopped")
    assert not (out / "run_complete.json").exists() and not (out / "eval_results.json").exists()


def test_an_evaluation_does_not_mark_an_unfinished_training_folder(inputs, tmp_path):
    out = tmp_path / "unfinished"
    (out / "checkpoint-2").mkdir(parents=True)
    argv = ["--model_name_or_path", str(inputs["bert"]), "--task_name", "rte", "--data_dir", str(inputs["rte"]),
            "--do_eval", "--output_dir", str(out), "--disable_tqdm"]
    assert run_main(run_glue.main, argv) == 0
    assert (out / "eval_results.json").is_file() and not (out / "run_complete.json").exists()
    fresh = tmp_path / "evaluated"
    assert run_main(run_glue.main, [*argv[:-3], "--output_dir", str(fresh), "--disable_tqdm"]) == 0
    assert (fresh / "run_complete.json").is_file(), "an evaluation in its own folder is a finished run"
