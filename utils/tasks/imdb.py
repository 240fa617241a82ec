"""IMDB movie-review sentiment (Maas et al., 2011) for run_imdb.py and run_imdb_w_distillation.py:
data options, the readers (an extracted ``aclImdb/`` folder, csv/json files, the hub's ``imdb``),
review features with the released truncation or head+tail, and test accuracy.

Every reader returns examples as the GLUE readers do,

    {"idx": int, "text_a": str, "text_b": None, "label": 0 | 1}

with the hub's label order: 0 = neg, 1 = pos.
"""

import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.engine.cli import add_flag, bounded
from utils.engine.errors import UserError
from utils.engine.features import SEQUENCE_KEYS, merge_features, tokenize_examples
from utils.engine.loop import predict
from utils.engine.models import hub_dataset, max_input_length
from utils.engine.runtime import write_json
from utils.tasks.glue_data import read_records, read_text, record_columns
from utils.tasks.metrics import accuracy
from utils.tasks.predictions import Evaluation, prediction_set, write_eval_predictions

logger = logging.getLogger(__name__)

LABEL_NAMES = ("neg", "pos")
LABEL_IDS = {**{name: index for index, name in enumerate(LABEL_NAMES)}, "0": 0, "1": 1}
SPLITS = ("train", "test")
BR_TAG = re.compile(r"<br\s*/?\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class ImdbTask:
    """The task object ``load_classifier`` and the distillation helpers take."""

    name: str = "imdb"
    label_names: tuple[str, ...] = LABEL_NAMES
    is_regression: bool = False

    @property
    def num_labels(self):
        return len(self.label_names)


IMDB = ImdbTask()


def add_imdb_data_args(parser):
    group = parser.add_argument_group("data")
    group.add_argument("--data_dir", default=None,
                       help="an extracted aclImdb folder (train|test/pos|neg/<id>_<rating>.txt) or the folder "
                            "holding it; default: the hub's imdb")
    group.add_argument("--train_file", default=None, help="a csv or json training file instead")
    group.add_argument("--validation_file", default=None,
                       help="a csv or json file evaluated instead of the test split")
    group.add_argument("--text_column", default="text", help="the review column of --train_file/--validation_file")
    group.add_argument("--label_column", default="label",
                       help="the label column of --train_file/--validation_file (0/1 or neg/pos)")
    group.add_argument("--dataset_name", default="imdb", help="the hub dataset read without local data")
    group.add_argument("--max_seq_length", type=bounded(int), default=None,
                       help="tokens kept per review, special tokens included (default: the model maximum, "
                            "512 for BERT, as released)")
    group.add_argument("--truncation", choices=["head", "head_tail"], default="head",
                       help="keep the first tokens of a long review (head, as released) or its first "
                            "--head_tokens and last tokens (head_tail)")
    group.add_argument("--head_tokens", type=bounded(int, at_least=0), default=128,
                       help="with --truncation head_tail: tokens kept from the start, the rest from the end")
    add_flag(group, "--keep_br_tags",
             help="keep the reviews' <br /> tags as released (default: they become line breaks)")
    return group


def check_imdb_args(args):
    if args.truncation == "head_tail" and args.max_seq_length is not None and args.head_tokens >= args.max_seq_length:
        raise UserError(f"--truncation head_tail keeps --head_tokens {args.head_tokens} and then the review's last "
                        f"tokens, but --max_seq_length {args.max_seq_length} leaves no room for the tail: lower "
                        "--head_tokens (or use --truncation head)")


def imdb_max_seq_length(max_seq_length, tokenizer, *models):
    """The ``--max_seq_length`` a run uses: by default the most tokens every model reads (512 for
    BERT); a larger value, or one that leaves no room for a review token, is refused."""
    limit = max_input_length(tokenizer, *models)
    least = tokenizer.num_special_tokens_to_add(pair=False) + 1
    if max_seq_length is None:
        return limit
    if not least <= max_seq_length <= limit:
        raise UserError(f"--max_seq_length must be between {least} and the model maximum {limit}, "
                        f"got {max_seq_length}")
    return max_seq_length


# ---------------------------------------------------------------------------- readers


def find_aclimdb(data_dir):
    """The aclImdb folder: ``data_dir`` itself or ``data_dir/aclImdb``."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data directory not found: {data_dir}")
    for root in (data_dir, data_dir / "aclImdb"):
        if any((root / split).is_dir() for split in SPLITS):
            return root
    raise UserError(f"{data_dir} is not an aclImdb folder: expected train/ and test/, each with neg/ and pos/, "
                    f"in it or in {data_dir / 'aclImdb'} (the extracted aclImdb_v1.tar.gz)")


REVIEW_FILE = re.compile(r"^\d+_\d+\.txt$")


def read_aclimdb(data_dir, split):
    """The reviews of ``<aclImdb>/<split>/{neg,pos}/<id>_<rating>.txt`` (neg first, files in name
    order); ``unsup/`` and the other files of the folder are not read. Files not named so (a
    ``notes.txt``, say) and empty reviews are skipped, and counted in one warning."""
    if split not in SPLITS:
        raise UserError(f"IMDB has no split {split!r}; its splits: {', '.join(SPLITS)}")
    root = find_aclimdb(data_dir)
    folders = [root / split / name for name in LABEL_NAMES]
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    if missing:
        raise UserError(f"no {' and no '.join(missing)}: the {split} split of an aclImdb folder is "
                        f"{split}/neg/ and {split}/pos/ with one <id>_<rating>.txt file per review")
    examples, stray, empty = [], [], []
    for label, folder in enumerate(folders):
        for path in sorted(folder.iterdir()):
            if not path.is_file():
                continue
            if not REVIEW_FILE.match(path.name):
                stray.append(path)
                continue
            text = read_text(path)
            if not text.strip():
                empty.append(path)
                continue
            examples.append(review(len(examples), text, label))
    if stray or empty:
        skipped = [f"{len(stray)} file(s) not named <id>_<rating>.txt (e.g. {stray[0]})" if stray else None,
                   f"{len(empty)} empty review(s) (e.g. {empty[0]})" if empty else None]
        logger.warning("the %s split of %s: skipped %s", split, root, " and ".join(part for part in skipped if part))
    if not examples:
        raise UserError(f"the {split} split of {root} is empty: no .txt files in {folders[0]} or {folders[1]}")
    return examples


def check_data_files(args):
    """--train_file and --validation_file have the review and label columns: one line before any
    model loads."""
    for option in ("train_file", "validation_file"):
        path = getattr(args, option, None)
        if not path:
            continue
        columns = record_columns(path)
        missing = [column for column in (args.text_column, args.label_column) if column not in columns]
        if missing:
            raise UserError(f"--{option} {path}: no column {' or '.join(missing)} (found {', '.join(columns)}); "
                            "name the review and label columns with --text_column and --label_column")


def read_imdb_file(path, text_column="text", label_column="label"):
    """The reviews of a .csv, .json (a list of objects, or JSON lines) or .jsonl file."""
    return reviews_from_records(read_records(path), text_column, label_column, Path(path))


def load_imdb_hub(split, dataset_name="imdb", cache_dir=None):
    """The reviews of the hub's ``imdb`` (columns text and label)."""
    try:
        dataset = hub_dataset(dataset_name, split=split, cache_dir=cache_dir)
    except (ConnectionError, FileNotFoundError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"could not load {dataset_name} ({split}) from the hub: {reason}; for local data pass "
                        "--data_dir (an aclImdb folder) or --train_file/--validation_file") from None
    return reviews_from_records(dataset.to_list(), "text", "label", f"{dataset_name} {split}")


def reviews_from_records(records, text_column, label_column, source):
    """Reviews from column-keyed records; UserErrors name ``source`` (and the row)."""
    if not records:
        raise UserError(f"{source} has no rows")
    columns = list(dict.fromkeys(column for record in records for column in record))
    missing = [column for column in (text_column, label_column) if column not in columns]
    if missing:
        raise UserError(f"{source}: no column {' or '.join(missing)} (found {', '.join(columns) or 'none'}); "
                        "name the review and label columns with --text_column and --label_column")
    examples = []
    for row_number, record in enumerate(records, start=1):
        text = record.get(text_column)
        if not isinstance(text, str):
            raise UserError(f"{source}: row {row_number}: column {text_column!r} holds {text!r}, not a text")
        examples.append(review(len(examples), text, parse_label(record.get(label_column),
                                                                f"{source}: row {row_number}")))
    return examples


def parse_label(value, where):
    """The class id of a label given as 0/1 (int, integral float or string) or neg/pos."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    spelling = value.strip().lower() if isinstance(value, str) else str(value)
    if spelling not in LABEL_IDS:
        raise UserError(f"{where}: label {value!r} is not one of 0, 1, neg, pos")
    return LABEL_IDS[spelling]


def review(idx, text, label):
    return {"idx": idx, "text_a": text, "text_b": None, "label": label}


def load_imdb_split(args, split, limit=None):
    """The reviews of ``split`` (train or test) from its file, the aclImdb folder or the hub.

    With ``limit`` a random subset of that size (drawn with ``--seed``, in the data's order):
    the folder and the hub list all negative reviews first, so the first ones would be one class.
    """
    data_file = {"train": args.train_file, "test": args.validation_file}[split]
    if data_file:
        examples = read_imdb_file(data_file, args.text_column, args.label_column)
    elif args.data_dir:
        examples = read_aclimdb(args.data_dir, split)
    else:
        examples = load_imdb_hub(split, args.dataset_name, args.cache_dir)
    if limit and limit < len(examples):
        chosen = sorted(random.Random(args.seed).sample(range(len(examples)), limit))
        examples = [examples[index] for index in chosen]
    return examples


# ---------------------------------------------------------------------------- features


def clean_review(text, keep_br_tags=False):
    """The review with its HTML line breaks (``<br />``, ``<br>``) turned into newlines."""
    return text if keep_br_tags else BR_TAG.sub("\n", text)


def keep_head_and_tail(sequence, special_tokens_mask, max_length, head_tokens):
    """``sequence`` cut to ``max_length``: its leading and trailing special tokens, the first
    ``head_tokens`` tokens of the text and as many of its last ones as fit."""
    if len(sequence) <= max_length:
        return list(sequence)
    leading = _run_length(special_tokens_mask)
    trailing = _run_length(special_tokens_mask[::-1])
    room = max_length - leading - trailing
    head = min(head_tokens, room)
    text_end = len(sequence) - trailing
    return list(sequence[:leading + head]) + list(sequence[text_end - (room - head):])


def _run_length(flags):
    """How many of ``flags`` are true before the first false one."""
    return next((i for i, flag in enumerate(flags) if not flag), len(flags))


def tokenize_reviews(tokenizer, examples, max_length, *, truncation="head", head_tokens=128,
                     keep_br_tags=False, prefix=""):
    """Token ids of each review (after ``clean_review``), at most ``max_length`` of them: the
    first ones (``truncation="head"``, as released) or the head and the tail (``"head_tail"``)."""
    reviews = [dict(example, text_a=clean_review(example["text_a"], keep_br_tags)) for example in examples]
    if truncation == "head":
        return tokenize_examples(tokenizer, reviews, max_length, prefix=prefix)
    encoded = tokenizer([example["text_a"] for example in reviews], truncation=False, verbose=False,
                        return_attention_mask=False, return_special_tokens_mask=True)
    keys = [key for key in SEQUENCE_KEYS if key in encoded]
    return [{prefix + key: keep_head_and_tail(encoded[key][i], encoded["special_tokens_mask"][i], max_length,
                                              head_tokens) for key in keys}
            for i in range(len(reviews))]


def review_features(args, tokenizer, examples, teacher_tokenizer=None):
    """Features of ``examples`` with their labels, for the student (and, when it tokenises
    differently, the teacher, under the ``teacher_`` prefix)."""
    options = dict(truncation=args.truncation, head_tokens=args.head_tokens, keep_br_tags=args.keep_br_tags)
    parts = [tokenize_reviews(tokenizer, examples, args.max_seq_length, **options)]
    if teacher_tokenizer is not None:
        parts.append(tokenize_reviews(teacher_tokenizer, examples, args.max_seq_length, prefix="teacher_", **options))
    parts.append([{"labels": example["label"]} for example in examples])
    return merge_features(*parts)


def load_features(args, split, limit, tokenizer, teacher_tokenizer=None):
    return review_features(args, tokenizer, load_imdb_split(args, split, limit), teacher_tokenizer)


def load_imdb_test_set(args, tokenizer, teacher_tokenizer=None):
    """The test split's features (longest first with ``--group_by_length``, which fills the
    evaluation batches with reviews of similar length; accuracy does not depend on the order)."""
    features = load_features(args, "test", args.max_eval_samples, tokenizer, teacher_tokenizer)
    if args.group_by_length:
        features = sorted(features, key=lambda feature: -len(feature["input_ids"]))
    return features


# ---------------------------------------------------------------------------- evaluation


def evaluate_accuracy(forward, features, collate_fn, batch_size, runtime):
    """``{"accuracy", "eval_samples"}`` of ``forward``'s arg-max class on the labelled ``features``,
    with the per-review predictions (an ``Evaluation``)."""
    logits = predict(forward, features, collate_fn, batch_size, runtime, desc="evaluating test")
    labels = np.asarray([feature["labels"] for feature in features])
    predictions = logits.argmax(axis=-1)
    return Evaluation({"accuracy": accuracy(predictions, labels), "eval_samples": len(features)},
                      {"": prediction_set(predictions, labels)})


def write_eval_results(args, runtime, metrics):
    """``eval_results.json`` and ``eval_predictions.json`` (the first process)."""
    if runtime.is_main:
        write_eval_predictions(args.output_dir, "imdb", metrics.sets)
        write_json(Path(args.output_dir) / "eval_results.json", metrics)
        logger.info("test results: %s", metrics)
