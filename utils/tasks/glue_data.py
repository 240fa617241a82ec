"""The nine GLUE tasks and their readers: classic TSV folders, csv/json files and the hub.

Every reader returns examples as plain dicts

    {"idx": int, "text_a": str, "text_b": str | None, "label": int | float | None}

with class ids in the hub's (nyu-mll/glue) label order, a float score for STS-B, and
``label`` None for unlabelled (test) rows. ``idx`` is the file's index column where it has
one, else the row number.
"""

import csv
import functools
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

from utils.engine.errors import UserError

logger = logging.getLogger(__name__)

HUB_DATASET = "nyu-mll/glue"
UNLABELLED = (None, "", -1, "-1")  # label values of csv/json/hub rows that carry no label
RECORD_NON_TEXT_COLUMNS = ("label", "idx")
SUBMISSION_SUFFIXES = {"test": "", "test_matched": "-m", "test_mismatched": "-mm"}


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: names, labels, metrics, splits and where its columns are in each format.

    ``hub_text_columns`` name the one or two texts in the hub dataset and in csv/json files;
    ``tsv_*`` fields name the columns of the classic TSV files (their header line, or
    ``tsv_headerless_columns`` for files without one: CoLA train/dev).
    """

    name: str
    dir_name: str
    label_names: tuple[str, ...]
    hub_text_columns: tuple[str, ...]
    tsv_text_columns: tuple[str, ...]
    tsv_label_column: str = "label"
    tsv_index_column: str = "index"
    tsv_headerless_columns: tuple[str, ...] = ()
    metric_names: tuple[str, ...] = ("accuracy",)
    main_metric: str = "accuracy"
    eval_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)
    submission_label_names: bool = False  # the GLUE server wants label names, not class ids
    submission_stem: str = ""  # submission file name stem when not dir_name

    @property
    def is_regression(self):
        return not self.label_names

    @property
    def num_labels(self):
        return len(self.label_names) or 1

    @property
    def splits(self):
        return ("train",) + self.eval_splits + self.test_splits

    @functools.cached_property
    def label_ids(self):
        """Class id of each label spelling: the label names and the ids written as strings."""
        return {**{name: i for i, name in enumerate(self.label_names)},
                **{str(i): i for i in range(len(self.label_names))}}


NLI_LABELS = ("entailment", "not_entailment")
MNLI_LABELS = ("entailment", "neutral", "contradiction")

GLUE_TASKS = {task.name: task for task in (
    GlueTask("cola", "CoLA", ("unacceptable", "acceptable"), ("sentence",), ("sentence",),
             tsv_headerless_columns=("source", "label", "original_mark", "sentence"),
             metric_names=("matthews_correlation",), main_metric="matthews_correlation"),
    GlueTask("sst2", "SST-2", ("negative", "positive"), ("sentence",), ("sentence",)),
    GlueTask("mrpc", "MRPC", ("not_equivalent", "equivalent"), ("sentence1", "sentence2"),
             ("#1 String", "#2 String"), tsv_label_column="Quality",
             metric_names=("accuracy", "f1"), main_metric="f1"),
    GlueTask("stsb", "STS-B", (), ("sentence1", "sentence2"), ("sentence1", "sentence2"),
             tsv_label_column="score", metric_names=("pearson", "spearmanr"), main_metric="pearson"),
    GlueTask("qqp", "QQP", ("not_duplicate", "duplicate"), ("question1", "question2"),
             ("question1", "question2"), tsv_label_column="is_duplicate", tsv_index_column="id",
             metric_names=("accuracy", "f1"), main_metric="f1"),
    GlueTask("mnli", "MNLI", MNLI_LABELS, ("premise", "hypothesis"), ("sentence1", "sentence2"),
             tsv_label_column="gold_label", submission_label_names=True,
             eval_splits=("validation_matched", "validation_mismatched"),
             test_splits=("test_matched", "test_mismatched")),
    GlueTask("qnli", "QNLI", NLI_LABELS, ("question", "sentence"), ("question", "sentence"),
             submission_label_names=True),
    GlueTask("rte", "RTE", NLI_LABELS, ("sentence1", "sentence2"), ("sentence1", "sentence2"),
             submission_label_names=True),
    GlueTask("wnli", "WNLI", ("not_entailment", "entailment"), ("sentence1", "sentence2"),
             ("sentence1", "sentence2")),
)}

# The diagnostic set (hub config "ax"): unlabelled MNLI-style pairs, predicted with an MNLI model.
GLUE_DIAGNOSTIC = GlueTask("ax", "diagnostic", MNLI_LABELS, ("premise", "hypothesis"),
                           ("sentence1", "sentence2"), submission_label_names=True,
                           submission_stem="AX", eval_splits=())

TASKS_BY_ALIAS = {alias.lower(): task for task in GLUE_TASKS.values()
                  for alias in (task.name, task.dir_name)}


def get_task(name):
    """The task called ``name``: hub or classic folder name (sst-2, sts-b), any case.

    A ``GlueTask`` is returned as it is, so that every function here takes either.
    """
    if isinstance(name, GlueTask):
        return name
    task = TASKS_BY_ALIAS.get(str(name).lower())
    if task is None:
        raise UserError(f"unknown GLUE task {name!r}; valid names: {', '.join(GLUE_TASKS)}")
    return task


def check_split(task, split):
    """Raise a UserError unless ``split`` is one of the task's splits."""
    if split not in task.splits:
        raise UserError(f"task {task.name} has no split {split!r}; its splits: {', '.join(task.splits)}")


# ---------------------------------------------------------------------------- classic TSV files

def read_glue_tsv(task, data_dir, split):
    """Examples of one split from the classic GLUE folder (``glue_data`` or ``glue_data/<TASK>``).

    Files: train.tsv, dev.tsv, test.tsv; MNLI dev_matched.tsv, test_mismatched.tsv, ...
    """
    task = get_task(task)
    check_split(task, split)
    file_name = split.replace("validation", "dev") + ".tsv"
    path = find_data_file(data_dir, (task.dir_name, "."), file_name, f"the {split} split of task {task.name}")
    return read_tsv_examples(task, path, labelled=split not in task.test_splits)


def read_glue_diagnostic(data_dir):
    """The unlabelled diagnostic examples of ``glue_data/diagnostic/diagnostic.tsv``.

    ``data_dir`` may be ``glue_data``, ``glue_data/diagnostic`` or a task folder beside it.
    """
    path = find_data_file(data_dir, ("diagnostic", ".", "../diagnostic"), "diagnostic.tsv",
                          "the GLUE diagnostic set")
    return read_tsv_examples(GLUE_DIAGNOSTIC, path, labelled=False)


def find_data_file(data_dir, folders, file_name, what):
    """The first ``data_dir/<folder>/<file_name>`` that exists; a UserError naming them all if none."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data directory not found: {data_dir}")
    candidates = [data_dir / folder / file_name for folder in folders]
    for path in candidates:
        if path.is_file():
            return path
    raise UserError(f"no file for {what}: looked for {' and '.join(map(str, candidates))}")


def read_text(path):
    """The text of a UTF-8 file (a byte order mark is dropped); a UserError if it is not UTF-8."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text: {error}") from None


def read_tsv_examples(task, path, labelled):
    """Examples of a GLUE TSV file, read with quoting disabled (fields split on tabs only).

    Columns are found by their header names. Rows with the wrong number of fields, a bad
    index or a label that is not the task's are skipped with one warning; when they are more
    than half of the rows, the file is rejected with a UserError naming the first one.
    """
    lines = read_text(path).replace("\r\n", "\n").split("\n")
    if not any(lines):
        raise UserError(f"{path} is empty")
    columns, first_data_line = tsv_columns(task, lines[0])
    layout = tsv_layout(task, path, columns, labelled)
    examples, bad_rows, row_count = [], [], 0
    for row_number, line in enumerate(lines[first_data_line:]):
        if not line:
            continue
        row_count += 1
        try:
            examples.append(tsv_example(line.split("\t"), layout, row_number))
        except ValueError as problem:
            bad_rows.append((first_data_line + row_number + 1, problem))
    check_bad_rows(path, bad_rows, row_count)
    return examples


def tsv_columns(task, first_line):
    """The column names of a TSV file and the 0-based number of its first data line."""
    header = first_line.split("\t")
    if task.tsv_headerless_columns and not set(task.tsv_text_columns) <= set(header):
        return task.tsv_headerless_columns, 0
    return header, 1


class TsvLayout(NamedTuple):
    """Where the fields of a TSV row are (None: absent) and how its label is parsed."""

    width: int
    index_at: int | None
    text_a_at: int
    text_b_at: int | None
    label_at: int | None
    parse_label: Callable


def tsv_layout(task, path, columns, labelled):
    """The layout of a TSV file with ``columns``; a UserError when a needed column is missing."""
    needed = task.tsv_text_columns + ((task.tsv_label_column,) if labelled else ())
    missing = [column for column in needed if column not in columns]
    if missing:
        raise UserError(f"{path}: task {task.name} expects columns {', '.join(needed)}; "
                        f"missing {', '.join(missing)}; found {', '.join(columns)}")

    def position(column):
        return columns.index(column) if column in columns else None

    text_b_column = task.tsv_text_columns[1] if len(task.tsv_text_columns) > 1 else None
    parse_label = parse_score if task.is_regression else functools.partial(parse_class, task.label_ids)
    return TsvLayout(len(columns), position(task.tsv_index_column), position(task.tsv_text_columns[0]),
                     position(text_b_column), position(task.tsv_label_column), parse_label)


def tsv_example(fields, layout, row_number):
    """One example from the fields of a TSV row; a ValueError saying what is wrong with it."""
    if len(fields) != layout.width:
        raise ValueError(f"expected {layout.width} tab-separated fields, found {len(fields)}")
    return {
        "idx": row_number if layout.index_at is None else parse_index(fields[layout.index_at]),
        "text_a": fields[layout.text_a_at],
        "text_b": None if layout.text_b_at is None else fields[layout.text_b_at],
        "label": None if layout.label_at is None else layout.parse_label(fields[layout.label_at]),
    }


def check_bad_rows(path, bad_rows, row_count):
    """Reject a file with no rows or mostly bad rows; warn once about a few skipped ones."""
    if row_count == 0:
        raise UserError(f"{path} has no data rows")
    if not bad_rows:
        return
    line_number, problem = bad_rows[0]
    summary = f"{len(bad_rows)} of {row_count} rows are malformed (first: line {line_number}: {problem})"
    if 2 * len(bad_rows) > row_count:
        raise UserError(f"{path}: {summary}")
    logger.warning("%s: skipped %s", path, summary)


def parse_index(value):
    """An example index given as an int or a string of digits."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"index {value!r} is not an integer") from None


def parse_class(label_ids, value):
    """The class id of a label spelled as in ``label_ids`` (a name or the id as a string)."""
    try:
        return label_ids[value]
    except KeyError:
        raise ValueError(f"label {value!r} is not one of {', '.join(label_ids)}") from None


STSB_SCORES = (0.0, 5.0)  # STS-B's similarity scale


def parse_score(value):
    """An STS-B score: a float on the task's 0 .. 5 scale."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score):
        raise ValueError(f"score {value!r} is not a number")
    low, high = STSB_SCORES
    if not low <= score <= high:
        raise ValueError(f"score {value!r} is outside STS-B's {low:g} .. {high:g} scale")
    return score


# ---------------------------------------------------------------------------- csv and json files

def read_glue_file(task, path):
    """Examples of a .csv, .json (a list of objects, or JSON lines) or .jsonl file.

    As in Hugging Face's run_glue: the texts are the hub's columns (``sentence``;
    ``sentence1``/``sentence2``; ``question``/``sentence``; ``question1``/``question2``;
    ``premise``/``hypothesis``) when present, else the first one or two columns other than
    ``label`` and ``idx``. ``label`` holds class ids or label names (a score for STS-B); without
    it the examples are unlabelled, as are rows whose label is empty or -1.
    """
    task = get_task(task)
    return glue_examples_from_records(task, read_records(path), Path(path))


def read_records(path):
    """The rows of a .csv, .json (a list of objects, or JSON lines) or .jsonl file, as dicts."""
    path = Path(path)
    readers = {".csv": read_csv_records, ".json": read_json_records, ".jsonl": read_json_records}
    if path.suffix.lower() not in readers:
        raise UserError(f"{path}: unsupported data file type; expected .csv, .json or .jsonl")
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    return readers[path.suffix.lower()](path)


def read_csv_records(path):
    """The rows of a csv file with a header line, as dicts."""
    return list(csv.DictReader(io.StringIO(read_text(path), newline="")))


def read_json_records(path):
    """The objects of a JSON file holding a list of them, or of a JSON lines file."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        records = decode_json(path, text, line_number=None)
    else:
        records = [decode_json(path, line, line_number) for line_number, line
                   in enumerate(text.split("\n"), start=1) if line.strip()]
    if not all(isinstance(record, dict) for record in records):
        raise UserError(f"{path}: expected JSON objects, one per example")
    return records


def decode_json(path, text, line_number):
    """``json.loads(text)``, with a UserError naming the file (and line) when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {line_number}" if line_number else "not valid JSON"
        raise UserError(f"{path}: {where}: {error}") from None


def record_columns(path):
    """The columns of a csv/json data file (a csv's header line; all a JSON file's rows'), a
    UserError when it has no rows."""
    if Path(path).suffix.lower() == ".csv" and Path(path).is_file():
        try:
            with open(path, encoding="utf-8-sig", newline="") as file:
                rows = csv.reader(file)
                header, first_row = next(rows, None), next(rows, None)
        except UnicodeDecodeError as error:
            raise UserError(f"{path} is not UTF-8 text: {error}") from None
        if header is None or first_row is None:
            raise UserError(f"{path} has no rows")
        return header
    records = read_records(path)
    if not records:
        raise UserError(f"{path} has no rows")
    return list(dict.fromkeys(column for record in records for column in record))


def glue_examples_from_records(task, records, source):
    """Examples from column-keyed records (csv/json rows, hub rows); UserErrors name ``source``."""
    if not records:
        raise UserError(f"{source} has no rows")
    columns = list(dict.fromkeys(column for record in records for column in record))
    text_columns = record_text_columns(task, columns, source)
    examples = []
    for row_number, record in enumerate(records):
        try:
            examples.append({
                "idx": parse_index(record["idx"]) if "idx" in columns else row_number,
                "text_a": record_text(record, text_columns[0]),
                "text_b": record_text(record, text_columns[1]) if len(text_columns) > 1 else None,
                "label": record_label(task, record.get("label")),
            })
        except ValueError as problem:
            raise UserError(f"{source}: row {row_number + 1}: {problem}") from None
    return examples


def record_text_columns(task, columns, source):
    """The task's hub text columns when all present, else the first columns that are not
    label or idx; a UserError naming the columns expected and found when too few."""
    if set(task.hub_text_columns) <= set(columns):
        return task.hub_text_columns
    candidates = [column for column in columns if column not in RECORD_NON_TEXT_COLUMNS]
    needed = len(task.hub_text_columns)
    if len(candidates) < needed:
        raise UserError(f"{source}: task {task.name} expects text columns {', '.join(task.hub_text_columns)} "
                        f"(or any {needed} besides {', '.join(RECORD_NON_TEXT_COLUMNS)}); "
                        f"found {', '.join(columns) or 'none'}")
    return tuple(candidates[:needed])


def record_text(record, column):
    """The text in ``column`` of a record; a ValueError when it is missing or not a string."""
    text = record.get(column)
    if not isinstance(text, str):
        raise ValueError(f"column {column!r} holds {text!r}, not a text")
    return text


def record_label(task, value):
    """The label of a record: None when unlabelled, else a score (STS-B) or the class id of a
    label name or id (an int, an integral float or a string)."""
    if value in UNLABELLED:
        return None
    if task.is_regression:
        return parse_score(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    spelling = value.strip() if isinstance(value, str) else str(value)
    return parse_class(task.label_ids, spelling)


# ---------------------------------------------------------------------------- the hub

def load_glue_hub(task, split, cache_dir=None):
    """Examples of ``nyu-mll/glue`` (config ``task.name``, ``ax`` for the diagnostic set)."""
    from utils.engine.models import hub_dataset  # transformers: not for the readers of local files

    task = get_task(task)
    check_split(task, split)
    try:
        dataset = hub_dataset(HUB_DATASET, task.name, split=split, cache_dir=cache_dir)
    except (ConnectionError, FileNotFoundError) as error:
        raise UserError(f"could not load {HUB_DATASET} ({task.name}, {split}) from the hub: {error}; "
                        "for local data pass --data_dir or --train_file/--validation_file") from None
    return glue_examples_from_records(task, dataset.to_list(), f"{HUB_DATASET} {task.name} {split}")


def load_glue_split(task, split, data_dir=None, data_file=None, cache_dir=None):
    """Examples of one split: from ``data_file`` if given, else the TSV folder ``data_dir``,
    else the hub."""
    if data_file:
        return read_glue_file(task, data_file)
    if data_dir:
        return read_glue_tsv(task, data_dir, split)
    return load_glue_hub(task, split, cache_dir)


def load_glue_diagnostic(data_dir=None, cache_dir=None):
    """The diagnostic examples: from the TSV folder ``data_dir`` if given, else the hub."""
    if data_dir:
        return read_glue_diagnostic(data_dir)
    return load_glue_hub(GLUE_DIAGNOSTIC, "test", cache_dir)


# ---------------------------------------------------------------------------- submission files

def submission_file_names(task):
    """The GLUE server's file name for each test split: ``{"test": "RTE.tsv"}``,
    ``{"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}``, AX.tsv for GLUE_DIAGNOSTIC."""
    task = get_task(task)
    stem = task.submission_stem or task.dir_name
    return {split: f"{stem}{SUBMISSION_SUFFIXES[split]}.tsv" for split in task.test_splits}


def write_glue_submission(path, task, indices, predictions):
    """Write ``index<TAB>prediction`` rows under that header, as the GLUE server reads them:
    class ids (cola, sst2, mrpc, qqp, wnli), label names (mnli, qnli, rte, ax) or scores
    with 3 decimals (stsb)."""
    task = get_task(task)
    indices, predictions = list(indices), list(predictions)
    if len(indices) != len(predictions):
        raise ValueError(f"{len(indices)} indices but {len(predictions)} predictions")
    rows = [f"{int(index)}\t{submission_label(task, prediction)}"
            for index, prediction in zip(indices, predictions)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["index\tprediction", *rows]) + "\n", encoding="utf-8")


def submission_label(task, prediction):
    """How the GLUE server spells one prediction of ``task``."""
    if task.is_regression:
        return f"{float(prediction):.3f}"
    class_id = int(prediction)
    if not 0 <= class_id < task.num_labels:
        raise ValueError(f"prediction {prediction!r} is not a class id of {task.name}")
    return task.label_names[class_id] if task.submission_label_names else str(class_id)
