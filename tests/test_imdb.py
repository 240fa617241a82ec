"""IMDB: the readers (aclImdb folder, csv/json files, the hub), review cleaning and truncation,
and run_imdb.py / run_imdb_w_distillation.py end to end on tiny models and a fixture tree."""

import argparse
import functools
import json
import math
import shlex
from pathlib import Path

import datasets
import pytest
import transformers

import run_imdb
import run_imdb_w_distillation
from tests.conftest import run_main
from utils.engine.errors import UserError
from utils.engine.models import load_tokenizer
from utils.miniature.synthetic_imdb import REVIEWS_PER_CLASS, write_acl_imdb
from utils.tasks.imdb import (
    clean_review,
    keep_head_and_tail,
    load_imdb_split,
    read_aclimdb,
    read_imdb_file,
    review_features,
    tokenize_reviews,
)

TEACHER_COMMAND = "--model {model} --output_dir {out} --output_dir_intermed {intermed}"
DISTILLATION_COMMAND = ("--student_model_name_or_path {student} --teacher_model_name_or_path {teacher} "
                        "--output_dir {out} --output_dir_intermed {intermed}")
SMALL = ["--max_seq_length", "48", "--disable_tqdm"]
@pytest.fixture(scope="module")
def imdb_root(tmp_path_factory):
    """The folder holding aclImdb/ (as after extracting aclImdb_v1.tar.gz)."""
    root = tmp_path_factory.mktemp("imdb")
    write_acl_imdb(root)
    return root


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return load_tokenizer(str(tiny_models["bert"]))


def teacher_argv(model, out, *extra):
    command = TEACHER_COMMAND.format(model=model, out=out, intermed=f"{out}_intermed")
    return shlex.split(command) + SMALL + list(extra)


def distillation_argv(teacher, student, out, *extra):
    command = DISTILLATION_COMMAND.format(student=student, teacher=teacher, out=out, intermed=f"{out}_intermed")
    return shlex.split(command) + SMALL + list(extra)


def results(out):
    return json.loads((Path(out) / "eval_results.json").read_text())


def data_args(**values):
    defaults = dict(train_file=None, validation_file=None, data_dir=None, text_column="text", label_column="label",
                    dataset_name="imdb", cache_dir=None, seed=42, max_seq_length=48, truncation="head",
                    head_tokens=128, keep_br_tags=False)
    return argparse.Namespace(**{**defaults, **values})


@pytest.fixture(scope="module")
def imdb_teacher(tiny_models, imdb_root, tmp_path_factory):
    """The teacher seed command, run on the fixture tree (checkpoints every step)."""
    out = tmp_path_factory.mktemp("teacher") / "bert_model_fine_tuned_on_imdb"
    argv = teacher_argv(tiny_models["bert"], out, "--data_dir", str(imdb_root), "--save_steps", "1")
    assert run_main(run_imdb.main, argv) == 0
    return out


# ---------------------------------------------------------------------------- readers


def test_aclimdb_reader_takes_the_folder_or_its_parent_and_ignores_unsup(imdb_root):
    examples = read_aclimdb(imdb_root, "train")
    assert examples == read_aclimdb(imdb_root / "aclImdb", "train")
    assert len(examples) == 2 * REVIEWS_PER_CLASS
    assert [example["label"] for example in examples] == [0] * REVIEWS_PER_CLASS + [1] * REVIEWS_PER_CLASS
    assert [example["idx"] for example in examples] == list(range(len(examples)))
    assert examples[-1]["text_a"] == (imdb_root / "aclImdb/train/pos/5_8.txt").read_text()
    assert all(example["text_b"] is None for example in examples)
    assert "an unlabelled review" not in {example["text_a"] for example in examples}


def test_csv_and_json_files_with_numeric_or_named_labels(tmp_path):
    (tmp_path / "reviews.csv").write_text('text,label\n"great, a good film",1\nbad film,0\n')
    (tmp_path / "reviews.json").write_text(json.dumps([{"text": "great, a good film", "label": "pos"},
                                                       {"text": "bad film", "label": "neg"}]))
    (tmp_path / "reviews.jsonl").write_text('{"review": "great, a good film", "stars": 1.0}\n'
                                            '{"review": "bad film", "stars": "NEG"}\n')
    expected = [{"idx": 0, "text_a": "great, a good film", "text_b": None, "label": 1},
                {"idx": 1, "text_a": "bad film", "text_b": None, "label": 0}]
    assert read_imdb_file(tmp_path / "reviews.csv") == expected
    assert read_imdb_file(tmp_path / "reviews.json") == expected
    assert read_imdb_file(tmp_path / "reviews.jsonl", text_column="review", label_column="stars") == expected


def test_sample_limits_draw_both_classes_reproducibly(imdb_root):
    args = data_args(data_dir=str(imdb_root))
    subset = load_imdb_split(args, "train", limit=6)
    assert len(subset) == 6 and {example["label"] for example in subset} == {0, 1}
    assert subset == load_imdb_split(args, "train", limit=6)
    assert subset != load_imdb_split(data_args(data_dir=str(imdb_root), seed=1), "train", limit=6)


# ---------------------------------------------------------------------------- review features


def test_br_tags_become_line_breaks_unless_kept():
    assert clean_review("Fine.<br /><br />Bad<BR>end<br/>!") == "Fine.\n\nBad\nend\n!"
    assert clean_review("Fine.<br /><br />Bad", keep_br_tags=True) == "Fine.<br /><br />Bad"


def test_br_tags_do_not_reach_the_tokens_by_default(tokenizer):
    examples = [{"idx": 0, "text_a": "a good<br /><br />film", "text_b": None, "label": 1}]
    cleaned = tokenize_reviews(tokenizer, examples, 64)[0]["input_ids"]
    kept = tokenize_reviews(tokenizer, examples, 64, keep_br_tags=True)[0]["input_ids"]
    assert cleaned == tokenizer("a good film")["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<") in kept and len(kept) > len(cleaned)


def test_keep_head_and_tail():
    cls, sep = 101, 102
    sequence, mask = [cls, *range(1, 21), sep], [1] + [0] * 20 + [1]
    assert keep_head_and_tail(sequence, mask, 10, 3) == [cls, 1, 2, 3, 16, 17, 18, 19, 20, sep]
    assert keep_head_and_tail(sequence, mask, 10, 0) == [cls, *range(13, 21), sep]
    assert keep_head_and_tail(sequence, mask, 10, 50) == [cls, *range(1, 9), sep]
    assert keep_head_and_tail(sequence, mask, 22, 3) == sequence


def test_head_tail_truncation_keeps_both_ends_of_a_long_review(tokenizer):
    text = "the movie " + "good " * 30 + "bad film"
    examples = [{"idx": 0, "text_a": text, "text_b": None, "label": 1}]
    full = tokenizer(text)["input_ids"]
    head = tokenize_reviews(tokenizer, examples, 12)[0]
    head_tail = tokenize_reviews(tokenizer, examples, 12, truncation="head_tail", head_tokens=4)[0]
    assert head["input_ids"] == full[:11] + full[-1:]
    assert head_tail["input_ids"] == full[:5] + full[-7:]
    assert len(head_tail["token_type_ids"]) == 12
    short = [{"idx": 0, "text_a": "a good film", "text_b": None, "label": 1}]
    assert tokenize_reviews(tokenizer, short, 12, truncation="head_tail", head_tokens=4)[0]["input_ids"] == \
        tokenizer("a good film")["input_ids"]


def test_review_features_carry_labels_and_the_teacher_tokens(tokenizer, imdb_root):
    examples = read_aclimdb(imdb_root, "test")
    features = review_features(data_args(), tokenizer, examples, teacher_tokenizer=tokenizer)
    assert [feature["labels"] for feature in features] == [example["label"] for example in examples]
    assert all(feature["teacher_input_ids"] == feature["input_ids"] for feature in features)
    assert max(len(feature["input_ids"]) for feature in features) == 48, "the longest reviews are truncated"


# ---------------------------------------------------------------------------- the scripts


def test_both_spellings_of_the_model_option_and_the_released_defaults():
    for flag in ("--model", "--model_name_or_path"):
        args = run_imdb.parse_args([flag, "bert-base-uncased", "--output_dir", "out"])
        assert args.model_name_or_path == "bert-base-uncased"
    args = run_imdb_w_distillation.parse_args(shlex.split(DISTILLATION_COMMAND.format(
        student="distilbert-base-uncased", teacher="./bert_model_fine_tuned_on_imdb", out="./output",
        intermed="./output_intermed")))
    assert (args.alpha_imdb, args.alpha_corr, args.alpha_ce, args.alpha_mse, args.alpha_cos) == (0.5, 0.005, 0, 0, 0)
    assert (args.learning_rate, args.per_device_train_batch_size, args.num_train_epochs) == (5e-5, 16, 3.0)
    assert args.do_train and args.do_eval and args.group_by_length and not args.pad_to_max_length
    assert args.max_seq_length is None and args.truncation == "head" and not args.keep_br_tags
    assert args.output_dir_intermed == "./output_intermed" and not args.do_mask


def test_teacher_seed_command(imdb_teacher):
    metrics = results(imdb_teacher)
    assert set(metrics) == {"accuracy", "eval_samples"} and metrics["eval_samples"] == 12
    assert 0 <= metrics["accuracy"] <= 1
    assert (imdb_teacher / "model.safetensors").is_file() and (imdb_teacher / "tokenizer.json").is_file()
    config = json.loads((imdb_teacher / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    run_args = json.loads((imdb_teacher / "run_args.json").read_text())
    assert run_args["max_seq_length"] == 48 and run_args["group_by_length"] is True
    intermed = Path(f"{imdb_teacher}_intermed")
    assert sorted(path.name for path in intermed.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert list((intermed / "runs").iterdir()), "TensorBoard events go to output_dir_intermed"
    assert not list(imdb_teacher.glob("checkpoint-*")) and not (imdb_teacher / "runs").exists()


def test_saved_teacher_evaluates_alone_to_the_same_accuracy(imdb_teacher, imdb_root, tmp_path):
    argv = teacher_argv(imdb_teacher, tmp_path / "eval", "--data_dir", str(imdb_root / "aclImdb"),
                        "--do_train", "False")
    assert run_main(run_imdb.main, argv) == 0
    assert results(tmp_path / "eval") == results(imdb_teacher)


def test_distillation_seed_command(imdb_teacher, tiny_models, imdb_root, tmp_path):
    out = tmp_path / "output"
    argv = distillation_argv(imdb_teacher, tiny_models["distilbert"], out, "--data_dir", str(imdb_root))
    assert run_main(run_imdb_w_distillation.main, argv) == 0
    assert set(results(out)) == {"accuracy", "eval_samples"} and results(out)["eval_samples"] == 12
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    run_args = json.loads((out / "run_args.json").read_text())
    assert run_args["alpha_imdb"] == 0.5 and run_args["alpha_corr"] == 0.005 and run_args["alpha_ce"] == 0
    assert list((Path(f"{out}_intermed") / "runs").iterdir())


def test_distillation_with_every_loss_term_and_option(imdb_teacher, tiny_models, imdb_root, tmp_path):
    out = tmp_path / "output"
    argv = distillation_argv(imdb_teacher, tiny_models["distilbert"], out, "--data_dir", str(imdb_root),
                             "--alpha_imdb", "0.3", "--alpha_ce", "0.5", "--temperature", "3", "--alpha_mse", "0.5",
                             "--alpha_cos", "0.5", "--do_mask", "True", "--corr_normalizer", "tokens",
                             "--truncation", "head_tail", "--head_tokens", "8", "--keep_br_tags",
                             "--max_train_samples", "8", "--max_eval_samples", "6", "--pad_to_max_length")
    assert run_main(run_imdb_w_distillation.main, argv) == 0
    assert results(out)["eval_samples"] == 6 and math.isfinite(results(out)["accuracy"])


def test_reviews_come_from_the_hub_without_local_data(tiny_models, imdb_root, tmp_path, monkeypatch):
    requested = []

    def fake_load_dataset(path, name=None, split=None, cache_dir=None, **kwargs):
        requested.append((path, split))
        examples = read_aclimdb(imdb_root, split)
        return datasets.Dataset.from_dict({"text": [e["text_a"] for e in examples],
                                           "label": [e["label"] for e in examples]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = tmp_path / "output"
    assert run_main(run_imdb.main, teacher_argv(tiny_models["bert"], out, "--max_steps", "1")) == 0
    assert sorted(requested) == [("imdb", "test"), ("imdb", "train")]
    assert results(out)["eval_samples"] == 12


def test_grouped_and_ungrouped_runs_see_every_example_once_per_epoch(tiny_models, imdb_root, tokenizer, tmp_path,
                                                                      monkeypatch):
    batches = []
    original = transformers.BertForSequenceClassification.forward

    @functools.wraps(original)
    def spy(self, *args, **kwargs):
        if self.training:
            batches.append(kwargs["attention_mask"].sum(dim=1).tolist())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.BertForSequenceClassification, "forward", spy)
    examples = read_aclimdb(imdb_root, "train")
    lengths = sorted(len(feature["input_ids"]) for feature in tokenize_reviews(tokenizer, examples, 48))
    seen = {}
    for grouped in ("True", "False"):
        batches.clear()
        out = tmp_path / grouped
        argv = teacher_argv(tiny_models["bert"], out, "--data_dir", str(imdb_root), "--group_by_length", grouped,
                            "--per_device_train_batch_size", "4", "--num_train_epochs", "2")
        assert run_main(run_imdb.main, argv) == 0
        assert len(batches) == 2 * 3, "3 batches of 4 per epoch"
        for epoch in (batches[:3], batches[3:]):
            assert sorted(length for batch in epoch for length in batch) == lengths
        assert math.isfinite(results(out)["accuracy"])
        seen[grouped] = sum(len(batch) * max(batch) for batch in batches)  # tokens including padding
    assert seen["True"] < seen["False"], "grouping by length pads less"


# ---------------------------------------------------------------------------- bad input


def write_bad_input(kind, root):
    """A data source of the kind named, and the options that point the teacher script at it."""
    if kind == "no aclImdb folders":
        (root / "stuff").mkdir()
        return ["--data_dir", str(root)]
    if kind == "no test split":
        (root / "train" / "pos").mkdir(parents=True)
        (root / "train" / "neg").mkdir()
        return ["--data_dir", str(root)]
    if kind == "empty split":
        for label in ("pos", "neg"):
            (root / "test" / label).mkdir(parents=True)
        return ["--data_dir", str(root)]
    if kind == "csv without the columns":
        (root / "train.csv").write_text("review,sentiment\ngood film,1\n")
        return ["--train_file", str(root / "train.csv")]
    if kind == "label outside 0/1":
        (root / "train.csv").write_text("text,label\ngood film,1\nbad film,2\n")
        return ["--train_file", str(root / "train.csv")]
    if kind == "label name outside neg/pos":
        (root / "train.json").write_text(json.dumps([{"text": "good film", "label": "positive"}]))
        return ["--train_file", str(root / "train.json")]
    if kind == "missing data dir":
        return ["--data_dir", str(root / "nowhere")]
    return ["--max_seq_length", "4096"]


@pytest.mark.parametrize("kind, message", [
    ("no aclImdb folders", "is not an aclImdb folder: expected train/ and test/"),
    ("no test split", "/test/neg and no "),
    ("empty split", "the test split of"),
    ("csv without the columns", "no column text or label (found review, sentiment)"),
    ("label outside 0/1", "row 2: label '2' is not one of 0, 1, neg, pos"),
    ("label name outside neg/pos", "row 1: label 'positive' is not one of 0, 1, neg, pos"),
    ("missing data dir", "data directory not found"),
    ("max_seq_length beyond the model", "--max_seq_length must be between 3 and the model maximum 512"),
])
def test_bad_input_gives_one_clear_line(kind, message, tiny_models, imdb_root, tmp_path, capsys):
    source = tmp_path / "data"
    source.mkdir()
    argv = teacher_argv(tiny_models["bert"], tmp_path / "out", "--data_dir", str(imdb_root))
    argv += write_bad_input(kind, source)
    assert run_main(run_imdb.main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("error: ")
    assert message in error
    assert not (tmp_path / "out" / "eval_results.json").exists()


def test_readers_raise_user_errors(imdb_root, tmp_path):
    with pytest.raises(UserError, match="no split 'unsup'"):
        read_aclimdb(imdb_root, "unsup")
    with pytest.raises(UserError, match="unsupported data file type"):
        read_imdb_file(tmp_path / "reviews.txt")
    (tmp_path / "reviews.csv").write_text("text,label\n")
    with pytest.raises(UserError, match="has no rows"):
        read_imdb_file(tmp_path / "reviews.csv")
