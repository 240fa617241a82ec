"""The GPU check in its tiny mode on the CPU: the same code as the GPU run, on tiny models, run as
on the GPU machine: the one prepared command (scripts/gpu_check.sh), from the repository's own
files and data, with the package ``datasets`` unimportable in every process (the machine has none)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check
from utils.miniature.synthetic_glue import write_synthetic_task

REPO = Path(__file__).resolve().parents[1]
WITHOUT_DATASETS = Path(__file__).with_name("without_datasets")
SCRIPTS = ["run_glue", "run_glue_w_distillation", "run_squad", "run_squad_w_distillation", "run_imdb",
           "run_imdb_w_distillation", "run_lgtm_glue kd", "run_lgtm_glue prokt", "run_lgtm_glue lgtm"]


def without_datasets():
    """The environment of a process (and its children) in which ``import datasets`` fails."""
    path = os.pathsep.join(filter(None, [str(WITHOUT_DATASETS), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "BUDGET_S": "3000"}  # a busy CPU must not cut the check


def table_rows(table, prefix):
    return [line.split(" | ") for line in table.splitlines() if line.startswith(prefix)]


@pytest.mark.long
def test_the_prepared_command_runs_every_script_resumes_a_killed_run_and_times_every_row(tmp_path):
    env = without_datasets()
    refused = subprocess.run([sys.executable, "-c", "import datasets"], env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "made unimportable by the test" in refused.stderr
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(tmp_path / "out"), "--tiny"],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    correctness, speed = ((tmp_path / "out" / f"{part}.md").read_text() for part in ("correctness", "speed"))
    rows = table_rows(correctness, "| run_")
    assert sorted((row[0][2:], row[1]) for row in rows) == sorted(
        [(name, precision) for name in SCRIPTS for precision in ("float32", "bf16")]
        + [("run_glue_w_distillation", "bf16 + torch_compile")])
    assert all(row[-1] == "ok |" for row in rows), correctness
    assert "Kill and resume (float32): ok: killed at checkpoint-4 of 12 steps, resumed" in correctness
    log = (tmp_path / "out" / "correctness.log").read_text()
    assert "correctness: 19 script runs of 3 steps, then a kill and resume (12 steps): about " in log
    for row in ("one-to-one distillation", "teacher fine-tuning", "KD step", "ProKT step", "LGTM step",
                "LGTM step, quiz = x"):
        for lengths in ("SST-2", "pairs"):
            for dtype in ("bfloat16", "float32"):
                assert f"| {row} | {lengths} | ours | {dtype} | " in speed, (row, lengths, dtype)
    assert "| teacher fine-tuning | pairs | ours | bfloat16 + compile | " in speed  # on a GPU, distillation too
    assert "speed: 9 run_all configurations: about " in (tmp_path / "out" / "speed.log").read_text()
    targets = speed.split("Targets:")[1]
    for target in gpu_check.TARGETS:
        (row,) = table_rows(targets, f"| {target} | ")
        assert row[-1] in ("yes |", "NO |"), row
    assert "not run" not in correctness + speed and "incomplete" not in correctness + speed


def test_a_budget_stops_the_check_with_the_table_so_far_and_a_data_shortfall_is_a_row(tmp_path, capsys):
    write_synthetic_task(tmp_path / "glue", "mrpc", num_train=40, num_dev=8)
    out = tmp_path / "speed.md"
    status = gpu_check.main(["speed", "--tiny", "--pairs_dir", str(tmp_path / "glue" / "MRPC"), "--speed_steps", "4",
                             "--budget_s", "0", "--out", str(out)])
    table = out.read_text()
    assert status == 1 and table in capsys.readouterr().out
    rows = table_rows(table, "| ")
    shortfall = [row for row in rows if row[1] == "pairs"]
    assert shortfall and all("40 sentences give fewer than" in row[-1] for row in shortfall), table
    budget = [row for row in rows if row[1] == "SST-2"]
    assert budget and all(row[-1].startswith("not run: ") and "--budget_s 0 |" in row[-1] for row in budget), table
    assert "incomplete: 4 pieces not run within --budget_s 0" in table
    for target in gpu_check.TARGETS:
        assert f"| {target} |  | not measured |" in table


def test_the_prepared_command_wants_an_output_folder(tmp_path):
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("usage: bash scripts/gpu_check.sh OUTDIR")


def test_without_a_gpu_the_full_check_stops_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA GPU here"):
        gpu_check.main(["--out", str(tmp_path / "x.md")])


def test_sigterm_stops_the_check_with_the_table_so_far(tmp_path, monkeypatch):
    """What a time limit's SIGTERM does mid-run (here: sent to this process after the first row)."""
    def first_row_then_sigterm(configurations, steps, costs, budget, reference, rows):
        rows.append((*configurations[0][:1], configurations[0][3], "1.0", "0.69", "ok"))
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(gpu_check, "correctness", first_row_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "correctness.md"
    assert gpu_check.main(["correctness", "--tiny", "--out", str(out)]) == 1
    assert signal.getsignal(signal.SIGTERM) is before
    table = out.read_text()
    assert "| run_glue | float32 | 1.0 | 0.69 | ok |" in table
    assert "| run_glue_w_distillation | float32 |  |  | not run: stopped before it |" in table
    assert "Kill and resume (float32): not run: stopped before it" in table
    assert table.rstrip().endswith("incomplete: stopped by SIGTERM after the rows above")
