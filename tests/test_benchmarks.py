"""The benchmark scripts run end to end on tiny shapes and print their tables (their figures
are measured by running them, never asserted here)."""

import re

import pytest

from benchmarks import lgtm_step, run_all

TINY = ["--hidden", "32", "--teacher_layers", "1", "--student_layers", "1"]


def test_run_all_prints_every_row_and_target(glue_dir, capsys):
    run_all.main(["--sst2_dir", str(glue_dir / "SST-2"), "--batch_size", "4", "--steps", "1", "--warmup", "0",
                  "--heads", "2", "--vocab_size", "200", "--pool_chunks", "1", "--no_memory", *TINY])
    table = capsys.readouterr().out
    for row in (*run_all.ROWS, "LGTM training"):
        assert re.search(rf"^{re.escape(row)} +ours +\d+\.\d", table, re.MULTILINE), row
        assert re.search(rf"^{re.escape(row)} +reference +\d+\.\d", table, re.MULTILINE), row
    for target in ("one-to-one distillation: ours / reference examples/s", "loss terms share",
                   "LGTM step, quiz = x / ProKT step (ours", "LGTM training: ours / released"):
        assert re.search(rf"{re.escape(target)}.* (yes|NO)$", table, re.MULTILINE), target


def test_lgtm_step_prints_each_method(capsys):
    lgtm_step.main(["--hidden", "64", "--teacher_layers", "1", "--student_layers", "1", "--vocab_size", "100", "--batch_size", "4", "--seq_length", "16", "--repeats", "1",
                    "--warmup", "0", "--threads", "1"])
    table = capsys.readouterr().out
    for method in lgtm_step.METHODS:
        assert re.search(rf"^{re.escape(method)} +\d+\.\d+ +\d+\.\d+", table, re.MULTILINE), method
    assert re.search(r"^LGTM / ProKT +\d+\.\d+", table, re.MULTILINE)


def test_run_all_needs_the_sst2_folder(capsys):
    with pytest.raises(SystemExit) as stop:
        run_all.main([])
    assert stop.value.code == 2 and "--sst2_dir" in capsys.readouterr().err
