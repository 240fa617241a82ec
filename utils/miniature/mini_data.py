"""A GLUE folder with smaller training sets, for the miniature tables (scripts/mini_tables.sh).

    python -m utils.miniature.mini_data --glue_dir glue_data --output_dir mini_glue --tasks cola,sst2 --max_train 1000
    python -m utils.miniature.mini_data ... --tasks cola,sst2,mrpc --max_train cola=4000,sst2=6000,mrpc=2000

For each task, the training file keeps at most ``--max_train`` of its rows (one number for every
task, or one per task), drawn at random
(``--seed``) and left in their original order; the dev file is copied whole. The folder layout
and the files' format are those of ``download_glue_data.py``, so every script reads the result
with ``--data_dir``. ``subsample.json`` in the output folder records what was kept of what.
"""

import argparse
import json
import random
import shutil
from pathlib import Path

from utils.engine.cli import bounded
from utils.engine.errors import UserError, exit_on_user_error
from utils.tasks.glue_data import get_task, read_text, tsv_columns

SUBSAMPLE_RECORD = "subsample.json"


def subsample_lines(lines, keep, seed):
    """``keep`` of ``lines`` drawn with ``seed``, in their original order (all when fewer)."""
    if keep is None or keep >= len(lines):
        return list(lines)
    chosen = sorted(random.Random(seed).sample(range(len(lines)), keep))
    return [lines[index] for index in chosen]


def subsample_task(source, target, task, max_train, seed):
    """Write ``target`` (train subsampled, dev files copied); return the record of what was kept."""
    source, target = Path(source), Path(target)
    train = source / "train.tsv"
    if not train.is_file():
        raise UserError(f"{source} has no train.tsv (the folder of {task.name} in download_glue_data.py's layout)")
    lines = [line for line in read_text(train).replace("\r\n", "\n").split("\n") if line]
    _, first_data_line = tsv_columns(task, lines[0])
    header, rows = lines[:first_data_line], lines[first_data_line:]
    kept = subsample_lines(rows, max_train, seed)
    dev_files = sorted(path for path in source.glob("dev*.tsv"))
    if not dev_files:
        raise UserError(f"{source} has no dev.tsv")
    target.mkdir(parents=True, exist_ok=True)
    (target / "train.tsv").write_text("\n".join(header + kept) + "\n", encoding="utf-8")
    for path in dev_files:
        shutil.copyfile(path, target / path.name)
    return {"train_rows": len(rows), "train_kept": len(kept), "dev_files": [path.name for path in dev_files]}


def parse_max_train(text, tasks):
    """``--max_train``: ``None`` (all), ``"N"`` or ``"task=N,task=N"`` -> ``{task name: N or None}``."""
    names = [get_task(name).name for name in tasks]
    if text is None:
        return dict.fromkeys(names)
    if "=" not in text:
        return dict.fromkeys(names, _count(text))
    caps = {}
    for item in text.split(","):
        task, _, count = item.partition("=")
        caps[get_task(task.strip()).name] = _count(count)
    missing = [name for name in names if name not in caps]
    if missing:
        raise UserError(f"--max_train {text}: no size for {', '.join(missing)}")
    return {name: caps[name] for name in names}


def _count(text):
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise UserError(f"--max_train: '{text}' is not a positive number of rows")
    return count


def make_subsample(glue_dir, output_dir, tasks, max_train, seed=0):
    """Subsample every task of ``tasks`` (names as the scripts take them) into ``output_dir``;
    ``max_train``: ``{task name: rows kept or None}``, e.g. from ``parse_max_train``."""
    output_dir = Path(output_dir)
    record = {"source": str(glue_dir), "seed": seed, "tasks": {}}
    for name in tasks:
        task = get_task(name)
        folder = task.dir_name
        record["tasks"][task.name] = subsample_task(Path(glue_dir) / folder, output_dir / folder, task,
                                                    max_train[task.name], seed)
    (output_dir / SUBSAMPLE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue_dir", required=True, help="download_glue_data.py's output (a folder per task)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--tasks", required=True, help="comma separated, e.g. cola,sst2,mrpc,stsb,rte")
    parser.add_argument("--max_train", default=None,
                        help="training rows kept: N for every task, or task=N,task=N (default: all)")
    parser.add_argument("--seed", type=bounded(int, at_least=0, at_most=2**32 - 1), default=0)
    args = parser.parse_args(argv)
    tasks = [task for task in args.tasks.split(",") if task]
    record = make_subsample(args.glue_dir, args.output_dir, tasks, parse_max_train(args.max_train, tasks), args.seed)
    for name, kept in record["tasks"].items():
        print(f"{name}: {kept['train_kept']} of {kept['train_rows']} training rows")


if __name__ == "__main__":
    main()
