"""benchmarks/gpu_check.py in its tiny mode on the CPU: the same code as the GPU run, on tiny models."""

import pytest

from benchmarks import gpu_check
from utils.synthetic_glue import write_synthetic_task


@pytest.mark.long
def test_the_gpu_check_runs_every_script_resumes_a_killed_run_and_times_every_row(tmp_path):
    for task in ("sst2", "mrpc"):
        write_synthetic_task(tmp_path / "glue", task, num_train=400, num_dev=64)
    out = tmp_path / "gpu_check.md"
    status = gpu_check.main(["--tiny", "--sst2_dir", str(tmp_path / "glue/SST-2"), "--pairs_dir",
                             str(tmp_path / "glue/MRPC"), "--out", str(out), "--work_dir", str(tmp_path / "work")])
    table = out.read_text()
    assert status == 0, table
    scripts = ["run_glue", "run_glue_w_distillation", "run_squad", "run_squad_w_distillation", "run_imdb",
               "run_imdb_w_distillation", "run_lgtm_glue kd", "run_lgtm_glue prokt", "run_lgtm_glue lgtm"]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| run_")]
    assert sorted((row[0][2:], row[1]) for row in rows) == sorted(
        [(name, precision) for name in scripts for precision in ("float32", "bf16")]
        + [("run_glue_w_distillation", "bf16 + torch_compile")])
    assert all(row[-1] == "ok |" for row in rows), table
    assert "Kill and resume (float32): ok: killed at checkpoint-4 of 8 steps, resumed" in table
    for row in ("one-to-one distillation", "teacher fine-tuning", "KD step", "ProKT step", "LGTM step",
                "LGTM step, quiz = x"):
        for lengths in ("SST-2", "pairs"):
            for dtype in ("bfloat16", "float32"):
                assert f"| {row} | {lengths} | ours | {dtype} | " in table, (row, lengths, dtype)
    for target in gpu_check.TARGETS:
        assert f"| {target} | " in table


def test_without_a_gpu_the_full_check_stops_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA GPU here"):
        gpu_check.main(["--sst2_dir", str(tmp_path), "--pairs_dir", str(tmp_path), "--out", str(tmp_path / "x.md")])
