"""The GLUE pieces the GLUE scripts share: data options, features, evaluation, test predictions."""

import logging
from pathlib import Path

import numpy as np

from utils.engine.cli import bounded, neutral
from utils.engine.errors import UserError
from utils.engine.features import tokenize_examples
from utils.engine.loop import predict
from utils.engine.models import max_input_length
from utils.engine.runtime import write_json
from utils.tasks.glue_data import (
    GLUE_DIAGNOSTIC,
    get_task,
    load_glue_diagnostic,
    load_glue_split,
    record_columns,
    record_text_columns,
    submission_file_names,
    write_glue_submission,
)
from utils.tasks.metrics import glue_metrics
from utils.tasks.predictions import Evaluation, prediction_set, write_eval_predictions

logger = logging.getLogger(__name__)


def add_glue_data_args(parser, max_seq_length=128):
    group = parser.add_argument_group("data")
    group.add_argument("--task_name", required=True, type=task_name,
                       help="cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte or wnli (any case; sst-2, sts-b too)")
    group.add_argument("--data_dir", default=None,
                       help="glue_data/<TASK> (or glue_data) with the task's TSV files; default: the hub's nyu-mll/glue")
    group.add_argument("--train_file", default=None, help="a csv or json training file instead")
    group.add_argument("--validation_file", default=None, help="a csv or json validation file instead")
    neutral(group.add_argument("--test_file", default=None, help="a csv or json test file instead"))
    group.add_argument("--max_seq_length", type=bounded(int), default=max_seq_length,
                       help="tokens per example (its range, from the models, is checked when they load)")
    return group


def check_max_seq_length(max_seq_length, tokenizer, *models):
    """Refuse a ``--max_seq_length`` that leaves a sentence pair no token of its own (0 and 1 mean
    "no truncation" to a tokenizer) or that the models cannot read (their position embeddings)."""
    least = tokenizer.num_special_tokens_to_add(pair=True) + 2
    limit = max_input_length(tokenizer, *models)
    if not least <= max_seq_length <= limit:
        raise UserError(f"--max_seq_length must be between {least} (a token of each sentence and the special "
                        f"tokens) and {limit} (what the model reads), got {max_seq_length}")


def task_name(name):
    """``--task_name`` as typed, once ``get_task`` knows it (the task itself is ``get_task(name)``)."""
    get_task(name)
    return name


def load_glue_examples(args, task, split, limit=None):
    """The examples of one split of ``task`` from the file, the data dir or the hub (first ``limit`` only)."""
    data_file = {"train": args.train_file, "test": getattr(args, "test_file", None)}.get(split)
    if split.startswith("validation") and args.validation_file:
        if split not in ("validation", "validation_matched"):
            return []
        data_file = args.validation_file
    if split.startswith("test") and getattr(args, "test_file", None) and split not in ("test", "test_matched"):
        return []
    examples = load_glue_split(task, split, data_dir=args.data_dir, data_file=data_file, cache_dir=args.cache_dir)
    if not examples:
        raise UserError(f"the {split} split of {task.name} is empty")
    return examples[:limit] if limit else examples


def check_data_files(args, task):
    """The csv/json files given for ``task`` have the columns it needs (its texts; a ``label``
    column for --train_file and --validation_file): one line before any model loads."""
    for option, labelled in (("train_file", True), ("validation_file", True), ("test_file", False)):
        path = getattr(args, option, None)
        if not path:
            continue
        columns = record_columns(path)
        record_text_columns(task, columns, Path(path))
        if labelled and "label" not in columns:
            raise UserError(f"--{option} {path}: no label column ('label') for task {task.name}; found "
                            f"{', '.join(columns)}")


def labelled_features(tokenized, examples):
    """Add each example's label to its features (as ``labels``; test examples have none)."""
    if any(example["label"] is None for example in examples):
        return tokenized
    return [dict(features, labels=example["label"]) for features, example in zip(tokenized, examples)]


def build_features(args, tokenizer, examples, teacher_tokenizer=None):
    """Features of ``examples`` for the student (and, when it tokenises differently, the teacher)."""
    features = tokenize_examples(tokenizer, examples, args.max_seq_length)
    if teacher_tokenizer is not None:
        teacher_features = tokenize_examples(teacher_tokenizer, examples, args.max_seq_length, prefix="teacher_")
        features = [dict(own, **teacher) for own, teacher in zip(features, teacher_features)]
    return labelled_features(features, examples)


def split_features(args, task, split, limit, tokenizer, teacher_tokenizer=None):
    """(features, examples) of one split of ``task``."""
    examples = load_glue_examples(args, task, split, limit)
    return build_features(args, tokenizer, examples, teacher_tokenizer), examples


def _load_sets(args, task, splits, limit, key, tokenizer, teacher_tokenizer):
    """``{split: (features, [example[key], ...])}`` for the non-empty ``splits``."""
    sets = {}
    for split in splits:
        features, examples = split_features(args, task, split, limit, tokenizer, teacher_tokenizer)
        if features:
            sets[split] = (features, [example[key] for example in examples])
    return sets


def load_glue_dev_sets(args, task, tokenizer, teacher_tokenizer=None):
    """``{split: (features, labels)}`` for the task's dev splits (MNLI: matched and mismatched)."""
    return _load_sets(args, task, task.eval_splits, args.max_eval_samples, "label", tokenizer, teacher_tokenizer)


def load_test_sets(args, task, tokenizer, teacher_tokenizer=None):
    """``{split: (features, indices)}`` for the task's test splits."""
    return _load_sets(args, task, task.test_splits, args.max_predict_samples, "idx", tokenizer, teacher_tokenizer)


def load_prediction_sets(args, task, tokenizer, teacher_tokenizer=None):
    """The test sets ``--do_predict`` writes predictions for, loaded before any training so that
    a missing test file stops the run at once: ``[(task, {split: (features, indices)})]``, with
    the diagnostic set (``AX.tsv``) for MNLI when it can be found."""
    if not args.do_predict:
        return []
    test_sets = load_test_sets(args, task, tokenizer, teacher_tokenizer)
    if not test_sets:
        raise UserError(f"no test data for {task.name}: --do_predict needs its test split")
    prediction_sets = [(task, test_sets)]
    if task.name == "mnli":
        try:
            examples = load_glue_diagnostic(args.data_dir, args.cache_dir)
        except UserError as missing:
            logger.info("AX.tsv will not be written: %s", missing)
        else:
            features = build_features(args, tokenizer, examples, teacher_tokenizer)
            prediction_sets.append((GLUE_DIAGNOSTIC, {"test": (features, [e["idx"] for e in examples])}))
    return prediction_sets


def write_results(args, runtime, evaluate, forward, eval_sets, prediction_sets, collate_fn):
    """After training: dev metrics to ``eval_results.json`` and the per-example predictions they
    come from to ``eval_predictions.json``; the GLUE server's test files."""
    if eval_sets:
        metrics = evaluate()
        if runtime.is_main:
            write_evaluation(args.output_dir, args.task_name, metrics)
            logger.info("dev results: %s", metrics)
    for task, test_sets in prediction_sets:
        write_test_predictions(forward, task, test_sets, collate_fn, args.per_device_eval_batch_size, runtime,
                               args.output_dir)


def logits_to_predictions(logits, task):
    return logits[:, 0] if task.is_regression else logits.argmax(axis=-1)


def split_suffix(task, split):
    """Metric-name suffix of an evaluation split: "" except MNLI mismatched ("_mm")."""
    return "_mm" if split.endswith("mismatched") else ""


def evaluate_splits(forward, task, eval_sets, collate_fn, batch_size, runtime):
    """Official GLUE metrics of ``forward`` on each evaluation split, in one flat dict: an
    ``Evaluation``, which also holds each split's per-example predictions."""
    results, sets = {}, {}
    for split, (features, labels) in eval_sets.items():
        logits = predict(forward, features, collate_fn, batch_size, runtime, desc=f"evaluating {split}")
        suffix = split_suffix(task, split)
        predictions = logits_to_predictions(logits, task)
        metrics = glue_metrics(task.name, predictions, np.asarray(labels))
        results.update({name + suffix: value for name, value in metrics.items()})
        results["eval_samples" + suffix] = len(features)
        sets[suffix] = prediction_set(predictions, labels)
    return Evaluation(results, sets)


def write_evaluation(output_dir, task_name, metrics, **extra):
    """``eval_results.json`` (``metrics`` and ``extra``) and, where ``metrics`` is an
    ``Evaluation``, ``eval_predictions.json`` beside it."""
    if isinstance(metrics, Evaluation):
        write_eval_predictions(output_dir, task_name, metrics.sets)
    write_json(Path(output_dir) / "eval_results.json", dict(metrics, **extra))


def write_test_predictions(forward, task, test_sets, collate_fn, batch_size, runtime, output_dir):
    """Predict each test split and write the GLUE server's ``<TASK>.tsv`` files; return their paths."""
    names = submission_file_names(task)
    paths = []
    for split, (features, indices) in test_sets.items():
        logits = predict(forward, features, collate_fn, batch_size, runtime, desc=f"predicting {split}")
        path = Path(output_dir) / names[split]
        if runtime.is_main:
            write_glue_submission(path, task, indices, logits_to_predictions(logits, task))
            logger.info("wrote %d predictions to %s", len(indices), path)
        paths.append(path)
    return paths
