"""Nothing lost under faults, one test per class of fault: a kill while the first checkpoint is
written, a full disk, a damaged checkpoint, two runs in one folder, SIGTERM / SIGUSR1 / Ctrl-C,
and data files without what a task needs.

The runs that are killed or signalled are processes of their own, started as a user starts them;
the uninterrupted and resumed runs run in this process (on one thread, as the others).
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

import run_glue
import run_imdb
from tests.conftest import run_main
from utils.engine import checkpoints
from utils.engine.checkpoints import verify_checkpoint
from utils.engine.loop import STOPPED_EXIT_STATUS
from utils.miniature.synthetic_imdb import write_acl_imdb
from utils.miniature.tiny_models import make_tiny_bert

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
SLOW_CHECKPOINTS = {**ENV, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "slow_checkpoints"), str(ROOT)])}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("faults") / "bert")


def glue_argv(bert, glue_dir, out, *extra):
    return ["--model_name_or_path", str(bert), "--task_name", "rte", "--data_dir", str(glue_dir / "RTE"),
            "--do_train", "--per_device_train_batch_size", "8", "--max_steps", "12", "--save_steps", "3",
            "--save_total_limit", "0", "--logging_steps", "1", "--disable_tqdm", "--report_to", "none",
            "--output_dir", str(out), *extra]


def start(argv, env=ENV):
    return subprocess.Popen([sys.executable, str(ROOT / "run_glue.py"), *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def wait_for(process, path, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path} appeared: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.002)


def weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def same_weights(first, second):
    a, b = weights(first), weights(second)
    return a.keys() == b.keys() and all(a[key].equal(b[key]) for key in a)


def run_here(argv, caplog):
    caplog.clear()
    with caplog.at_level("INFO"):
        assert run_main(run_glue.main, argv) == 0
    return caplog.text


def refused_here(main, argv, capsys):
    capsys.readouterr()
    assert run_main(main, argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: "), error
    return error[0]


@pytest.fixture(scope="module")
def uninterrupted(bert, glue_dir, tmp_path_factory):
    """The run that the interrupted ones must end as."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert run_main(run_glue.main, glue_argv(bert, glue_dir, out)) == 0
    return out


@pytest.fixture(scope="module")
def killed_after_checkpoint_6(bert, glue_dir, tmp_path_factory):
    """An interrupted run: SIGKILL once its checkpoint-6 exists (checkpoints 3 and 6 whole)."""
    out = tmp_path_factory.mktemp("killed") / "run"
    process = start(glue_argv(bert, glue_dir, out))
    wait_for(process, out / "checkpoint-6")
    process.kill()
    process.wait()
    return out


# --------------------------------------------------------------------------- killed while saving


def test_a_run_killed_while_writing_its_first_checkpoint_starts_afresh(bert, glue_dir, uninterrupted, tmp_path,
                                                                       caplog):
    out = tmp_path / "run"
    process = start(glue_argv(bert, glue_dir, out), SLOW_CHECKPOINTS)  # waits before each manifest
    wait_for(process, out / ".checkpoint-3.partial" / "training_state.pt")
    process.kill()
    process.wait()
    assert sorted(path.name for path in out.iterdir()) == [".checkpoint-3.partial", ".run.lock", "run_args.json"]
    log = run_here(glue_argv(bert, glue_dir, out), caplog)
    assert "starting afresh" in log
    assert not (out / ".checkpoint-3.partial").exists() and same_weights(out, uninterrupted)


# --------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """``mount(size)``: a tmpfs of ``size`` bytes (unmounted after the test), or a skip where
    this process cannot mount one."""
    mounted = []

    def mount(size):
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def checkpoint_bytes(folder):
    return sum(path.stat().st_size for path in folder.iterdir())


def test_a_full_disk_is_one_line_and_harms_no_earlier_checkpoint(bert, glue_dir, uninterrupted, small_disk,
                                                                  capsys):
    size = checkpoint_bytes(uninterrupted / "checkpoint-3")
    disk = small_disk(int(1.6 * size) + 2**20)  # room for checkpoint-3, not for checkpoint-6 beside it
    out = disk / "run"
    error = refused_here(run_glue.main, glue_argv(bert, glue_dir, out), capsys)
    assert f"no space left on the disk of {out} for checkpoint-6" in error and "needs about" in error
    assert sorted(path.name for path in out.iterdir()) == ["checkpoint-3", "run_args.json"]
    assert verify_checkpoint(out / "checkpoint-3") is None


def test_a_write_that_fails_for_want_of_space_leaves_no_partial_checkpoint(bert, glue_dir, tmp_path, monkeypatch,
                                                                           capsys):
    """The same where the disk fills up during the write itself: torch's own words for it, and
    the free space gone; the same words with space left are another error, not a full disk."""
    saves, full = [], []
    torch_save = checkpoints.torch.save

    def fill_up(state, path):
        saves.append(path)
        if len(saves) > 2:  # checkpoint-3's training state and RNG states are written; checkpoint-6's fail
            full.append(True)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 64")
        torch_save(state, path)

    monkeypatch.setattr(checkpoints.torch, "save", fill_up)
    monkeypatch.setattr(checkpoints, "free_bytes", lambda folder: 4096 if full else 10**12)
    out = tmp_path / "run"
    error = refused_here(run_glue.main, glue_argv(bert, glue_dir, out), capsys)
    assert f"no space left on the disk of {out} for checkpoint-6" in error and "4.1 kB is free" in error
    assert sorted(path.name for path in out.iterdir()) == ["checkpoint-3", "run_args.json"]
    saves.clear()
    full.clear()
    monkeypatch.setattr(checkpoints, "free_bytes", lambda folder: 10**12)
    with pytest.raises(RuntimeError, match="unexpected pos"):
        run_glue.main(glue_argv(bert, glue_dir, tmp_path / "other"))
    assert not (tmp_path / "other" / ".checkpoint-6.partial").exists(), "a failed save leaves no partial folder"


def test_a_disk_that_fills_up_elsewhere_is_one_line(bert, glue_dir, tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "eval_results.json"))

    monkeypatch.setattr(run_glue, "mark_complete", full)
    error = refused_here(run_glue.main, glue_argv(bert, glue_dir, tmp_path / "run", "--max_steps", "2"), capsys)
    assert error.startswith("error: no space left on the disk writing ") and "eval_results.json" in error


# --------------------------------------------------------------------------- damaged checkpoints


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "truncated training state": lambda folder: truncate(folder / "training_state.pt"),
    "empty training state": lambda folder: (folder / "training_state.pt").write_bytes(b""),
    "truncated weights": lambda folder: truncate(folder / "model.safetensors"),
    "missing weights": lambda folder: (folder / "model.safetensors").unlink(),
    "missing RNG states": lambda folder: (folder / "rng_state_0.pt").unlink(),
    "missing manifest, RNG states": lambda folder: [(folder / name).unlink()
                                                    for name in ("manifest.json", "rng_state_0.pt")],
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_latest_checkpoint_is_named_and_the_previous_whole_one_resumed(
        damage, bert, glue_dir, killed_after_checkpoint_6, uninterrupted, tmp_path, caplog):
    out = tmp_path / "run"
    shutil.copytree(killed_after_checkpoint_6, out)
    DAMAGES[damage](out / "checkpoint-6")
    log = run_here(glue_argv(bert, glue_dir, out), caplog)
    assert "the latest checkpoint is damaged (checkpoint-6: " in log and "resuming from checkpoint-3" in log
    assert same_weights(out, uninterrupted)
    assert (out / "damaged-checkpoint-6").is_dir(), "moved aside, so that no later save takes it for a checkpoint"


def test_no_whole_checkpoint_or_a_damaged_one_asked_for_is_one_line(bert, glue_dir, killed_after_checkpoint_6,
                                                                    tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(killed_after_checkpoint_6, out)
    truncate(out / "checkpoint-6" / "model.safetensors")
    error = refused_here(run_glue.main, glue_argv(bert, glue_dir, out, "--resume_from_checkpoint",
                                                  str(out / "checkpoint-6")), capsys)
    assert "the checkpoint is damaged (model.safetensors has" in error
    truncate(out / "checkpoint-3" / "training_state.pt")
    error = refused_here(run_glue.main, glue_argv(bert, glue_dir, out), capsys)
    assert "no checkpoint of the interrupted run" in error and "checkpoint-6: " in error and "checkpoint-3: " in error
    assert "--overwrite_output_dir" in error


# --------------------------------------------------------------------------- two runs in one folder


def test_a_second_run_into_a_busy_folder_is_refused_and_a_killed_runs_lock_blocks_nothing(
        bert, glue_dir, uninterrupted, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    first = start(glue_argv(bert, glue_dir, out), SLOW_CHECKPOINTS)  # held at its first manifest
    wait_for(first, out / ".checkpoint-3.partial" / "training_state.pt")
    error = refused_here(run_glue.main, glue_argv(bert, glue_dir, out), capsys)
    assert f"--output_dir {out} is in use by process {first.pid} on " in error
    first.kill()
    first.wait()
    assert (out / ".run.lock").exists(), "the killed run could not remove its lock file"
    run_here(glue_argv(bert, glue_dir, out), caplog)
    assert same_weights(out, uninterrupted) and not (out / ".run.lock").exists()


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_a_signal_saves_a_checkpoint_at_the_next_step_and_the_run_resumes_exactly(
        stop_signal, bert, glue_dir, uninterrupted, tmp_path, caplog):
    out = tmp_path / "run"
    process = start(glue_argv(bert, glue_dir, out, "--save_steps", "5"))
    wait_for(process, out / "checkpoint-5")
    process.send_signal(stop_signal)
    assert process.wait(timeout=120) == STOPPED_EXIT_STATUS
    error = process.stderr.read().strip().splitlines()
    assert error[-1].startswith(f"stopped: {stop_signal.name} received: saved checkpoint-"), error[-3:]
    assert "Traceback" not in "\n".join(error)
    saved = int(error[-1].split("saved checkpoint-")[1].split(" ")[0])
    assert 5 < saved < 12 and verify_checkpoint(out / f"checkpoint-{saved}") is None
    assert not (out / "run_complete.json").exists()
    log = run_here(glue_argv(bert, glue_dir, out, "--save_steps", "5"), caplog)
    assert f"from checkpoint-{saved}" in log
    assert same_weights(out, uninterrupted)


def test_ctrl_c_is_one_line(bert, glue_dir, tmp_path):
    out = tmp_path / "run"
    process = start(glue_argv(bert, glue_dir, out))
    wait_for(process, out / "checkpoint-3")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    error = process.stderr.read().strip().splitlines()
    assert error[-1].startswith("interrupted (Ctrl-C)") and "Traceback" not in "\n".join(error)


def test_a_table_script_passes_the_signal_on_and_stops_with_the_runs_status(tmp_path):
    """The table scripts run each command in the background and pass SIGTERM on to it."""
    launcher = tmp_path / "launcher.py"
    launcher.write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('stopped: saved', flush=True), sys.exit(75)))\n"
        f"open({str(tmp_path / 'started')!r}, 'w').close()\n"
        "time.sleep(60)\n")
    process = subprocess.Popen(["bash", str(ROOT / "scripts" / "lgtm_glue.sh"), "--tasks", "rte", "--methods",
                                "prokt", "--output-root", str(tmp_path / "results"), "--stage", "students",
                                "--launcher", f"{sys.executable} {launcher}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**ENV, "PYTHON": sys.executable})
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() else ""
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == STOPPED_EXIT_STATUS, err
    assert "stopped: saved" in out and "stopped when asked to" in err


# --------------------------------------------------------------------------- data files


def test_a_data_file_without_a_needed_column_is_one_line_before_any_model_loads(glue_dir, tmp_path, monkeypatch,
                                                                                 capsys):
    monkeypatch.setattr(run_glue, "load_tokenizer", lambda *a, **k: pytest.fail("a model was loaded"))
    train = tmp_path / "train.csv"
    train.write_text("sentence1,sentence2\nA man sleeps.,Someone rests.\n")
    argv = ["--model_name_or_path", "bert-base-uncased", "--task_name", "rte", "--train_file", str(train),
            "--do_train", "--output_dir", str(tmp_path / "out")]
    error = refused_here(run_glue.main, argv, capsys)
    assert f"--train_file {train}: no label column ('label') for task rte" in error
    reviews = tmp_path / "reviews.json"
    reviews.write_text(json.dumps([{"review": "fine", "label": 1}]))
    monkeypatch.setattr(run_imdb, "load_tokenizer", lambda *a, **k: pytest.fail("a model was loaded"))
    error = refused_here(run_imdb.main, ["--model", "bert-base-uncased", "--train_file", str(reviews),
                                         "--output_dir", str(tmp_path / "imdb")], capsys)
    assert f"--train_file {reviews}: no column text" in error and "--text_column" in error


def test_imdb_files_not_named_as_reviews_and_empty_reviews_are_skipped_and_counted(tmp_path, caplog):
    from utils.tasks.imdb import read_aclimdb

    root = write_acl_imdb(tmp_path / "aclImdb")
    before = len(read_aclimdb(root, "train"))
    (root / "train" / "pos" / "notes.txt").write_text("my notes, not a review")
    (root / "train" / "neg" / "README").write_text("not a review either")
    (root / "train" / "neg" / "999_1.txt").write_text("")
    (root / "train" / "pos" / "998_10.txt").write_text("  \n")
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert len(read_aclimdb(root, "train")) == before
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "skipped 2 file(s) not named <id>_<rating>.txt" in warnings[0]
    assert "and 2 empty review(s)" in warnings[0]


def test_the_lock_covers_the_checkpoint_folder_and_takes_one_folder_once(bert, tmp_path, capsys):
    """--output_dir_intermed (the SQuAD and IMDB scripts' checkpoint folder) is locked too; spelled
    as another path to --output_dir, it is the same folder and one lock."""
    imdb = write_acl_imdb(tmp_path / "imdb")
    common = ["--model", str(bert), "--data_dir", str(imdb), "--max_seq_length", "48", "--max_steps", "2",
              "--per_device_train_batch_size", "2", "--disable_tqdm", "--report_to", "none"]
    out = tmp_path / "run"
    assert run_main(run_imdb.main, [*common, "--output_dir", str(out), "--output_dir_intermed", f"{out}/."]) == 0
    assert (out / "run_complete.json").is_file()
    shared = tmp_path / "intermed"
    shared.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"handle = open({str(shared / '.run.lock')!r}, 'a+')\n"
        "fcntl.flock(handle, fcntl.LOCK_EX)\n"
        "handle.write(f'process {os.getpid()} on test'); handle.flush()\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        error = refused_here(run_imdb.main, [*common, "--output_dir", str(tmp_path / "other"),
                                             "--output_dir_intermed", str(shared)], capsys)
        assert f"--output_dir_intermed {shared} is in use by process {holder.pid} on test" in error
    finally:
        holder.kill()
        holder.wait()
