"""run_squad.py and run_squad_w_distillation.py end to end on tiny models and tiny SQuAD files."""

import functools
import json
import shlex
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
import transformers

import losses.one_to_one
import run_squad
import run_squad_w_distillation
from tests.conftest import run_main
from utils.miniature.synthetic_squad import QUESTIONS, squad_dataset, write_json_file, write_squad_dir
from utils.miniature.tiny_models import make_tiny_bert, make_tiny_distilbert
from utils.tasks.squad_data import read_squad_file

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]

TEACHER_COMMAND = "--model {model} --output_dir {out} --output_dir_intermed {intermed}"
DISTILLATION_COMMAND = (
    "--model_type distilbert --model_name_or_path {student} --output_dir {out} --teacher_type bert "
    "--teacher_name_or_path {teacher} --data_dir {data} --train_file train.json --predict_file dev.json "
    "--do_train --do_eval --do_lower_case --save_steps 5541 --logging_steps 5541 --alpha_cos 0.0 --alpha_corr 0.5 "
    "--alpha_ce 0.0 --alpha_squad 0.5 --num_train_epochs 3")
SMALL_WINDOWS = ["--max_seq_length", "64", "--doc_stride", "16", "--max_query_length", "16"]
QUESTION_IDS = [f"q{number:02d}" for number in range(len(QUESTIONS))]


def teacher_argv(model, out, intermed, *extra):
    return shlex.split(TEACHER_COMMAND.format(model=model, out=out, intermed=intermed)) + list(extra)


def distillation_argv(student, teacher, data, out, *extra):
    return shlex.split(DISTILLATION_COMMAND.format(student=student, teacher=teacher, data=data, out=out)) + list(extra)


def read_json(path):
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("squad_models")
    return {
        "bert": make_tiny_bert(root / "bert", classifier=False),
        "distilbert": make_tiny_distilbert(root / "distilbert"),
        "distilbert_cased": make_tiny_distilbert(root / "distilbert_cased", cased=True),
        "distilbert_wide": make_tiny_distilbert(root / "distilbert_wide", hidden_size=48),
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_squad_dir(tmp_path_factory.mktemp("squad_data"))


@pytest.fixture(scope="module")
def teacher(models, data_dir, tmp_path_factory):
    """The teacher seed command (with local data and small windows); checkpoints every step."""
    root = tmp_path_factory.mktemp("squad_teacher")
    argv = teacher_argv(models["bert"], root / "output", root / "output_intermed", "--data_dir", str(data_dir),
                        "--train_file", "train.json", "--predict_file", "dev.json", *SMALL_WINDOWS,
                        "--per_device_train_batch_size", "32", "--save_steps", "1")
    assert run_main(run_squad.main, argv) == 0
    return root


def test_teacher_seed_command_saves_model_results_and_predictions(teacher):
    out, intermed = teacher / "output", teacher / "output_intermed"
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert read_json(out / "config.json")["architectures"] == ["BertForQuestionAnswering"]
    results = read_json(out / "eval_results.json")
    assert set(results) == {"exact_match", "f1", "eval_samples"} and results["eval_samples"] == len(QUESTIONS)
    assert 0 <= results["exact_match"] <= results["f1"] <= 100
    predictions = read_json(out / "predictions.json")
    nbest = read_json(out / "nbest_predictions.json")
    assert sorted(predictions) == sorted(nbest) == QUESTION_IDS
    for question_id, entries in nbest.items():
        assert 1 <= len(entries) <= 20 and entries[0]["text"] == predictions[question_id]
        assert set(entries[0]) == {"text", "probability", "start_logit", "end_logit"}
    run_args = read_json(out / "run_args.json")
    assert run_args["learning_rate"] == 5e-5 and run_args["per_device_train_batch_size"] == 32
    assert run_args["num_train_epochs"] == 3.0 and run_args["max_grad_norm"] == 1.0 and run_args["seed"] == 42
    # checkpoints and TensorBoard logs in output_dir_intermed only (the last two checkpoints kept)
    assert sorted(path.name for path in intermed.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-11"]
    assert list((intermed / "runs").iterdir()) and not (out / "runs").exists()
    assert not list(out.glob("checkpoint-*"))


def test_standalone_scorer_agrees_with_the_run(teacher, data_dir):
    done = subprocess.run([sys.executable, "-m", "utils.tasks.squad_metrics", str(data_dir / "dev.json"),
                           str(teacher / "output" / "predictions.json")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    results = read_json(teacher / "output" / "eval_results.json")
    assert json.loads(done.stdout) == pytest.approx({"exact_match": results["exact_match"], "f1": results["f1"]})


def test_evaluating_the_saved_teacher_reproduces_its_results_with_any_padding(teacher, data_dir, tmp_path):
    expected = read_json(teacher / "output" / "eval_results.json")
    for name, extra in (("dynamic", []), ("padded", ["--pad_to_max_length"])):
        argv = ["--model_name_or_path", str(teacher / "output"), "--do_train", "False", "--data_dir", str(data_dir),
                "--predict_file", "dev.json", "--output_dir", str(tmp_path / name), *SMALL_WINDOWS, *extra]
        assert run_main(run_squad.main, argv) == 0
        assert read_json(tmp_path / name / "eval_results.json") == pytest.approx(expected)
    assert read_json(tmp_path / "padded" / "predictions.json") == read_json(teacher / "output" / "predictions.json")


def test_teacher_seed_command_as_written_reads_the_hub(models, data_dir, tmp_path, monkeypatch):
    requested = []

    def fake_load_dataset(path, split, cache_dir=None, **kwargs):
        requested.append((path, split))
        examples = read_squad_file(data_dir / ("train.json" if split == "train" else "dev.json"))
        return datasets.Dataset.from_list([dict(example, answers={
            "text": [answer["text"] for answer in example["answers"]],
            "answer_start": [answer["answer_start"] for answer in example["answers"]]}) for example in examples])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    argv = teacher_argv(models["bert"], tmp_path / "output", tmp_path / "output_intermed")
    assert run_main(run_squad.main, argv) == 0
    assert requested == [("rajpurkar/squad", "validation"), ("rajpurkar/squad", "train")]
    assert read_json(tmp_path / "output" / "eval_results.json")["eval_samples"] == len(QUESTIONS)
    assert read_json(tmp_path / "output" / "run_args.json")["max_seq_length"] == 384


def test_teacher_learns_the_training_answers(models, data_dir, tmp_path):
    argv = ["--model", str(models["bert"]), "--output_dir", str(tmp_path / "out"), "--data_dir", str(data_dir),
            "--train_file", "train.json", "--predict_file", "train.json", "--learning_rate", "1e-2",
            "--num_train_epochs", "40", "--max_seq_length", "128", "--doc_stride", "64", "--max_query_length", "24",
            "--report_to", "none", "--save_steps", "0"]
    assert run_main(run_squad.main, argv) == 0
    assert read_json(tmp_path / "out" / "eval_results.json")["f1"] > 60


def test_distillation_seed_command(teacher, models, data_dir, tmp_path):
    out = tmp_path / "student"
    argv = distillation_argv(models["distilbert"], teacher / "output", data_dir, out)
    assert run_main(run_squad_w_distillation.main, argv) == 0
    assert (out / "model.safetensors").is_file()
    assert read_json(out / "config.json")["architectures"] == ["DistilBertForQuestionAnswering"]
    results = read_json(out / "eval_results.json")
    assert set(results) == {"exact_match", "f1", "eval_samples"} and results["eval_samples"] == len(QUESTIONS)
    assert sorted(read_json(out / "predictions.json")) == QUESTION_IDS
    run_args = read_json(out / "run_args.json")
    assert (run_args["alpha_squad"], run_args["alpha_corr"], run_args["alpha_ce"], run_args["alpha_cos"],
            run_args["alpha_mse"], run_args["do_mask"]) == (0.5, 0.5, 0.0, 0.0, 0.0, False)
    assert (run_args["max_seq_length"], run_args["doc_stride"], run_args["max_query_length"], run_args["n_best_size"],
            run_args["max_answer_length"]) == (384, 128, 64, 20, 30)
    assert list((out / "runs").iterdir()), "TensorBoard events are written"


def test_teacher_reads_token_type_ids_frozen_and_the_student_trains(teacher, models, data_dir, tmp_path, monkeypatch):
    calls = {"teacher": [], "student": []}

    def spy(original, who):
        @functools.wraps(original)
        def forward(self, *args, **kwargs):
            token_type_ids = kwargs.get("token_type_ids")
            calls[who].append((self.training, torch.is_grad_enabled(),
                               token_type_ids is not None and bool(token_type_ids.any())))
            return original(self, *args, **kwargs)
        return forward

    monkeypatch.setattr(transformers.BertForQuestionAnswering, "forward",
                        spy(transformers.BertForQuestionAnswering.forward, "teacher"))
    monkeypatch.setattr(transformers.DistilBertForQuestionAnswering, "forward",
                        spy(transformers.DistilBertForQuestionAnswering.forward, "student"))
    argv = distillation_argv(models["distilbert"], teacher / "output", data_dir, tmp_path / "a", *SMALL_WINDOWS,
                             "--max_steps", "2", "--do_eval", "False")
    assert run_main(run_squad_w_distillation.main, argv) == 0
    assert calls["teacher"] == [(False, False, True)] * 2
    assert calls["student"] == [(True, True, False)] * 2
    calls["teacher"].clear()
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "b")
    assert run_main(run_squad_w_distillation.main, argv + ["--omit_teacher_token_type_ids"]) == 0
    assert calls["teacher"] == [(False, False, False)] * 2


def test_alpha_ce_distils_the_start_and_the_end_logits(teacher, models, data_dir, tmp_path, monkeypatch):
    seen = []
    original = losses.one_to_one.kd_loss

    def spy(student_logits, teacher_logits, temperature):
        seen.append((student_logits.shape, teacher_logits.shape, temperature))
        return original(student_logits, teacher_logits, temperature)

    monkeypatch.setattr(losses.one_to_one, "kd_loss", spy)
    argv = distillation_argv(models["distilbert"], teacher / "output", data_dir, tmp_path / "s", *SMALL_WINDOWS,
                             "--max_steps", "1", "--do_eval", "False", "--per_device_train_batch_size", "4")
    argv[argv.index("--alpha_ce") + 1] = "0.5"
    argv[argv.index("--alpha_corr") + 1] = "0"
    assert run_main(run_squad_w_distillation.main, argv + ["--temperature", "3"]) == 0
    assert len(seen) == 2, "one KD term for the start logits, one for the end logits"
    assert all(student == teacher_shape and student[0] == 4 and temperature == 3.0
               for student, teacher_shape, temperature in seen)


def test_unlabelled_predict_file_is_predicted_without_scores(teacher, data_dir, tmp_path):
    write_json_file(tmp_path / "test.json", squad_dataset(gold="none"))
    out = tmp_path / "predicted"
    argv = ["--model_name_or_path", str(teacher / "output"), "--do_train", "False", "--predict_file",
            str(tmp_path / "test.json"), "--output_dir", str(out), *SMALL_WINDOWS]
    assert run_main(run_squad.main, argv) == 0
    assert sorted(read_json(out / "predictions.json")) == QUESTION_IDS
    assert not (out / "eval_results.json").exists()


def test_misplaced_training_answers_are_skipped_with_one_warning(models, tmp_path, caplog):
    dataset = squad_dataset(gold="train")
    dataset["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 1
    write_json_file(tmp_path / "data" / "train.json", dataset)
    write_json_file(tmp_path / "data" / "dev.json", squad_dataset(gold="dev"))
    argv = teacher_argv(models["bert"], tmp_path / "out", tmp_path / "intermed", "--data_dir", str(tmp_path / "data"),
                        "--train_file", "train.json", "--predict_file", "dev.json", "--max_steps", "1", *SMALL_WINDOWS)
    assert run_main(run_squad.main, argv) == 0
    warnings = [record.getMessage() for record in caplog.records
                if record.levelname == "WARNING" and record.name.startswith(("utils", "run_"))]
    assert len(warnings) == 1 and "1 of 13 training questions have an answer_start that does not point" in warnings[0]
    assert "first: id q00" in warnings[0]


def test_cased_student_is_refused_even_for_logit_kd(teacher, models, data_dir, tmp_path, capsys):
    for extra in ([], ["--alpha_corr", "0", "--alpha_ce", "0.5"]):
        argv = distillation_argv(models["distilbert_cased"], teacher / "output", data_dir, tmp_path / "s", *extra)
        assert run_main(run_squad_w_distillation.main, argv) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "tokenise differently" in error
        assert "distilbert-base-uncased" in error
    assert not (tmp_path / "s" / "eval_results.json").exists()


def test_width_mismatch_is_refused(teacher, models, data_dir, tmp_path, capsys):
    argv = distillation_argv(models["distilbert_wide"], teacher / "output", data_dir, tmp_path / "s")
    assert run_main(run_squad_w_distillation.main, argv) == 2
    assert "hidden width (48) differs from the teacher's (32)" in capsys.readouterr().err


def write_bad_files(directory):
    directory.mkdir(parents=True, exist_ok=True)
    write_json_file(directory / "not_squad.json", {"articles": []})
    write_json_file(directory / "v2.json", squad_dataset(version="v2.0"))
    write_json_file(directory / "no_question.json",
                    {"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x"}]}]}]})


@pytest.mark.parametrize("change, message", [
    ({"--train_file": "missing.json"}, "SQuAD file not found: {data}/missing.json"),
    ({"--data_dir": "{tmp}/nowhere"}, "SQuAD file not found: {tmp}/nowhere/"),
    ({"--predict_file": "{tmp}/bad/not_squad.json"}, "not_squad.json is not a SQuAD v1.1 file: expected a JSON object"),
    ({"--train_file": "{tmp}/bad/v2.json"}, "v2.json is SQuAD v2.0; only SQuAD v1.1 is supported"),
    ({"--train_file": "{tmp}/bad/no_question.json"}, "data[0].paragraphs[0].qas[0] has no 'question'"),
    ({"--version_2_with_negative": None}, "--version_2_with_negative: SQuAD v2.0 is not supported"),
    ({"--teacher_name_or_path": "{tmp}/nowhere"}, "teacher tokenizer path {tmp}/nowhere does not exist"),
    ({"--teacher_name_or_path": "{bert}"}, "is not a question-answering model (saved as BertModel)"),
    ({"--max_seq_length": "20"}, "leaves no room for the context in windows of --max_seq_length 20"),
    ({"--doc_stride": "0"}, "--doc_stride must be at least 1"),
    ({"--max_seq_length": "600"}, "--max_seq_length 600 is more than the model can read (512 tokens)"),
    ({"--alpha_squad": "0", "--alpha_corr": "0"}, "all loss weights are zero"),
])
def test_bad_input_gives_one_clear_line(change, message, teacher, models, data_dir, tmp_path, capsys):
    write_bad_files(tmp_path / "bad")
    argv = distillation_argv(models["distilbert"], teacher / "output", data_dir, tmp_path / "s")
    for flag, value in change.items():
        value = value and value.format(tmp=tmp_path, bert=models["bert"])
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag] if value is None else [flag, value]
    assert run_main(run_squad_w_distillation.main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert message.format(tmp=tmp_path, data=data_dir) in error
    assert not (tmp_path / "s" / "model.safetensors").exists()


def test_a_teacher_is_needed_only_when_a_loss_term_uses_it(models, data_dir, tmp_path, capsys):
    argv = distillation_argv(models["distilbert"], "x", data_dir, tmp_path / "s", *SMALL_WINDOWS, "--max_steps", "1")
    position = argv.index("--teacher_name_or_path")
    del argv[position:position + 2]
    assert run_main(run_squad_w_distillation.main, argv) == 2
    assert "--teacher_name_or_path is needed" in capsys.readouterr().err
    argv[argv.index("--alpha_corr") + 1] = "0"
    assert run_main(run_squad_w_distillation.main, argv) == 0
