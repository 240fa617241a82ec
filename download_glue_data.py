"""Download the GLUE benchmark into the classic layout: <data_dir>/<TASK>/{train,dev,test}.tsv.

    python download_glue_data.py --data_dir glue_data --tasks all
    python download_glue_data.py --data_dir glue_data --tasks rte,mrpc --mirror http://host/glue

Task names are case-insensitive, comma-separated, in their classic (CoLA, SST-2, STS-B, ...)
or hub (cola, sst2, stsb, ..., ax) spelling; "all" is the nine tasks and the diagnostic set.
Every file is fetched into a temporary folder inside data_dir and the task's folder is moved
into place only once it is complete and its expected files hold data rows, so a failed or
interrupted download never leaves a half-written folder nor destroys an existing one.
"""

import argparse
import csv
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from utils.engine.errors import UserError, exit_on_user_error

GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data/"
SENTEVAL_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data/"
MRPC_TRAIN, MRPC_TEST, MRPC_DEV_IDS = (
    "msr_paraphrase_train.txt", "msr_paraphrase_test.txt", "mrpc_dev_ids.tsv"
)
MRPC_TEST_HEADER = "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
DOWNLOAD_TIMEOUT_S = 60
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Task:
    """A GLUE task: its classic folder, where it comes from and its official row counts."""

    folder: str
    source: str | None  # a zip holding the task's folder, a TSV file, or None for MRPC
    row_counts: dict  # expected file -> official number of data rows
    headerless: tuple = ()  # expected files without a header line


TASKS = [
    Task("CoLA", "CoLA.zip", {"train.tsv": 8551, "dev.tsv": 1043, "test.tsv": 1063},
         headerless=("train.tsv", "dev.tsv")),
    Task("SST-2", "SST-2.zip", {"train.tsv": 67349, "dev.tsv": 872, "test.tsv": 1821}),
    Task("MRPC", None, {"train.tsv": 3668, "dev.tsv": 408, "test.tsv": 1725}),
    # The classic script swapped these two addresses (QQP fetched STS-B.zip and STS-B
    # fetched QQP-clean.zip); each task now downloads its own archive.
    Task("QQP", "QQP-clean.zip", {"train.tsv": 363846, "dev.tsv": 40430, "test.tsv": 390965}),
    Task("STS-B", "STS-B.zip", {"train.tsv": 5749, "dev.tsv": 1500, "test.tsv": 1379}),
    Task("MNLI", "MNLI.zip", {
        "train.tsv": 392702, "dev_matched.tsv": 9815, "dev_mismatched.tsv": 9832,
        "test_matched.tsv": 9796, "test_mismatched.tsv": 9847,
    }),
    Task("QNLI", "QNLIv2.zip", {"train.tsv": 104743, "dev.tsv": 5463, "test.tsv": 5463}),
    Task("RTE", "RTE.zip", {"train.tsv": 2490, "dev.tsv": 277, "test.tsv": 3000}),
    Task("WNLI", "WNLI.zip", {"train.tsv": 635, "dev.tsv": 71, "test.tsv": 146}),
    Task("diagnostic", "AX.tsv", {"diagnostic.tsv": 1104}),
]
TASK_NAMES = {
    "cola": "CoLA", "sst": "SST-2", "sst-2": "SST-2", "sst2": "SST-2", "mrpc": "MRPC",
    "qqp": "QQP", "sts": "STS-B", "sts-b": "STS-B", "stsb": "STS-B", "mnli": "MNLI",
    "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI", "diagnostic": "diagnostic", "ax": "diagnostic",
}


def parse_args(argv=None):
    """The command line; --task is the classic script's spelling of --tasks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="glue_data", help="where the task folders go")
    parser.add_argument("--tasks", "--task", dest="tasks", default="all",
                        help="comma-separated task names, or 'all'")
    parser.add_argument("--mirror", default=os.environ.get("GLUE_MIRROR"),
                        help="base URL that serves every file by its name "
                             "(default: $GLUE_MIRROR, else the official addresses)")
    parser.add_argument("--force", action="store_true",
                        help="download tasks whose folders are already complete")
    return parser.parse_args(argv)


def select_tasks(names):
    """The tasks named in a comma-separated, case-insensitive list, in the official order."""
    requested = {name.strip().lower() for name in names.split(",") if name.strip()}
    if "all" in requested:
        return list(TASKS)
    unknown = sorted(requested - TASK_NAMES.keys())
    if unknown or not requested:
        raise UserError(f"unknown task {', '.join(unknown) or repr(names)}; "
                        f"valid names (any case): {', '.join(TASK_NAMES)}, all")
    folders = {TASK_NAMES[name] for name in requested}
    return [task for task in TASKS if task.folder in folders]


def source_url(file_name, mirror=None):
    """The address of a source file: <mirror>/<file_name>, else its official address."""
    if mirror:
        return f"{mirror.rstrip('/')}/{file_name}"
    base = SENTEVAL_URL if file_name in (MRPC_TRAIN, MRPC_TEST) else GLUE_URL
    return base + file_name


def download(url, destination, task):
    """Copy url to destination with a byte progress bar; a failure is a UserError."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            expected_bytes = int(response.headers.get("Content-Length") or 0) or None
            received_bytes = 0
            with open(destination, "wb") as out, tqdm(
                total=expected_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                desc=destination.name,
            ) as progress:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    received_bytes += len(chunk)
                    progress.update(len(chunk))
    except (OSError, ValueError, http.client.HTTPException) as error:
        # A plain URLError prints as "<urlopen error ...>"; HTTPError already reads well.
        reason = error.reason if type(error) is urllib.error.URLError else error
        raise UserError(f"could not download {task.folder} from {url}: {reason}") from error
    if expected_bytes and received_bytes != expected_bytes:
        raise UserError(f"could not download {task.folder} from {url}: "
                        f"received {received_bytes} of {expected_bytes} bytes")


def fetch_zip(task, staging, mirror):
    """Download the task's zip and extract it; returns the folder holding the task's files.

    The zips hold one top-level folder, whose name may differ from the classic one
    (QNLIv2.zip holds QNLI/); macOS metadata folders are ignored.
    """
    url = source_url(task.source, mirror)
    archive = staging / task.source
    download(url, archive, task)
    extracted = staging / "extracted"
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(extracted)
    except zipfile.BadZipFile as error:
        raise UserError(f"{task.source} from {url} is not a valid zip archive: {error}") from error
    entries = [entry for entry in extracted.iterdir()
               if not entry.name.startswith(("__MACOSX", "."))]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return extracted


def fetch_tsv(task, staging, mirror):
    """Download a single-file task (the diagnostic set) under its expected file name."""
    folder = staging / task.folder
    folder.mkdir()
    (expected_file,) = task.row_counts
    download(source_url(task.source, mirror), folder / expected_file, task)
    return folder


def read_mrpc_rows(path):
    """The header line (kept as is, BOM included) and the tab-split rows of an MRPC source file."""
    with open(path, encoding="utf-8") as source:
        header = source.readline()
        rows = [line.strip().split("\t") for line in source if line.strip()]
    malformed = next((row for row in rows if len(row) != 5), None)
    if malformed is not None:
        raise UserError(f"MRPC: {path.name} has a row with {len(malformed)} fields, expected 5")
    return header, rows


def build_mrpc(task, staging, mirror):
    """MRPC as the classic script built it from the SentEval files and the official dev ids.

    train.tsv and dev.tsv split msr_paraphrase_train.txt by the (#1 ID, #2 ID) pairs of
    dev_ids.tsv, both under the source header; test.tsv drops the label column and numbers
    the rows: "index  #1 ID  #2 ID  #1 String  #2 String".
    """
    folder = staging / task.folder
    folder.mkdir()
    for file_name, local_name in [(MRPC_TRAIN, MRPC_TRAIN), (MRPC_TEST, MRPC_TEST),
                                  (MRPC_DEV_IDS, "dev_ids.tsv")]:
        download(source_url(file_name, mirror), folder / local_name, task)
    with open(folder / "dev_ids.tsv", encoding="utf-8") as ids:
        dev_ids = {tuple(line.strip().split("\t")) for line in ids if line.strip()}
    header, train_rows = read_mrpc_rows(folder / MRPC_TRAIN)
    with open(folder / "train.tsv", "w", encoding="utf-8") as train, \
            open(folder / "dev.tsv", "w", encoding="utf-8") as dev:
        train.write(header)
        dev.write(header)
        for row in train_rows:
            (dev if tuple(row[1:3]) in dev_ids else train).write("\t".join(row) + "\n")
    _, test_rows = read_mrpc_rows(folder / MRPC_TEST)
    with open(folder / "test.tsv", "w", encoding="utf-8") as test:
        test.write(MRPC_TEST_HEADER)
        for index, (_label, *fields) in enumerate(test_rows):
            test.write("\t".join([str(index), *fields]) + "\n")
    return folder


def count_rows(path, has_header):
    """Data rows of a TSV file read as UTF-8 with quoting disabled (blank lines ignored)."""
    try:
        with open(path, encoding="utf-8", newline="") as tsv:
            rows = sum(1 for row in csv.reader(tsv, delimiter="\t", quoting=csv.QUOTE_NONE) if row)
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"could not read {path}: {error}") from error
    return rows - 1 if has_header and rows else rows


def check_rows(task, folder):
    """Count each expected file's data rows; a missing or empty file is an error.

    Returns {file: rows}. A count that differs from the official GLUE count is only
    reported by `report_rows`, since mirrors may serve other versions of a task.
    """
    counts = {}
    for file_name in task.row_counts:
        path = folder / file_name
        if not path.is_file():
            raise UserError(f"{task.folder}: the download has no {file_name}")
        counts[file_name] = count_rows(path, has_header=file_name not in task.headerless)
        if counts[file_name] == 0:
            raise UserError(f"{task.folder}: {file_name} has no data rows")
    return counts


def report_rows(task, counts):
    """Print the row counts; warn on stderr about those that differ from the official ones."""
    print(f"{task.folder}: " + ", ".join(f"{name} {rows} rows" for name, rows in counts.items()))
    for file_name, rows in counts.items():
        official = task.row_counts[file_name]
        if rows != official:
            print(f"warning: {task.folder}/{file_name} has {rows} data rows, "
                  f"the official GLUE count is {official}", file=sys.stderr)


def is_complete(task, folder):
    """Whether the task's folder already holds all its expected files."""
    return all((folder / file_name).is_file() for file_name in task.row_counts)


def install(staged, target):
    """Move the complete staged folder to ``target``; into an existing ``target``, move the task's
    files one by one (each replaced atomically), so that files of the user's there stay."""
    if not target.exists():
        staged.rename(target)
        return
    for path in sorted(staged.rglob("*")):
        destination = target / path.relative_to(staged)
        if path.is_dir():
            destination.mkdir(exist_ok=True)
        else:
            os.replace(path, destination)


def fetcher(task):
    """How a task is fetched: MRPC is built from its sources, a zip extracted, a TSV copied."""
    if task.source is None:
        return build_mrpc
    return fetch_zip if task.source.endswith(".zip") else fetch_tsv


def prepare_task(task, data_dir, mirror):
    """Fetch one task into a temporary folder in data_dir, check it, then move it into place."""
    fetch = fetcher(task)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{task.folder}-") as staging:
        staged = fetch(task, Path(staging), mirror)
        counts = check_rows(task, staged)
        install(staged, data_dir / task.folder)
    report_rows(task, counts)


def make_data_dir(path):
    """Create data_dir (and its parents) if need be."""
    data_dir = Path(path)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"could not create the data directory {data_dir}: {error}") from error
    return data_dir


@exit_on_user_error
def main(argv=None):
    """Fetch the requested tasks into data_dir, skipping those already complete; a task that fails
    does not stop the others, and every failure is reported at the end."""
    args = parse_args(argv)
    tasks = select_tasks(args.tasks)
    data_dir = make_data_dir(args.data_dir)
    failed = []
    for task in tasks:
        folder = data_dir / task.folder
        if not args.force and is_complete(task, folder):
            print(f"{task.folder}: {folder} already holds its files, skipping "
                  "(--force downloads it again)")
            continue
        print(f"{task.folder}: downloading")
        try:
            prepare_task(task, data_dir, args.mirror)
        except (UserError, OSError) as error:
            if len(tasks) == 1:
                raise
            print(f"{task.folder}: failed, going on with the other tasks (reported at the end)")
            failed.append((task.folder, error))
    done = [task.folder for task in tasks if task.folder not in dict(failed)]
    if done:
        print(f"Done: {', '.join(done)} in {data_dir}")
    if failed:
        raise UserError(f"{len(failed)} of {len(tasks)} tasks failed: " + "; ".join(str(error) for _, error in failed))


if __name__ == "__main__":
    main()
