"""download_glue_data.py against a local HTTP mirror serving small GLUE-format fixtures."""

import functools
import io
import subprocess
import sys
import threading
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from download_glue_data import main, source_url

REPO_ROOT = Path(__file__).resolve().parents[1]
BOM = "\ufeff"
MRPC_HEADER = f"{BOM}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
MRPC_TRAIN_ROWS = [
    "1\t702876\t702977\tAmrozi accused his brother , \" the witness \" .\tAmrozi accused him .",
    "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's .",
    "1\t1355540\t1355592\tThe pie business doesn 't fit .\t\" The pie business does not fit .",
    "1\t1330381\t1330521\tThey published an advertisement .\tThe owners published an advert .",
    "0\t2029631\t2029565\tRacicot hated the regime .\tHis wife said he was \" 100 percent \" .",
]
MRPC_DEV_IDS = "1355540\t1355592\n2029631\t2029565\n"
MRPC_TEST_ROWS = [
    "1\t1089874\t1089925\tPCCW 's officer will report to Mr So .\tButcher will report to So .",
    "0\t3019446\t3019327\tThe automakers said sales declined .\tDomestic sales declined .",
]
ALL_FOLDERS = {
    "CoLA", "SST-2", "MRPC", "QQP", "STS-B", "MNLI", "QNLI", "RTE", "WNLI", "diagnostic",
}
EXPECTED_FILES = {
    "MNLI": ["train.tsv", "dev_matched.tsv", "dev_mismatched.tsv", "test_matched.tsv",
             "test_mismatched.tsv"],
    "MRPC": ["train.tsv", "dev.tsv", "test.tsv", "dev_ids.tsv", "msr_paraphrase_train.txt",
             "msr_paraphrase_test.txt"],
    "diagnostic": ["diagnostic.tsv"],
}


def tsv(header, rows):
    """TSV text: an optional header line, then the rows."""
    lines = ([header] if header else []) + rows
    return "".join(line + "\n" for line in lines)


def pair_rows(count, label=None, tag="pair"):
    """`count` rows "index  sentence1  sentence2 [label]" with a quote character in them."""
    return [f"{i}\tThe {tag} \"{i}\" sat.\tA {tag} sat.{'' if label is None else chr(9) + label}"
            for i in range(count)]


def write_zip(path, files):
    """A zip holding {name in the archive: text}."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)


def nli_task(folder, label, counts=(3, 2, 2)):
    """train/dev/test.tsv of a sentence-pair task under folder/, as in RTE.zip or WNLI.zip."""
    header = "index\tsentence1\tsentence2"
    train, dev, test = counts
    return {
        f"{folder}/train.tsv": tsv(header + "\tlabel", pair_rows(train, label, folder)),
        f"{folder}/dev.tsv": tsv(header + "\tlabel", pair_rows(dev, label, folder)),
        f"{folder}/test.tsv": tsv(header, pair_rows(test, tag=folder)),
    }


def write_good_mirror(root):
    """Every file the script fetches, in the formats of the real GLUE downloads."""
    root.mkdir()
    write_zip(root / "CoLA.zip", {
        "CoLA/train.tsv": tsv(None, ["gj04\t1\t\tOur friends won't buy this.",
                                     "gj04\t0\t*\tThey drank the pub.",
                                     "gj04\t1\t\tThe more you eat, the fatter you get."]),
        "CoLA/dev.tsv": tsv(None, ["gj04\t1\t\tThe sailors rode the breeze.",
                                   "gj04\t0\t*\tThe rope stretched the weights."]),
        "CoLA/test.tsv": tsv("index\tsentence", ["0\tBill whistled past the house."]),
        "CoLA/original/raw/in_domain_train.tsv": "gj04\t1\t\tOur friends won't buy this.\n",
        "__MACOSX/CoLA/._train.tsv": "resource fork",
    })
    write_zip(root / "SST-2.zip", {
        "SST-2/train.tsv": tsv("sentence\tlabel", ["hide new secretions \t0", "charming \t1"]),
        "SST-2/dev.tsv": tsv("sentence\tlabel", [f"review {i} . \t{i % 2}" for i in range(872)]),
        "SST-2/test.tsv": tsv("index\tsentence", ["0\tuneasy mishmash of styles ."]),
    })
    qqp_header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    write_zip(root / "QQP-clean.zip", {
        "QQP/train.tsv": tsv(qqp_header, [
            "133273\t213221\t213222\tHow is air traffic controlled?\tHow to control it?\t0",
            "402555\t536040\t536041\tWhat is \"QQP\"?\tWhat's QQP?\t1",
        ]),
        "QQP/dev.tsv": tsv(qqp_header, ["201359\t303345\t303346\tWhy?\tWhy not?\t0"]),
        "QQP/test.tsv": tsv("id\tquestion1\tquestion2", ["0\tWould the idea work?\tWill it work?"]),
    })
    sts_header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
    sts_row = ("0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone"
               "\tA plane is taking off.\tAn air plane is taking off.")
    write_zip(root / "STS-B.zip", {
        "STS-B/train.tsv": tsv(sts_header + "\tscore", [sts_row + "\t5.000", sts_row + "\t4.000"]),
        "STS-B/dev.tsv": tsv(sts_header + "\tscore", [sts_row + "\t3.800"]),
        "STS-B/test.tsv": tsv(sts_header, [sts_row]),
        "STS-B/LICENSE.txt": "license\n",
    })
    mnli_columns = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse"
                    "\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2")
    mnli_row = ("0\t31193\t31193n\tgovernment\t( ( Conceptually cream ) )\t( Product )"
                "\t(ROOT (S))\t(ROOT (S))\tConceptually \"cream\" skimming.\tProduct matters.")
    dev_labels = "\tneutral\tneutral\tneutral\tneutral\tneutral\tneutral"
    dev_header = mnli_columns + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"
    write_zip(root / "MNLI.zip", {
        "MNLI/train.tsv": tsv(mnli_columns + "\tlabel1\tgold_label",
                              [mnli_row + "\tneutral\tneutral"] * 3),
        "MNLI/dev_matched.tsv": tsv(dev_header, [mnli_row + dev_labels] * 2),
        "MNLI/dev_mismatched.tsv": tsv(dev_header, [mnli_row + dev_labels] * 2),
        "MNLI/test_matched.tsv": tsv(mnli_columns, [mnli_row]),
        "MNLI/test_mismatched.tsv": tsv(mnli_columns, [mnli_row]),
    })
    qnli_header = "index\tquestion\tsentence"
    write_zip(root / "QNLIv2.zip", {
        "QNLI/train.tsv": tsv(qnli_header + "\tlabel", pair_rows(2, "entailment", "QNLI")),
        "QNLI/dev.tsv": tsv(qnli_header + "\tlabel", pair_rows(2, "not_entailment", "QNLI")),
        "QNLI/test.tsv": tsv(qnli_header, pair_rows(2, tag="QNLI")),
    })
    write_zip(root / "RTE.zip", nli_task("RTE", "not_entailment"))
    write_zip(root / "WNLI.zip", nli_task("WNLI", "1"))
    (root / "AX.tsv").write_text(tsv("index\tsentence1\tsentence2", pair_rows(1104, tag="AX")),
                                 encoding="utf-8")
    (root / "msr_paraphrase_train.txt").write_text(MRPC_HEADER + "\n".join(MRPC_TRAIN_ROWS),
                                                   encoding="utf-8")
    (root / "msr_paraphrase_test.txt").write_text(MRPC_HEADER + "\n".join(MRPC_TEST_ROWS) + "\n",
                                                  encoding="utf-8")
    (root / "mrpc_dev_ids.tsv").write_text(MRPC_DEV_IDS, encoding="utf-8")


def write_broken_mirror(root):
    """Downloads that arrive but are wrong: not a zip, a header-only file, a missing file."""
    root.mkdir()
    (root / "RTE.zip").write_text("<html>Not a zip</html>")
    files = nli_task("WNLI", "1")
    files["WNLI/train.tsv"] = "index\tsentence1\tsentence2\tlabel\n"
    write_zip(root / "WNLI.zip", files)
    files = nli_task("QNLI", "entailment")
    del files["QNLI/test.tsv"]
    write_zip(root / "QNLIv2.zip", files)


class MirrorHandler(SimpleHTTPRequestHandler):
    """Serves the fixture folder; /truncated/<file> promises 1000 bytes and sends 10."""

    requested = []

    def do_GET(self):
        MirrorHandler.requested.append(self.path)
        if self.path.startswith("/truncated/"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"PK\x03\x04partial")
            return
        super().do_GET()

    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    """Base URL of a local HTTP server with the mirrors /good and /broken."""
    root = tmp_path_factory.mktemp("mirror")
    write_good_mirror(root / "good")
    write_broken_mirror(root / "broken")
    handler = functools.partial(MirrorHandler, directory=root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_main(argv):
    """Run main in-process; returns (exit code, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, stdout.getvalue(), stderr.getvalue()


def snapshot(folder):
    """{relative path: bytes} of every file under folder."""
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def error_lines(stderr):
    """stderr without tqdm's progress bars."""
    return [line for line in stderr.splitlines() if line.startswith(("error", "Traceback"))]


@pytest.fixture(scope="module")
def full_download(server_url, tmp_path_factory):
    """`--tasks all` from the good mirror: (data_dir, exit code, stdout, stderr)."""
    data_dir = tmp_path_factory.mktemp("full") / "glue_data"
    MirrorHandler.requested.clear()
    result = run_main(["--data_dir", str(data_dir), "--tasks", "all",
                       "--mirror", f"{server_url}/good"])
    return (data_dir, *result, list(MirrorHandler.requested))


def test_all_tasks_land_in_the_classic_layout(full_download):
    data_dir, code, _, stderr, _ = full_download
    assert code == 0, stderr
    assert {entry.name for entry in data_dir.iterdir()} == ALL_FOLDERS
    for folder in ALL_FOLDERS:
        for file_name in EXPECTED_FILES.get(folder, ["train.tsv", "dev.tsv", "test.tsv"]):
            assert (data_dir / folder / file_name).is_file(), f"{folder}/{file_name}"
    assert (data_dir / "CoLA" / "original" / "raw" / "in_domain_train.tsv").is_file()
    assert (data_dir / "QNLI" / "test.tsv").read_text().startswith("index\tquestion\tsentence\n")


def test_qqp_and_sts_b_each_get_their_own_archive(full_download):
    data_dir, _, _, _, requested = full_download
    assert "/good/QQP-clean.zip" in requested and "/good/STS-B.zip" in requested
    assert (data_dir / "QQP" / "train.tsv").read_text().startswith("id\tqid1\tqid2\tquestion1")
    assert (data_dir / "STS-B" / "train.tsv").read_text().startswith("index\tgenre\tfilename")
    assert (data_dir / "STS-B" / "LICENSE.txt").is_file()
    assert source_url("QQP-clean.zip") == "https://dl.fbaipublicfiles.com/glue/data/QQP-clean.zip"
    assert source_url("STS-B.zip") == "https://dl.fbaipublicfiles.com/glue/data/STS-B.zip"
    assert source_url("msr_paraphrase_train.txt") == (
        "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt")
    assert source_url("RTE.zip", "http://host/glue/") == "http://host/glue/RTE.zip"


def test_mrpc_is_split_by_the_dev_ids(full_download):
    mrpc = full_download[0] / "MRPC"
    read = functools.partial(Path.read_text, encoding="utf-8")
    dev_lines = read(mrpc / "dev.tsv").splitlines(keepends=True)
    train_lines = read(mrpc / "train.tsv").splitlines(keepends=True)
    assert dev_lines[0] == train_lines[0] == MRPC_HEADER
    assert dev_lines[1:] == [MRPC_TRAIN_ROWS[2] + "\n", MRPC_TRAIN_ROWS[4] + "\n"]
    assert train_lines[1:] == [MRPC_TRAIN_ROWS[i] + "\n" for i in (0, 1, 3)]
    assert read(mrpc / "dev_ids.tsv") == MRPC_DEV_IDS
    assert read(mrpc / "test.tsv") == (
        "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        "0\t1089874\t1089925\tPCCW 's officer will report to Mr So .\tButcher will report to So .\n"
        "1\t3019446\t3019327\tThe automakers said sales declined .\tDomestic sales declined .\n"
    )


def test_row_counts_are_printed_and_unofficial_ones_warned(full_download):
    _, _, stdout, stderr, _ = full_download
    assert "CoLA: train.tsv 3 rows, dev.tsv 2 rows, test.tsv 1 rows" in stdout
    assert ("MNLI: train.tsv 3 rows, dev_matched.tsv 2 rows, dev_mismatched.tsv 2 rows, "
            "test_matched.tsv 1 rows, test_mismatched.tsv 1 rows") in stdout
    assert "MRPC: train.tsv 3 rows, dev.tsv 2 rows, test.tsv 2 rows" in stdout
    assert "warning: RTE/train.tsv has 3 data rows, the official GLUE count is 2490" in stderr
    assert ("warning: MNLI/dev_matched.tsv has 2 data rows, "
            "the official GLUE count is 9815") in stderr
    assert "SST-2/dev.tsv" not in stderr and "diagnostic/diagnostic.tsv" not in stderr
    assert not error_lines(stderr)


def test_legacy_task_flag_and_any_spelling(server_url, tmp_path):
    code, _, stderr = run_main(["--data_dir", str(tmp_path), "--task", "RTE, sts,qqp,AX,Sst2",
                                "--mirror", f"{server_url}/good"])
    assert code == 0, stderr
    folders = {entry.name for entry in tmp_path.iterdir()}
    assert folders == {"RTE", "STS-B", "QQP", "diagnostic", "SST-2"}


def test_complete_task_is_skipped_unless_forced(server_url, tmp_path):
    argv = ["--data_dir", str(tmp_path), "--tasks", "rte", "--mirror", f"{server_url}/good"]
    assert run_main(argv)[0] == 0
    train = tmp_path / "RTE" / "train.tsv"
    train.write_text("index\tsentence1\tsentence2\tlabel\n0\tedited\tby hand\tentailment\n")
    MirrorHandler.requested.clear()
    code, stdout, _ = run_main(argv)
    assert code == 0 and "skipping" in stdout and MirrorHandler.requested == []
    assert "edited" in train.read_text()
    code, _, _ = run_main(argv + ["--force"])
    assert code == 0 and "edited" not in train.read_text()
    assert [entry.name for entry in tmp_path.iterdir()] == ["RTE"]


def test_mirror_from_the_environment(server_url, tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_MIRROR", f"{server_url}/good")
    MirrorHandler.requested.clear()
    code, _, stderr = run_main(["--data_dir", str(tmp_path), "--tasks", "wnli"])
    assert code == 0, stderr
    assert MirrorHandler.requested == ["/good/WNLI.zip"]
    assert (tmp_path / "WNLI" / "dev.tsv").is_file()


def test_http_404_is_one_clear_line(server_url, tmp_path):
    mirror = f"{server_url}/nowhere"
    completed = subprocess.run(
        [sys.executable, "download_glue_data.py", "--data_dir", str(tmp_path / "glue_data"),
         "--tasks", "RTE", "--mirror", mirror],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines() == [
        f"error: could not download RTE from {mirror}/RTE.zip: HTTP Error 404: File not found"
    ]
    assert list((tmp_path / "glue_data").iterdir()) == []


def test_unknown_task_names_the_valid_ones(tmp_path):
    code, _, stderr = run_main(["--data_dir", str(tmp_path), "--tasks", "rte,squad"])
    assert code != 0
    assert error_lines(stderr) == stderr.strip().splitlines()
    assert stderr.startswith("error: unknown task squad; valid names")
    assert "sts-b" in stderr and "ax" in stderr and "all" in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mirror, reason", [
    ("nowhere", "HTTP Error 404"),
    ("truncated", "received 11 of 1000 bytes"),
    ("broken", "RTE.zip from"),
])
def test_failed_download_leaves_the_existing_folder_untouched(
    server_url, tmp_path, mirror, reason
):
    existing = tmp_path / "RTE"
    existing.mkdir()
    (existing / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tmine\tmine\t1\n")
    (existing / "notes.txt").write_text("kept")
    before = snapshot(tmp_path)
    code, _, stderr = run_main(["--data_dir", str(tmp_path), "--tasks", "rte", "--force",
                                "--mirror", f"{server_url}/{mirror}"])
    assert code != 0
    [line] = error_lines(stderr)
    assert line.startswith("error: ") and reason in line
    assert snapshot(tmp_path) == before
    assert [entry.name for entry in tmp_path.iterdir()] == ["RTE"]


@pytest.mark.parametrize("task, message", [
    ("wnli", "error: WNLI: train.tsv has no data rows"),
    ("qnli", "error: QNLI: the download has no test.tsv"),
])
def test_missing_or_empty_expected_file_is_an_error(server_url, tmp_path, task, message):
    code, _, stderr = run_main(["--data_dir", str(tmp_path), "--tasks", task,
                                "--mirror", f"{server_url}/broken"])
    assert code != 0
    assert error_lines(stderr) == [message]
    assert list(tmp_path.iterdir()) == []


def test_replacing_an_incomplete_task_keeps_the_users_own_files(server_url, tmp_path):
    existing = tmp_path / "RTE"
    existing.mkdir()
    (existing / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tmine\tmine\tentailment\n")
    (existing / "notes.txt").write_text("my notes")
    code, _, stderr = run_main(["--data_dir", str(tmp_path), "--tasks", "rte", "--mirror", f"{server_url}/good"])
    assert code == 0, stderr
    assert (existing / "notes.txt").read_text() == "my notes"
    assert "mine" not in (existing / "train.tsv").read_text() and (existing / "dev.tsv").is_file()
    assert [entry.name for entry in tmp_path.iterdir()] == ["RTE"], "no staging folder left behind"


def test_every_task_is_tried_and_every_failure_reported_at_the_end(server_url, tmp_path):
    MirrorHandler.requested.clear()
    code, stdout, stderr = run_main(["--data_dir", str(tmp_path), "--tasks", "qnli,rte,wnli",
                                     "--mirror", f"{server_url}/broken"])
    assert code != 0
    [line] = error_lines(stderr)
    assert line.startswith("error: 3 of 3 tasks failed: ")
    assert "QNLI: the download has no test.tsv" in line and "WNLI: train.tsv has no data rows" in line
    assert "RTE.zip from" in line and "is not a valid zip archive" in line
    assert {"/broken/RTE.zip", "/broken/WNLI.zip"} <= set(MirrorHandler.requested), \
        "the tasks after a failure are still fetched"
    assert stdout.count("failed, going on with the other tasks") == 3 and "Done" not in stdout
    assert list(tmp_path.iterdir()) == []
