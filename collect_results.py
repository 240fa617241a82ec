"""Collect the runs of the table scripts (scripts/*.sh) into the papers' tables.

    python collect_results.py results                       # every table found, Markdown
    python collect_results.py results --format csv --table lgtm_glue
    python collect_results.py results --output-dir tables   # <table>.md and <table>.csv each
    python collect_results.py results --plot tables          # <table>.png each: ours against the papers

Rows are methods, columns are the tasks' metrics (dev sets; MNLI matched and mismatched, MRPC
and QQP F1 and accuracy, STS-B Pearson and Spearman), in percent, mean ± sample standard
deviation over seeds. "Avg" (GLUE tables) is the mean over the shown tasks of each task's
score, computed from the per-task means and left out ("incomplete") while a task has no finished
run. The LGTM table scores a task as the GLUE leaderboard does: the mean of its metrics (MRPC,
QQP: F1 and accuracy; STS-B: Pearson and Spearman), MNLI matched accuracy only, CoLA Matthews
correlation. The one-to-one GLUE table, whose paper gives one number per task without saying
which metric, scores each task by its main metric (MRPC and QQP F1, STS-B Pearson, CoLA Matthews,
MNLI matched accuracy, the others accuracy), and so compares its published numbers there.
A cell whose runs are not all finished says how many are; a cell without any finished run says
"missing" (no run folder, no log) or "failed" (a run folder without a finished run, i.e. without
run_complete.json, or only a log: the run failed, was interrupted, or is still running). Published numbers (the papers' tables) are shown as a
"(published)" row with an "ours - published" row under it, only where the paper gives them;
a note under the table flags a published value that the paper printed wrongly. What cannot be
read (a finished run whose eval_results.json is empty, truncated, not a JSON object, or holds a
metric that is not a number) is named on stderr, file and why, and its cell counts it as failed;
folders under the root that belong to no table are listed there too.

Every cell whose finished seeds wrote their per-example dev predictions (eval_predictions.json)
shows its 95% bootstrap interval; ``--compare [BASELINE]`` adds each method minus a baseline with
a paired bootstrap interval (give the results root before it). ``--plot DIR`` draws each table
(matplotlib): one panel per task, each method's mean over its seeds with its 95% interval (or,
without predictions, the spread from the smallest to the largest seed) as an error bar and the
published value as a marker.
"""

import argparse
import csv
import io
import json
import math
import re
import statistics
import sys
from pathlib import Path

from utils.tasks.glue_data import get_task
from utils.tasks.predictions import EVAL_PREDICTIONS, bootstrap_interval, paired_interval, read_eval_predictions

# The results layout, the one definition: scripts/common.sh reads it with --print-layout.
RUN_DIR_LAYOUT = "{table}/{task}/{method}/seed{seed}"
LOG_SUFFIX = ".log"
COMPLETION_MARK = "run_complete.json"  # utils.engine.runtime.COMPLETION_MARK: a run writes it last
TEACHER_SEED = 42

METRIC_NAMES = {"accuracy": "acc", "accuracy_mm": "acc-mm", "f1": "F1", "matthews_correlation": "MCC",
                "pearson": "Pearson", "spearmanr": "Spearman", "exact_match": "EM"}
TASKS = {  # task: (column name, metrics shown, metrics averaged into the task's score)
    "cola": ("CoLA", ["matthews_correlation"], ["matthews_correlation"]),
    "sst2": ("SST-2", ["accuracy"], ["accuracy"]),
    "mrpc": ("MRPC", ["f1", "accuracy"], ["f1", "accuracy"]),
    "stsb": ("STS-B", ["pearson", "spearmanr"], ["pearson", "spearmanr"]),
    "qqp": ("QQP", ["f1", "accuracy"], ["f1", "accuracy"]),
    "mnli": ("MNLI", ["accuracy", "accuracy_mm"], ["accuracy"]),
    "qnli": ("QNLI", ["accuracy"], ["accuracy"]),
    "rte": ("RTE", ["accuracy"], ["accuracy"]),
    "wnli": ("WNLI", ["accuracy"], ["accuracy"]),
    "imdb": ("IMDB", ["accuracy"], ["accuracy"]),
    "squad": ("SQuAD v1.1", ["exact_match", "f1"], ["exact_match", "f1"]),
}
ALREADY_PERCENT = {"squad"}  # the SQuAD scorer reports percentages, the others fractions

ONE_TO_ONE_METHODS = {"teacher": "BERT-base teacher", "task": "DistilBERT, task loss only",
                      "kd": "DistilBERT + logit KD", "mse": "DistilBERT + MSE", "cos": "DistilBERT + cosine",
                      "corr": "DistilBERT + correlation", "corr_mask": "DistilBERT + correlation + sub-teacher mask"}
# the GLUE table has every row of the paper's Table 2: the student fine-tuned alone (ft) and PKD too
ONE_TO_ONE_GLUE_METHODS = {"teacher": ONE_TO_ONE_METHODS["teacher"], "ft": "DistilBERT fine-tuned (no teacher)",
                           **{method: ONE_TO_ONE_METHODS[method] for method in ("task", "kd", "mse", "cos")},
                           "pkd": "DistilBERT + PKD",
                           **{method: ONE_TO_ONE_METHODS[method] for method in ("corr", "corr_mask")}}
ONE_TO_ONE_GLUE_TASKS = ["mrpc", "rte", "cola", "sst2", "stsb", "mnli", "qnli", "qqp"]  # the paper's Table 2 order
# The one-to-one paper's Table 2 (GLUE dev, %, mean of 5 seeds): per method, its eight tasks' numbers in
# ONE_TO_ONE_GLUE_TASKS order (read here as each task's main metric) and its printed average.
ONE_TO_ONE_GLUE_PUBLISHED = {
    "teacher": ([87.86, 66.79, 54.84, 90.02, 89.30, 82.85, 90.70, 88.04], 81.30),
    "ft": ([84.48, 56.17, 44.28, 89.54, 85.40, 80.41, 86.71, 87.79], 76.85),
    "cos": ([85.38, 63.75, 46.82, 89.79, 85.59, 80.51, 88.62, 87.78], 78.53),
    "mse": ([86.04, 62.38, 47.35, 89.79, 85.42, 80.12, 88.13, 87.90], 78.39),
    "pkd": ([86.06, 62.24, 47.28, 90.05, 85.77, 81.62, 87.16, 88.33], 75.56),
    "kd": ([84.56, 56.53, 45.86, 89.63, 85.50, 80.51, 87.71, 87.60], 77.23),
    "corr": ([86.57, 63.83, 50.73, 90.44, 85.66, 82.76, 89.54, 88.04], 79.70),
    "corr_mask": ([86.45, 65.05, 53.16, 90.18, 85.97, 82.42, 89.44, 88.37], 80.13),
}
PUBLISHED_NOTES = {
    ("one_to_one_glue", "pkd"): "the PKD row's average is shown as printed (75.56); the mean of its eight numbers "
                                "is 78.56",
}


def main_metric(task):
    return get_task(task).main_metric


def one_to_one_glue_published():
    """``{(method, task, metric): value}`` and ``(method, "avg", None)`` of the one-to-one paper's Table 2."""
    published = {}
    for method, (values, average) in ONE_TO_ONE_GLUE_PUBLISHED.items():
        published.update({(method, task, main_metric(task)): value for task, value in zip(ONE_TO_ONE_GLUE_TASKS, values)})
        published[(method, "avg", None)] = average
    return published


# table: (title, tasks in the paper's order, methods, task score of the average ("leaderboard", "main" or
# None: no average), published numbers)
TABLES = {
    "one_to_one_glue": ("One-to-one mapping (Saadi et al. 2023), GLUE dev", ONE_TO_ONE_GLUE_TASKS,
                        ONE_TO_ONE_GLUE_METHODS, "main", one_to_one_glue_published()),
    "one_to_one_squad": ("One-to-one mapping (Saadi et al. 2023), SQuAD v1.1 dev",
                         ["squad"], ONE_TO_ONE_METHODS, None, {}),
    "one_to_one_imdb": ("One-to-one mapping (Saadi et al. 2023), IMDB test", ["imdb"], ONE_TO_ONE_METHODS, None, {}),
    "lgtm_glue": ("LGTM (Ren et al. 2023), GLUE dev", ["mnli", "qqp", "qnli", "sst2", "mrpc", "rte"],
                  {"teacher": "BERT-base teacher (fine-tuned, for KD)", "kd": "KD", "prokt": "ProKT", "lgtm": "LGTM"},
                  "leaderboard", {("lgtm", "mnli", "accuracy"): 83.4, ("lgtm", "qqp", "f1"): 91.1,
                                  ("lgtm", "qqp", "accuracy"): 88.0}),
}


# what --compare subtracts by default: the student fine-tuned alone; the LGTM table has none, and
# its paper's baseline is KD
# (the SQuAD and IMDB tables have no ft row: their student without a teacher is the task-only run)
DEFAULT_BASELINES = {"one_to_one_glue": "ft", "one_to_one_squad": "task", "one_to_one_imdb": "task",
                     "lgtm_glue": "kd"}


def run_dir(root, table, task, method, seed):
    return Path(root) / RUN_DIR_LAYOUT.format(table=table, task=task, method=method, seed=seed)


def run_status(path, problems):
    """("ok", metrics) for a finished run (its completion mark written), ("failed", None) or
    ("missing", None) otherwise: a run without the mark is still running, was interrupted or failed,
    whatever results it wrote on the way (LGTM writes its best student's as it goes). A finished
    run whose results cannot be read is "failed", and ``problems`` gets (file, why)."""
    results = path / "eval_results.json"
    log = path.with_name(path.name + LOG_SUFFIX)
    if (path / COMPLETION_MARK).is_file():
        try:
            metrics = json.loads(results.read_text())
        except FileNotFoundError:
            problems.append((results, "the run finished (run_complete.json) but wrote no results"))
            return "failed", None
        except (OSError, ValueError) as error:
            why = "empty" if results.is_file() and not results.stat().st_size else f"not valid JSON ({error})"
            problems.append((results, why))
            return "failed", None
        if not isinstance(metrics, dict):
            problems.append((results, f"a JSON {type(metrics).__name__}, not an object of metrics"))
            return "failed", None
        return "ok", metrics
    if path.exists() or log.is_file():
        return "failed", None
    return "missing", None


def metric_value(metrics, metric, path, problems):
    """``metrics[metric]`` when it is a number; else None, and why in ``problems`` when it is
    there but not a number."""
    value = metrics.get(metric)
    if isinstance(value, bool) or (value is not None and not isinstance(value, (int, float))):
        problems.append((path / "eval_results.json", f"{metric} is {value!r}, not a number"))
        return None
    return value


def predictions_of(paths, found, metric, problems):
    """The ``eval_predictions.json`` sets of the runs with a value (``found``), or None when one
    of them has none (a run of an older version) or cannot be read (then ``problems`` says why)."""
    runs = []
    for path, value in zip(paths, found):
        if value is None:
            continue
        file = path / EVAL_PREDICTIONS
        if not file.is_file():
            problems.append((file, None))  # a run of an older version: counted in one note
            return None
        try:
            sets = read_eval_predictions(file)
            suffix = "_mm" if metric.endswith("_mm") else ""
            sets[suffix]  # noqa: B018 -- the set of this metric must be there
        except (OSError, ValueError, KeyError) as error:
            problems.append((file, f"not readable for the intervals ({type(error).__name__}: {error}); the cell "
                                   "has no interval"))
            return None
        runs.append(sets)
    return runs or None


def compare_table(collected, baseline):
    """``{"rows": [(label, {column: (difference, low, high)})], "baseline": label}``: each student
    row minus the ``baseline`` method's, per metric, with the paired bootstrap interval on the same
    dev examples; None when the baseline row is not in the table."""
    ours = {method: (label, cells) for label, cells, kind, method in collected["rows"] if kind == "ours"}
    if baseline not in ours:
        return None
    base_label, base_cells = ours[baseline]
    rows = []
    for method, (label, cells) in ours.items():
        if method in (baseline, "teacher"):
            continue
        differences = {}
        for task, metric, _ in collected["columns"]:
            if task == "avg":
                continue
            cell, base = cells[(task, metric)], base_cells[(task, metric)]
            if cell.runs and base.runs:
                try:
                    difference, low, high = paired_interval(cell.runs, base.runs, metric)
                except ValueError:  # not the same dev examples: no paired difference
                    continue
                differences[(task, metric)] = tuple(cell.scale * value for value in (difference, low, high))
        rows.append((label, differences))
    return {"rows": rows, "baseline": base_label}


def compare_markdown(collected, comparison):
    lines = [f"#### {collected['title']}: each method minus {comparison['baseline']}", "",
             "Difference of the means, in points, and its 95% paired bootstrap interval (the same dev "
             "examples resampled for both, and the seeds of each); an interval that does not contain 0 "
             "is marked *.", ""]
    columns = [column for column in collected["columns"] if column[0] != "avg"]
    header = ["Method"] + [label for _, _, label in columns]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, differences in comparison["rows"]:
        row = [label]
        for task, metric, _ in columns:
            if (task, metric) not in differences:
                row.append("n/a")
                continue
            difference, low, high = differences[(task, metric)]
            mark = "*" if low > 0 or high < 0 else ""
            row.append(f"{difference:+.2f} ({low:+.2f}, {high:+.2f}){mark}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# the folders scripts/mini_tables.sh keeps beside the tables in its output root
MINIATURE_FOLDERS = {"data", "models", "tables"}


def stray_folders(root):
    """Folders under ``root`` that belong to no table: not a table, a task of it, a method of that
    table or a ``seed<k>`` run (the miniature tables' own folders are theirs)."""
    stray = []
    for table_dir in sorted(path for path in Path(root).iterdir() if path.is_dir()):
        if table_dir.name not in TABLES:
            if table_dir.name not in MINIATURE_FOLDERS:
                stray.append(table_dir)
            continue
        methods = TABLES[table_dir.name][2]
        for task_dir in sorted(path for path in table_dir.iterdir() if path.is_dir()):
            if task_dir.name not in TASKS:
                stray.append(task_dir)
                continue
            for method_dir in sorted(path for path in task_dir.iterdir() if path.is_dir()):
                if method_dir.name not in methods:
                    stray.append(method_dir)
                    continue
                stray += sorted(path for path in method_dir.iterdir()
                                if path.is_dir() and not re.fullmatch(r"seed\d+", path.name))
    return stray


def seeds_found(root, table, method_filter):
    """The seeds of the run folders and logs under ``root/table`` whose method passes the filter."""
    pattern = re.compile(r"^seed(\d+)(?:" + re.escape(LOG_SUFFIX) + ")?$")
    seeds = set()
    for path in (Path(root) / table).glob("*/*/*"):
        match = pattern.match(path.name)
        if match and method_filter(path.parent.name):
            seeds.add(int(match.group(1)))
    return sorted(seeds)


class Cell:
    """One (method, task, metric): the values of the finished seeds and the statuses of the others;
    with the per-example dev predictions of every finished seed (``runs``, their
    ``eval_predictions.json``), its 95% bootstrap interval (``interval``)."""

    def __init__(self, values, statuses, runs=None, metric=None, scale=100.0):
        self.values, self.statuses = values, statuses
        self.runs, self.metric, self.scale = runs, metric, scale
        self._interval, self.problem = None, None

    @property
    def interval(self):
        """``(low, high)`` in the cell's unit, or None without predictions for every finished seed
        (or when the seeds predicted different dev examples, which ``problem`` then says)."""
        if self._interval is None and self.runs:
            try:
                low, high = bootstrap_interval(self.runs, self.metric)
            except ValueError as error:
                self.problem, self.runs = str(error), None
                return None
            self._interval = (self.scale * low, self.scale * high)
        return self._interval

    @property
    def mean(self):
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self):
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def status(self):
        expected = len(self.statuses)
        if not self.values:
            return "failed" if "failed" in self.statuses else "missing"
        if len(self.values) == expected:
            return f"{expected}/{expected}"
        others = [f"{self.statuses.count(s)} {s}" for s in ("failed", "missing") if s in self.statuses]
        return f"{len(self.values)}/{expected} ({', '.join(others)})"

    def markdown(self):
        if not self.values:
            return self.status()
        text = f"{self.mean:.2f}" + (f" ± {self.std:.2f}" if self.std is not None else "")
        if self.interval is not None:
            text += f" ({self.interval[0]:.2f}, {self.interval[1]:.2f})"
        return text if len(self.values) == len(self.statuses) else f"{text} [{self.status()}]"


def collect_table(root, table, seeds=None, tasks=None, with_published=True, methods=None):
    """{"columns": [(task, metric, label)], "rows": [(label, {column: Cell or number}, kind)], ...};
    ``with_published=False`` leaves out the papers' numbers (runs of other models); ``methods``
    keeps only those rows (method names as the table scripts spell them)."""
    title, default_tasks, all_methods, average, published = TABLES[table]
    published = published if with_published else {}
    methods = {method: label for method, label in all_methods.items() if methods is None or method in methods}
    present = sorted(p.name for p in (Path(root) / table).glob("*") if p.is_dir() and p.name in TASKS)
    tasks = tasks or default_tasks + [t for t in present if t not in default_tasks]
    expected = seeds if isinstance(seeds, dict) else {None: seeds}
    # each task's student seeds: the ones asked for (that task's, or every task's), else every seed
    # found under the table, so that a task where a run never started counts that run as missing
    table_seeds = seeds_found(root, table, lambda m: m != "teacher") or [TEACHER_SEED]
    task_seeds = {task: expected.get(task) or expected.get(None) or table_seeds for task in tasks}
    student_seeds = sorted(set().union(*task_seeds.values())) if task_seeds else table_seeds
    teacher_seeds = seeds_found(root, table, lambda m: m == "teacher") or [TEACHER_SEED]
    columns = [(task, metric, f"{TASKS[task][0]} {METRIC_NAMES[metric]}") for task in tasks for metric in TASKS[task][1]]
    rows, problems = [], []
    for method, label in methods.items():
        cells, scores = {}, []
        for task in tasks:
            method_seeds = teacher_seeds if method == "teacher" else task_seeds[task]
            paths = [run_dir(root, table, task, method, seed) for seed in method_seeds]
            runs = [run_status(path, problems) for path in paths]
            scale = 1.0 if task in ALREADY_PERCENT else 100.0
            for metric in TASKS[task][1]:
                found = [metric_value(metrics, metric, path, problems) if status == "ok" else None
                         for path, (status, metrics) in zip(paths, runs)]
                values = [scale * value for value in found if value is not None]
                statuses = [status if status != "ok" or value is not None else "failed"
                            for (status, _), value in zip(runs, found)]
                cells[(task, metric)] = Cell(values, statuses, predictions_of(paths, found, metric, problems),
                                             metric, scale)
            scored = [main_metric(task)] if average == "main" else TASKS[task][2]
            means = [cells[(task, metric)].mean for metric in scored]
            scores.append(None if None in means else statistics.fmean(means))
        if average:
            cells["avg"] = "incomplete" if None in scores else statistics.fmean(scores)
        rows.append((label, cells, "ours", method))
        # a published average is compared only with ours over the same tasks, the paper's
        same_tasks = set(tasks) == set(default_tasks)
        mine = {("avg" if task == "avg" else (task, metric)): value for (m, task, metric), value in published.items()
                if m == method and (same_tasks if task == "avg" else task in tasks)}
        if mine:
            rows.append((f"{label} (published)", mine, "published", method))
            rows.append((f"{label}: ours - published", {key: _mean(cells[key]) - value for key, value in mine.items()
                                                         if _mean(cells[key]) is not None}, "difference", method))
    if average:
        columns.append(("avg", None, "Avg"))
    notes = [note for (name, method), note in PUBLISHED_NOTES.items()
             if with_published and name == table and method in methods]
    return {"table": table, "title": title, "columns": columns, "rows": rows, "notes": notes,
            "student_seeds": student_seeds, "task_seeds": task_seeds, "teacher_seeds": teacher_seeds,
            "problems": problems}


def describe_seeds(collected):
    """"42, 43, 44", or per task where the tasks differ: "42, 43, 44 on SST-2; 42 on CoLA, MRPC"."""
    groups = {}
    for task, seeds in collected["task_seeds"].items():
        groups.setdefault(tuple(seeds), []).append(TASKS[task][0])
    if len(groups) <= 1:
        return ", ".join(map(str, collected["student_seeds"]))
    return "; ".join(f"{', '.join(map(str, seeds))} on {', '.join(names)}" for seeds, names in groups.items())


def parse_seeds(values):
    """``--seeds`` (repeatable): ``42,43,44`` for every task, ``sst2=42,43,44`` for one task ->
    ``{None or task: [seeds]}``, or None when not given. Raises ValueError with the message."""
    if not values:
        return None
    seeds = {}
    for value in values:
        if value.count("=") > 1:
            raise ValueError(f"--seeds {value}: one task per --seeds, e.g. --seeds 42 --seeds sst2=42,43,44")
        task, equals, listed = value.partition("=") if "=" in value else ("", "", value)
        task = task.strip().lower().replace("-", "")
        if equals and task not in TASKS:
            raise ValueError(f"--seeds {value}: unknown task '{task}' (choose from {', '.join(TASKS)})")
        items = [item for item in re.split(r"[,\s]+", listed.strip()) if item]
        if not items or not all(item.isdigit() for item in items):
            raise ValueError(f"--seeds {value}: give seeds as non-negative integers, e.g. 42,43,44 or sst2=42,43,44")
        key = task if equals else None
        if key in seeds:
            raise ValueError(f"--seeds {value}: the seeds of {task or 'every task'} are given twice")
        seeds[key] = [int(item) for item in items]
    return seeds


def _renamed(label, renames):
    for old, new in renames:
        label = label.replace(old, new)
    return label


def _mean(cell):
    """A cell's mean: a ``Cell``'s, or the average (a number, or "incomplete": None)."""
    if isinstance(cell, Cell):
        return cell.mean
    return cell if isinstance(cell, float) else None


def _key(column):
    task, metric, _ = column
    return "avg" if task == "avg" else (task, metric)


def to_markdown(collected):
    lines = [f"### {collected['title']}", "",
             f"Mean ± std (sample, over seeds {describe_seeds(collected)}; teacher seed "
             f"{', '.join(map(str, collected['teacher_seeds']))}), in percent; in parentheses the 95% bootstrap "
             "interval (dev examples resampled, and seeds where there are several), where the runs wrote their "
             "per-example predictions.", ""]
    header = ["Method"] + [label for _, _, label in collected["columns"]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, cells, kind, _ in collected["rows"]:
        row = [label]
        for column in collected["columns"]:
            value = cells.get(_key(column), "")
            if isinstance(value, Cell):
                value = value.markdown()
            elif isinstance(value, float):
                value = f"{value:+.2f}" if kind == "difference" else f"{value:.2f}"
            row.append(value)
        lines.append("| " + " | ".join(row) + " |")
    lines += [""] + [f"Note: {note}." for note in collected["notes"]] if collected["notes"] else []
    return "\n".join(lines) + "\n"


def to_csv(collected):
    """One row per method (and published / difference rows); per column its mean, std, runs and
    95% interval (``95% low``, ``95% high``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["table", "method"]
    for _, _, label in collected["columns"]:
        header += [label] if label == "Avg" else [f"{label} mean", f"{label} std", f"{label} runs",
                                                   f"{label} 95% low", f"{label} 95% high"]
    writer.writerow(header)
    for label, cells, kind, _ in collected["rows"]:
        row = [collected["table"], label]
        for column in collected["columns"]:
            value = cells.get(_key(column), "")
            if isinstance(value, Cell):
                interval = value.interval or (None, None)
                row += [_number(value.mean) if value.values else value.status(), _number(value.std), value.status(),
                        _number(interval[0]), _number(interval[1])]
            elif column[0] == "avg":
                row.append(_number(value) if isinstance(value, float) else value)
            else:
                row += [_number(value) if isinstance(value, float) else "", "", "", "", ""]
        writer.writerow(row)
    return out.getvalue()


def plot_points(collected):
    """What ``plot_table`` draws: ``{(task, metric): [(method label, mean, low, high, published or None)]}``,
    low and high the cell's 95% bootstrap interval where its runs wrote their predictions, else its
    lowest and highest seed,
    over the methods with a finished run or a published value; a task's plotted metric is its main
    one where the table compares published numbers by it, else each shown metric."""
    ours = {method: cells for _, cells, kind, method in collected["rows"] if kind == "ours"}
    labels = {method: label for label, _, kind, method in collected["rows"] if kind == "ours"}
    published = {method: cells for _, cells, kind, method in collected["rows"] if kind == "published"}
    points = {}
    for task, metric, _ in collected["columns"]:
        if task == "avg" or (TABLES[collected["table"]][3] == "main" and metric != main_metric(task)):
            continue
        entries = []
        for method, cells in ours.items():
            cell, paper = cells[(task, metric)], published.get(method, {}).get((task, metric))
            if cell.values or paper is not None:
                low, high = cell.interval or ((min(cell.values), max(cell.values)) if cell.values else (None, None))
                entries.append((labels[method], cell.mean, low, high, paper))
        if entries:
            points[(task, metric)] = entries
    return points


def plot_table(collected, path):
    """Draw ``collected`` into the PNG ``path``: a panel per task (``plot_points``), the methods
    down the side; ours as a dot at the mean over seeds with a bar over its 95% interval (or, without
    per-example predictions, from the lowest to the highest seed), the published value as a hollow
    diamond. Returns the matplotlib figure."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("error: --plot needs matplotlib (pip install matplotlib)") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    points = plot_points(collected)
    if not points:
        raise SystemExit(f"error: nothing to plot in {collected['table']}: no finished run and no published value")
    methods = list(dict.fromkeys(label for entries in points.values() for label, *_ in entries))
    columns = min(4, len(points))
    rows = math.ceil(len(points) / columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(3.6 * columns + 2.6, 0.32 * len(methods) * rows + 1.6),
                                   sharey=True, squeeze=False, dpi=100)
    for axis, ((task, metric), entries) in zip(axes.flat, points.items()):
        positions = {label: len(methods) - 1 - index for index, label in enumerate(methods)}
        drawn = [(positions[label], mean, low, high) for label, mean, low, high, _ in entries if mean is not None]
        if drawn:
            y, x, low, high = zip(*drawn)
            axis.errorbar(x, y, xerr=[[m - lo for m, lo in zip(x, low)], [hi - m for m, hi in zip(x, high)]],
                          fmt="o", color="tab:blue", ecolor="tab:blue", capsize=3,
                          label="ours: mean, 95% interval (or seed range)")
        paper = [(positions[label], value) for label, _, _, _, value in entries if value is not None]
        if paper:
            y, x = zip(*paper)
            axis.plot(x, y, "D", markerfacecolor="none", markeredgecolor="tab:red", linestyle="none",
                      label="published")
        axis.set_title(f"{TASKS[task][0]} {METRIC_NAMES[metric]}", fontsize=10)
        axis.grid(axis="x", alpha=0.3)
        axis.tick_params(labelsize=8)
    for axis in axes.flat[len(points):]:
        axis.set_visible(False)
    for axis in axes[:, 0]:
        axis.set_yticks(range(len(methods)), list(reversed(methods)), fontsize=8)
    for axis in axes[-1]:
        axis.set_xlabel("%", fontsize=8)
    handles = {label: handle for axis in axes.flat for handle, label in zip(*axis.get_legend_handles_labels())}
    figure.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    seeds = describe_seeds(collected)
    figure.suptitle(f"{collected['title']} (students: seeds {seeds})", fontsize=11)
    figure.tight_layout(rect=(0, 0.05, 1, 0.95))
    figure.savefig(path)
    pyplot.close(figure)
    return figure


def _number(value):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_root", nargs="?", default="results", help="the table scripts' --output-root")
    parser.add_argument("--table", action="append", choices=sorted(TABLES),
                        help="a table to print (repeatable; default: every table with a folder in the root)")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    parser.add_argument("--output-dir", help="write <table>.md and <table>.csv there instead of printing")
    parser.add_argument("--plot", metavar="DIR", help="also draw each table into DIR/<table>.png")
    parser.add_argument("--seeds", action="append",
                        help="the seeds expected for the students, e.g. 42,43,44, or for one task, e.g. "
                             "sst2=42,43,44 (repeatable; default: every seed found under the table)")
    parser.add_argument("--tasks", help="the columns, e.g. mnli,qqp (default: the paper's and any found)")
    parser.add_argument("--methods", help="the rows, e.g. kd,prokt,lgtm (default: the table's methods)")
    parser.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                        help="replace OLD by NEW in the row labels (repeatable), e.g. DistilBERT=MiniLM-L3 for "
                             "runs of other models")
    parser.add_argument("--no-published", action="store_true",
                        help="leave out the papers' numbers (for runs of other models, e.g. scripts/mini_tables.sh)")
    parser.add_argument("--compare", nargs="?", const="", default=None, metavar="BASELINE",
                        help="also print each method minus BASELINE (a method of the table; default: the student "
                             "fine-tuned alone, ft, in the one-to-one tables and KD in the LGTM table) with a paired "
                             "bootstrap interval")
    parser.add_argument("--print-layout", action="store_true", help="print the run-folder template and exit")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.print_layout:
        print(RUN_DIR_LAYOUT)
        return 0
    root = Path(args.results_root)
    if not root.is_dir():
        print(f"error: results root not found: {root}", file=sys.stderr)
        return 1
    tables = args.table or [name for name in TABLES if (root / name).is_dir()]
    if not tables:
        print(f"error: no table folder ({', '.join(TABLES)}) in {root}", file=sys.stderr)
        return 1
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    tasks = [t.lower() for t in re.split(r"[,\s]+", args.tasks.strip())] if args.tasks else None
    unknown = [t for t in tasks or [] if t not in TASKS]
    if unknown:
        print(f"error: unknown task(s) {', '.join(unknown)} (choose from {', '.join(TASKS)})", file=sys.stderr)
        return 1
    methods = [m.lower() for m in re.split(r"[,\s]+", args.methods.strip())] if args.methods else None
    known = {method for table in tables for method in TABLES[table][2]}
    unknown = [m for m in methods or [] if m not in known]
    if unknown:
        print(f"error: unknown method(s) {', '.join(unknown)} (choose from {', '.join(sorted(known))})",
              file=sys.stderr)
        return 1
    renames = [rename.split("=", 1) for rename in args.rename]
    if any(len(pair) != 2 or not pair[0] for pair in renames):
        print("error: --rename takes OLD=NEW", file=sys.stderr)
        return 1
    collected = [collect_table(root, table, seeds, tasks, with_published=not args.no_published, methods=methods)
                 for table in tables]
    shown = {task for table in collected for task in table["task_seeds"]}
    for task in sorted(set(seeds or {}) - shown - {None}):
        print(f"warning: --seeds {task}=...: no table shown has the task {task}", file=sys.stderr)
    for table in collected:
        table["rows"] = [(_renamed(label, renames), *rest) for label, *rest in table["rows"]]
        for path, why in dict.fromkeys(table["problems"]):
            if why is not None:
                counted = "" if path.name == EVAL_PREDICTIONS else " (counted as failed)"
                print(f"warning: {path}: {why}{counted}", file=sys.stderr)
        unpredicted = {path for path, why in table["problems"] if why is None}
        if unpredicted:
            print(f"note: {table['table']}: {len(unpredicted)} finished run(s) wrote no {EVAL_PREDICTIONS} (an older "
                  "version's): their cells have no interval", file=sys.stderr)
    stray = stray_folders(root)
    if stray:
        print(f"note: {len(stray)} folder(s) under {root} belong to no table: "
              + ", ".join(str(path.relative_to(root)) for path in stray), file=sys.stderr)
    if args.plot:
        Path(args.plot).mkdir(parents=True, exist_ok=True)
        for table in collected:
            plot_table(table, Path(args.plot) / f"{table['table']}.png")
            print(f"wrote {Path(args.plot) / table['table']}.png", file=sys.stderr)
    markdown = {table["table"]: to_markdown(table) for table in collected}
    for table in collected:
        for _, cells, kind, _ in table["rows"]:
            for cell in cells.values():
                if isinstance(cell, Cell) and cell.problem:
                    print(f"warning: {table['table']}: a cell has no interval: {cell.problem}", file=sys.stderr)
    if args.compare:
        known = {method for table in collected for method in TABLES[table["table"]][2]}
        if args.compare not in known:
            print(f"error: --compare {args.compare}: no such method (choose from {', '.join(sorted(known))})",
                  file=sys.stderr)
            return 1
    if args.compare is not None and args.format == "csv" and not args.output_dir:
        print("note: --compare: the differences are printed with the Markdown tables (--format markdown)",
              file=sys.stderr)
    if args.compare is not None:
        for table in collected:
            baseline = args.compare or DEFAULT_BASELINES[table["table"]]
            comparison = compare_table(table, baseline)
            if comparison is None:
                print(f"warning: {table['table']} has no row {baseline!r} to compare with", file=sys.stderr)
                continue
            markdown[table["table"]] += "\n" + compare_markdown(table, comparison)
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for table in collected:
            (out / f"{table['table']}.md").write_text(markdown[table["table"]])
            (out / f"{table['table']}.csv").write_text(to_csv(table))
            print(f"wrote {out / table['table']}.md and .csv")
    elif args.format == "markdown":
        print("\n".join(markdown.values()), end="")
    else:
        print("\n".join(to_csv(table) for table in collected), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
