"""Collect the runs of the table scripts (scripts/*.sh) into the papers' tables.

    python collect_results.py results                       # every table found, Markdown
    python collect_results.py results --format csv --table lgtm_glue
    python collect_results.py results --output-dir tables   # <table>.md and <table>.csv each

Rows are methods, columns are the tasks' metrics (dev sets; MNLI matched and mismatched, MRPC
and QQP F1 and accuracy, STS-B Pearson and Spearman), in percent, mean ± sample standard
deviation over seeds. "Avg" (GLUE tables) is the mean over the shown tasks of each task's
score, as on the GLUE leaderboard: the mean of its metrics (MRPC, QQP: F1 and accuracy;
STS-B: Pearson and Spearman), MNLI matched accuracy only, CoLA Matthews correlation; it is
computed from the per-task means and left out ("incomplete") while a task has no finished run.
A cell whose runs are not all finished says how many are; a cell without any finished run says
"missing" (no run folder, no log) or "failed" (a run folder without eval_results.json, or only a
log: the run failed, or is still running). Published numbers (the papers' tables) are shown as a
"(published)" row with an "ours - published" row under it, only where the paper gives them.
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

# The results layout, the one definition: scripts/common.sh reads it with --print-layout.
RUN_DIR_LAYOUT = "{table}/{task}/{method}/seed{seed}"
LOG_SUFFIX = ".log"
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
TABLES = {  # table: (title, tasks in the paper's order, methods, average?, published numbers)
    "one_to_one_glue": ("One-to-one mapping (Saadi et al. 2023), GLUE dev",
                        ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"], ONE_TO_ONE_METHODS, True, {}),
    "one_to_one_squad": ("One-to-one mapping (Saadi et al. 2023), SQuAD v1.1 dev",
                         ["squad"], ONE_TO_ONE_METHODS, False, {}),
    "one_to_one_imdb": ("One-to-one mapping (Saadi et al. 2023), IMDB test", ["imdb"], ONE_TO_ONE_METHODS, False, {}),
    "lgtm_glue": ("LGTM (Ren et al. 2023), GLUE dev", ["mnli", "qqp", "qnli", "sst2", "mrpc", "rte"],
                  {"teacher": "BERT-base teacher (fine-tuned, for KD)", "kd": "KD", "prokt": "ProKT", "lgtm": "LGTM"},
                  True, {("lgtm", "mnli", "accuracy"): 83.4, ("lgtm", "qqp", "f1"): 91.1,
                         ("lgtm", "qqp", "accuracy"): 88.0}),
}


def run_dir(root, table, task, method, seed):
    return Path(root) / RUN_DIR_LAYOUT.format(table=table, task=task, method=method, seed=seed)


def run_status(path):
    """("ok", metrics) for a finished run, ("failed", None) or ("missing", None) otherwise."""
    results = path / "eval_results.json"
    log = path.with_name(path.name + LOG_SUFFIX)
    if results.is_file():
        try:
            return "ok", json.loads(results.read_text())
        except (OSError, ValueError):
            return "failed", None
    if path.exists() or log.is_file():
        return "failed", None
    return "missing", None


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
    """One (method, task, metric): the values of the finished seeds and the statuses of the others."""

    def __init__(self, values, statuses):
        self.values, self.statuses = values, statuses

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
        return text if len(self.values) == len(self.statuses) else f"{text} [{self.status()}]"


def collect_table(root, table, seeds=None, tasks=None):
    """{"columns": [(task, metric, label)], "rows": [(label, {column: Cell or number}, kind)], ...}."""
    title, default_tasks, methods, with_average, published = TABLES[table]
    present = sorted(p.name for p in (Path(root) / table).glob("*") if p.is_dir() and p.name in TASKS)
    tasks = tasks or default_tasks + [t for t in present if t not in default_tasks]
    student_seeds = seeds or seeds_found(root, table, lambda m: m != "teacher") or [TEACHER_SEED]
    teacher_seeds = seeds_found(root, table, lambda m: m == "teacher") or [TEACHER_SEED]
    columns = [(task, metric, f"{TASKS[task][0]} {METRIC_NAMES[metric]}") for task in tasks for metric in TASKS[task][1]]
    rows = []
    for method, label in methods.items():
        method_seeds = teacher_seeds if method == "teacher" else student_seeds
        cells, scores = {}, []
        for task in tasks:
            runs = [run_status(run_dir(root, table, task, method, seed)) for seed in method_seeds]
            scale = 1.0 if task in ALREADY_PERCENT else 100.0
            for metric in TASKS[task][1]:
                values = [scale * metrics[metric] for status, metrics in runs
                          if status == "ok" and isinstance(metrics.get(metric), (int, float))]
                statuses = [status if status != "ok" or metric in metrics else "failed" for status, metrics in runs]
                cells[(task, metric)] = Cell(values, statuses)
            means = [cells[(task, metric)].mean for metric in TASKS[task][2]]
            scores.append(None if None in means else statistics.fmean(means))
        if with_average:
            cells["avg"] = "incomplete" if None in scores else statistics.fmean(scores)
        rows.append((label, cells, "ours"))
        mine = {(task, metric): value for (m, task, metric), value in published.items() if m == method}
        if mine:
            rows.append((f"{label} (published)", mine, "published"))
            rows.append((f"{label}: ours - published",
                         {key: cells[key].mean - value for key, value in mine.items() if cells[key].mean is not None},
                         "difference"))
    if with_average:
        columns.append(("avg", None, "Avg"))
    return {"table": table, "title": title, "columns": columns, "rows": rows,
            "student_seeds": student_seeds, "teacher_seeds": teacher_seeds}


def _key(column):
    task, metric, _ = column
    return "avg" if task == "avg" else (task, metric)


def to_markdown(collected):
    lines = [f"### {collected['title']}", "",
             f"Mean ± std (sample, over seeds {', '.join(map(str, collected['student_seeds']))}; teacher seed "
             f"{', '.join(map(str, collected['teacher_seeds']))}), in percent.", ""]
    header = ["Method"] + [label for _, _, label in collected["columns"]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, cells, kind in collected["rows"]:
        row = [label]
        for column in collected["columns"]:
            value = cells.get(_key(column), "")
            if isinstance(value, Cell):
                value = value.markdown()
            elif isinstance(value, float):
                value = f"{value:+.2f}" if kind == "difference" else f"{value:.2f}"
            row.append(value)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def to_csv(collected):
    """One row per method (and published / difference rows); per column its mean, std and runs."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["table", "method"]
    for _, _, label in collected["columns"]:
        header += [label] if label == "Avg" else [f"{label} mean", f"{label} std", f"{label} runs"]
    writer.writerow(header)
    for label, cells, kind in collected["rows"]:
        row = [collected["table"], label]
        for column in collected["columns"]:
            value = cells.get(_key(column), "")
            if isinstance(value, Cell):
                row += [_number(value.mean) if value.values else value.status(), _number(value.std), value.status()]
            elif column[0] == "avg":
                row.append(_number(value) if isinstance(value, float) else value)
            else:
                row += [_number(value) if isinstance(value, float) else "", "", ""]
        writer.writerow(row)
    return out.getvalue()


def _number(value):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_root", nargs="?", default="results", help="the table scripts' --output-root")
    parser.add_argument("--table", action="append", choices=sorted(TABLES),
                        help="a table to print (repeatable; default: every table with a folder in the root)")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    parser.add_argument("--output-dir", help="write <table>.md and <table>.csv there instead of printing")
    parser.add_argument("--seeds", help="the seeds expected for the students, e.g. 42,43,44 "
                                        "(default: every seed found under the table)")
    parser.add_argument("--tasks", help="the columns, e.g. mnli,qqp (default: the paper's and any found)")
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
    seeds = [int(s) for s in re.split(r"[,\s]+", args.seeds.strip())] if args.seeds else None
    tasks = [t.lower() for t in re.split(r"[,\s]+", args.tasks.strip())] if args.tasks else None
    unknown = [t for t in tasks or [] if t not in TASKS]
    if unknown:
        print(f"error: unknown task(s) {', '.join(unknown)} (choose from {', '.join(TASKS)})", file=sys.stderr)
        return 1
    collected = [collect_table(root, table, seeds, tasks) for table in tables]
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for table in collected:
            (out / f"{table['table']}.md").write_text(to_markdown(table))
            (out / f"{table['table']}.csv").write_text(to_csv(table))
            print(f"wrote {out / table['table']}.md and .csv")
    elif args.format == "markdown":
        print("\n".join(to_markdown(table) for table in collected), end="")
    else:
        print("\n".join(to_csv(table) for table in collected), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
