"""The table scripts (scripts/*.sh), the Slurm batch files and collect_results.py, without training."""

import csv
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import collect_results

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
ENV = {**os.environ, "PYTHON": sys.executable}


def run_script(name, *args, check=True):
    result = subprocess.run(["bash", str(SCRIPTS / name), *args], capture_output=True, text=True, env=ENV,
                            cwd=REPO, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def commands(stdout):
    """The printed commands ("+ ..."), each as {"script": name, "flags": {flag: value or True}}."""
    parsed = []
    for line in stdout.splitlines():
        if not line.startswith("+ "):
            continue
        words = shlex.split(line[2:])
        script = next(Path(w).name for w in words if w.endswith(".py"))
        flags, index = {}, words.index(next(w for w in words if w.endswith(".py"))) + 1
        while index < len(words):
            flag = words[index]
            assert flag.startswith("--"), f"unexpected word {flag!r} in {line}"
            if index + 1 < len(words) and not words[index + 1].startswith("--"):
                flags[flag], index = words[index + 1], index + 2
            else:
                flags[flag], index = True, index + 1
        parsed.append({"script": script, "flags": flags, "words": words})
    return parsed


def test_one_to_one_glue_dry_run_runs_the_papers_commands(tmp_path):
    out = tmp_path / "results"
    result = run_script("one_to_one_glue.sh", "--dry-run", "--tasks", "rte,MRPC", "--seeds", "1 2",
                        "--output-root", str(out), "--glue-dir", str(tmp_path / "glue"))
    found = commands(result.stdout)
    assert [c["script"] for c in found[:2]] == ["download_glue_data.py", "run_glue.py"]
    assert found[0]["flags"]["--tasks"] == "rte,mrpc"
    teacher = found[1]["flags"]
    assert teacher == {"--model_type": "bert", "--model_name_or_path": "bert-base-uncased", "--task_name": "rte",
                       "--data_dir": str(tmp_path / "glue" / "RTE"), "--do_lower_case": True,
                       "--max_seq_length": "128", "--do_train": True, "--per_gpu_train_batch_size": "32",
                       "--per_gpu_eval_batch_size": "32", "--learning_rate": "5e-5", "--num_train_epochs": "3.0",
                       "--seed": "42", "--output_dir": str(out / "one_to_one_glue/rte/teacher/seed42")}
    students = [c for c in found if c["script"] == "run_glue_w_distillation.py"]
    assert len(students) == 2 * 7 * 2  # tasks x distillation methods x seeds
    by_run = {(c["flags"]["--task_name"], Path(c["flags"]["--output_dir"]).parent.name, c["flags"]["--seed"]): c
              for c in students}
    paper = by_run[("rte", "corr_mask", "2")]["flags"]
    readme = shlex.split("--alpha_ce 0 --alpha_glue 0.5 --alpha_corr 0.005 --alpha_mse 0 --alpha_cos 0 "
                         "--do_mask True --num_train_epochs 3.0 --max_seq_length 128 --task_name rte")
    assert all(paper[flag] == value for flag, value in zip(readme[::2], readme[1::2]))
    assert paper["--student_model_name_or_path"] == "distilbert-base-uncased"
    assert paper["--teacher_model_name_or_path"] == teacher["--output_dir"]
    assert paper["--output_dir"] == str(out / "one_to_one_glue/rte/corr_mask/seed2")
    weights = {method: {f: float(by_run[("mrpc", method, "1")]["flags"][f])
                        for f in ("--alpha_glue", "--alpha_ce", "--alpha_mse", "--alpha_cos", "--alpha_corr")}
               for method in ("task", "kd", "mse", "cos", "corr")}
    assert weights["task"] == {"--alpha_glue": 0.5, "--alpha_ce": 0, "--alpha_mse": 0, "--alpha_cos": 0, "--alpha_corr": 0}
    for method, flag, value in (("kd", "--alpha_ce", 0.5), ("mse", "--alpha_mse", 0.5), ("cos", "--alpha_cos", 0.5),
                                ("corr", "--alpha_corr", 0.005)):
        assert weights[method] == {**weights["task"], flag: value}
        assert by_run[("mrpc", method, "1")]["flags"]["--do_mask"] == "False"
    # tasks one after another: RTE's teacher and students before MRPC's
    order = [c["flags"].get("--task_name") for c in found[1:]]
    assert order == ["rte"] * 17 + ["mrpc"] * 17  # the teacher, then 8 methods x 2 seeds
    assert not out.exists(), "a dry run writes nothing"


def test_one_to_one_glue_runs_the_ft_and_pkd_rows(tmp_path):
    out = tmp_path / "results"
    result = run_script("one_to_one_glue.sh", "--dry-run", "--tasks", "rte", "--methods", "ft,pkd",
                        "--output-root", str(out), "--glue-dir", str(tmp_path / "glue"))
    found = commands(result.stdout)
    assert [c["script"] for c in found] == ["download_glue_data.py", "run_glue.py", "run_glue.py",
                                            "run_glue_w_distillation.py"]
    ft, pkd = found[2]["flags"], found[3]["flags"]
    assert ft == {"--model_name_or_path": "distilbert-base-uncased", "--task_name": "rte",
                  "--data_dir": str(tmp_path / "glue" / "RTE"), "--max_seq_length": "128", "--do_train": True,
                  "--per_device_train_batch_size": "16", "--learning_rate": "5e-5", "--num_train_epochs": "3.0",
                  "--seed": "42", "--output_dir": str(out / "one_to_one_glue/rte/ft/seed42")}
    assert {flag: pkd[flag] for flag in ("--alpha_glue", "--alpha_ce", "--alpha_pkd", "--temperature",
                                         "--pkd_layers", "--alpha_corr", "--do_mask")} == {
        "--alpha_glue": "0.5", "--alpha_ce": "0.5", "--alpha_pkd": "500", "--temperature": "10",
        "--pkd_layers": "skip", "--alpha_corr": "0", "--do_mask": "False"}
    assert pkd["--output_dir"] == str(out / "one_to_one_glue/rte/pkd/seed42")


def finished(path, complete=True, **metrics):
    """A run folder with its results and, unless ``complete`` is False, its completion mark."""
    path.mkdir(parents=True)
    (path / "eval_results.json").write_text(json.dumps(metrics))
    if complete:
        (path / "run_complete.json").write_text("{}")


def test_a_run_with_results_but_no_completion_mark_is_run_again_and_not_counted(tmp_path):
    """LGTM writes its best student's eval_results.json while it trains: without the mark written
    last, an interrupted run is unfinished for the table scripts and collect_results.py."""
    out = tmp_path / "results"
    finished(out / "lgtm_glue/rte/teacher/seed42", accuracy=0.7)
    finished(out / "lgtm_glue/rte/lgtm/seed1", complete=False, accuracy=0.6)
    result = run_script("lgtm_glue.sh", "--dry-run", "--tasks", "rte", "--methods", "lgtm", "--seeds", "1",
                        "--output-root", str(out))
    (again,) = [c for c in commands(result.stdout) if c["script"] == "run_lgtm_glue.py"]
    assert again["flags"]["--seed"] == "1" and again["flags"]["--overwrite_output_dir"] is True, \
        "no checkpoint to resume from: it starts again"
    (out / "lgtm_glue/rte/lgtm/seed1/checkpoint-3").mkdir()
    result = run_script("lgtm_glue.sh", "--dry-run", "--tasks", "rte", "--methods", "lgtm", "--seeds", "1",
                        "--output-root", str(out))
    (again,) = [c for c in commands(result.stdout) if c["script"] == "run_lgtm_glue.py"]
    assert "--overwrite_output_dir" not in again["flags"], "with a checkpoint the same command resumes it"
    collected = collect_results.collect_table(out, "lgtm_glue", tasks=["rte"])
    rows = {label: cells for label, cells, *_ in collected["rows"]}
    assert rows["LGTM"][("rte", "accuracy")].status() == "failed" and rows["LGTM"][("rte", "accuracy")].mean is None
    assert rows["BERT-base teacher (fine-tuned, for KD)"][("rte", "accuracy")].mean == pytest.approx(70.0)


def test_collect_results_and_the_scripts_name_the_completion_mark_the_runs_write():
    import utils.engine.runtime

    assert collect_results.COMPLETION_MARK == utils.engine.runtime.COMPLETION_MARK
    assert f"COMPLETION_MARK={utils.engine.runtime.COMPLETION_MARK}\n" in (SCRIPTS / "common.sh").read_text()


def test_finished_runs_are_skipped_and_left_out_of_the_job_list(tmp_path):
    out = tmp_path / "results"
    finished(out / "lgtm_glue/rte/teacher/seed42", accuracy=0.7)
    finished(out / "lgtm_glue/rte/lgtm/seed1", accuracy=0.6)
    args = ["--tasks", "rte", "--seeds", "1,2", "--output-root", str(out)]
    result = run_script("lgtm_glue.sh", "--dry-run", *args)
    found = commands(result.stdout)
    assert "# skip (finished): " + str(out / "lgtm_glue/rte/teacher/seed42") in result.stdout
    assert "# skip (finished): " + str(out / "lgtm_glue/rte/lgtm/seed1") in result.stdout
    runs = [(Path(c["flags"]["--output_dir"]).parent.name, c["flags"]["--seed"]) for c in found
            if c["script"] == "run_lgtm_glue.py"]
    assert runs == [("kd", "1"), ("kd", "2"), ("prokt", "1"), ("prokt", "2"), ("lgtm", "2")]
    assert not any(c["script"] == "run_glue.py" for c in found)
    flags = {Path(c["flags"]["--output_dir"]).parent.name: c["flags"] for c in found if c["script"] == "run_lgtm_glue.py"}
    assert flags["kd"]["--teacher_model"] == str(out / "lgtm_glue/rte/teacher/seed42")
    assert "--train_teacher" not in flags["kd"] and "--use_lgtm" not in flags["prokt"]
    assert flags["prokt"]["--train_teacher"] is True and flags["prokt"]["--init_classifier_to_zero"] is True
    assert flags["lgtm"]["--use_lgtm"] is True and flags["lgtm"]["--teacher_model"] == "bert-base-uncased"
    readme = shlex.split("--model_name_or_path google/bert_uncased_L-6_H-768_A-12 --per_device_train_batch_size 32 "
                         "--per_device_eval_batch_size 32 --learning_rate 3e-05 --t_learning_rate 3e-05 --alpha_kd 1.0 "
                         "--temperature 1.0 --num_train_epochs 6 --eval_steps 1000")
    assert all(flags["lgtm"][flag] == value for flag, value in zip(readme[::2], readme[1::2]))
    assert flags["lgtm"]["--do_train"] is True and flags["lgtm"]["--do_eval"] is True

    jobs = run_script("lgtm_glue.sh", "--list-jobs", *args).stdout.splitlines()
    assert len(jobs) == 5
    selections = []
    for line in jobs:
        words = shlex.split(line)
        assert Path(words[0]).name == "lgtm_glue.sh"
        options = dict(zip(words[1::2], words[2::2]))
        assert options["--output-root"] == str(out) and options["--stage"] == "students"
        selections.append((options["--tasks"], options["--methods"], options["--seeds"]))
    assert selections == [("rte", "kd", "1"), ("rte", "kd", "2"), ("rte", "prokt", "1"), ("rte", "prokt", "2"),
                          ("rte", "lgtm", "2")]
    # a job line runs exactly its run
    one = commands(run_script("lgtm_glue.sh", "--dry-run", *shlex.split(jobs[2])[1:]).stdout)
    assert [(c["script"], c["flags"]["--output_dir"]) for c in one] == [
        ("run_lgtm_glue.py", str(out / "lgtm_glue/rte/prokt/seed1"))]


def test_lgtm_kd_teacher_given_by_option(tmp_path):
    result = run_script("lgtm_glue.sh", "--dry-run", "--tasks", "qqp", "--methods", "kd",
                        "--kd-teacher", "teachers/{task}/best", "--output-root", str(tmp_path))
    found = commands(result.stdout)
    assert [c["script"] for c in found] == ["download_glue_data.py", "run_lgtm_glue.py"]
    assert found[1]["flags"]["--teacher_model"] == "teachers/qqp/best"


def test_squad_and_imdb_dry_runs(tmp_path):
    squad = commands(run_script("one_to_one_squad.sh", "--dry-run", "--methods", "corr_mask", "--train-file", "t.json",
                                "--dev-file", "d.json", "--output-root", str(tmp_path)).stdout)
    assert [c["script"] for c in squad] == ["run_squad.py", "run_squad_w_distillation.py"]
    student = squad[1]["flags"]
    assert student["--alpha_corr"] == "0.5" and student["--alpha_squad"] == "0.5" and student["--do_mask"] == "True"
    assert student["--teacher_name_or_path"] == squad[0]["flags"]["--output_dir"] == str(
        tmp_path / "one_to_one_squad/squad/teacher/seed42")
    assert student["--train_file"] == "t.json" and student["--predict_file"] == "d.json"
    imdb = commands(run_script("one_to_one_imdb.sh", "--dry-run", "--methods", "task,corr", "--seeds", "3",
                               "--imdb-dir", "aclImdb", "--output-root", str(tmp_path)).stdout)
    assert [c["script"] for c in imdb] == ["run_imdb.py", "run_imdb_w_distillation.py", "run_imdb_w_distillation.py"]
    assert imdb[2]["flags"]["--alpha_corr"] == "0.005" and imdb[2]["flags"]["--alpha_imdb"] == "0.5"
    assert imdb[1]["flags"]["--data_dir"] == "aclImdb"
    assert imdb[2]["flags"]["--output_dir"] == str(tmp_path / "one_to_one_imdb/imdb/corr/seed3")


def test_bad_options_stop_with_a_message():
    result = run_script("one_to_one_glue.sh", "--tasks", "mnli,foo", check=False)
    assert result.returncode != 0 and "unknown task 'foo'" in result.stderr
    result = run_script("lgtm_glue.sh", "--no-such-option", "1", check=False)
    assert result.returncode != 0 and "unknown option --no-such-option" in result.stderr


STUB = """import json, sys
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("--output_dir") + 1])
if "--seed" in args and args[args.index("--seed") + 1] == "13":
    print("Traceback: the stub fails for seed 13")
    sys.exit(3)
out.mkdir(parents=True, exist_ok=True)
(out / "eval_results.json").write_text(json.dumps({"accuracy": 0.5, "argv": args}))
(out / "run_complete.json").write_text("{}")
"""


def test_runs_with_a_launcher_log_skip_and_stop_at_the_first_failure(tmp_path):
    stub = tmp_path / "stub.py"
    stub.write_text(STUB)
    out = tmp_path / "results"
    args = ["--tasks", "rte", "--methods", "prokt,lgtm", "--output-root", str(out),
            "--launcher", f"{sys.executable} {stub}", "--stage", "students", "--extra", "--max_steps 2"]
    result = run_script("lgtm_glue.sh", "--seeds", "7,13", *args, check=False)
    assert result.returncode == 1
    assert "run failed (exit 3): " + str(out / "lgtm_glue/rte/prokt/seed13") in result.stderr
    ran = json.loads((out / "lgtm_glue/rte/prokt/seed7/eval_results.json").read_text())["argv"]
    assert ran[-2:] == ["--max_steps", "2"]
    assert not (out / "lgtm_glue/rte/lgtm").exists(), "nothing runs after a failure"
    assert "the stub fails" in (out / "lgtm_glue/rte/prokt/seed13.log").read_text()
    again = run_script("lgtm_glue.sh", "--seeds", "7", *args)
    assert "# skip (finished): " + str(out / "lgtm_glue/rte/prokt/seed7") in again.stdout
    assert (out / "lgtm_glue/rte/lgtm/seed7/eval_results.json").is_file()


@pytest.mark.parametrize("name", ["slurm_array.sbatch", "slurm_multinode.sbatch", "common.sh", "signals.sh", "one_to_one_glue.sh",
                                  "one_to_one_squad.sh", "one_to_one_imdb.sh", "lgtm_glue.sh"])
def test_shell_files_parse(name):
    subprocess.run(["bash", "-n", str(SCRIPTS / name)], check=True)


def test_slurm_array_runs_its_line(tmp_path):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(f"echo first > {tmp_path}/ran\necho 'second job' > {tmp_path}/ran\n")
    subprocess.run(["bash", str(SCRIPTS / "slurm_array.sbatch"), str(jobs)], check=True, capture_output=True,
                   env={**ENV, "SLURM_ARRAY_TASK_ID": "2"})
    assert (tmp_path / "ran").read_text() == "second job\n"


# --------------------------------------------------------------------------- collect_results


@pytest.fixture
def results_tree(tmp_path):
    """lgtm_glue: LGTM on MNLI with seeds 1, 2, 3; QQP seed 1 and 2 finished, seed 3 failed; RTE
    finished for every seed; ProKT RTE seed 2 missing; KD and the teacher absent."""
    root = tmp_path / "results"
    table = root / "lgtm_glue"
    for seed, (m, mm) in zip((1, 2, 3), ((0.82, 0.83), (0.83, 0.84), (0.84, 0.85))):
        finished(table / f"mnli/lgtm/seed{seed}", accuracy=m, accuracy_mm=mm, eval_samples=10)
    finished(table / "qqp/lgtm/seed1", f1=0.90, accuracy=0.86)
    finished(table / "qqp/lgtm/seed2", f1=0.92, accuracy=0.88)
    (table / "qqp/lgtm/seed3").mkdir(parents=True)  # started, never finished
    for seed, accuracy in zip((1, 2, 3), (0.70, 0.72, 0.77)):
        finished(table / f"rte/lgtm/seed{seed}", accuracy=accuracy)
    finished(table / "rte/prokt/seed1", accuracy=0.60)
    finished(table / "rte/prokt/seed3", accuracy=0.64)
    (table / "mnli/prokt").mkdir(parents=True)
    (table / "mnli/prokt/seed1.log").write_text("error: CUDA out of memory\n")  # failed before its folder
    return root


def test_collect_means_stds_and_statuses(results_tree):
    collected = collect_results.collect_table(results_tree, "lgtm_glue", tasks=["mnli", "qqp", "rte"])
    rows = {label: cells for label, cells, *_ in collected["rows"]}
    assert collected["student_seeds"] == [1, 2, 3]
    lgtm = rows["LGTM"]
    assert lgtm[("mnli", "accuracy")].mean == pytest.approx(83.0)
    assert lgtm[("mnli", "accuracy")].std == pytest.approx(1.0)  # sample std of 82, 83, 84
    assert lgtm[("qqp", "f1")].mean == pytest.approx(91.0) and lgtm[("qqp", "f1")].std == pytest.approx(2 ** 0.5)
    assert lgtm[("qqp", "f1")].status() == "2/3 (1 failed)"
    rte = lgtm[("rte", "accuracy")]
    assert rte.mean == pytest.approx(73.0) and rte.std == pytest.approx(3.605551, rel=1e-5)  # sqrt(13)
    # Avg: MNLI matched 83, QQP (91 + 87) / 2 = 89, RTE 73
    assert lgtm["avg"] == pytest.approx((83 + 89 + 73) / 3)
    prokt = rows["ProKT"]
    assert prokt[("rte", "accuracy")].mean == pytest.approx(62.0) and prokt[("rte", "accuracy")].status() == "2/3 (1 missing)"
    assert prokt[("mnli", "accuracy")].status() == "failed" and prokt[("qqp", "f1")].status() == "missing"
    assert prokt["avg"] == "incomplete"
    assert rows["KD"][("mnli", "accuracy")].status() == "missing"
    assert rows["BERT-base teacher (fine-tuned, for KD)"][("rte", "accuracy")].statuses == ["missing"]
    assert rows["LGTM (published)"] == {("mnli", "accuracy"): 83.4, ("qqp", "f1"): 91.1, ("qqp", "accuracy"): 88.0}
    difference = rows["LGTM: ours - published"]
    assert difference[("mnli", "accuracy")] == pytest.approx(-0.4)
    assert difference[("qqp", "f1")] == pytest.approx(-0.1) and difference[("qqp", "accuracy")] == pytest.approx(-1.0)


def test_seeds_per_task_three_on_sst2_one_elsewhere(tmp_path, capsys):
    """The miniature tables' layout: SST-2 over seeds 42, 43, 44, CoLA over 42 alone. Asked for
    with --seeds 42 --seeds sst2=42,43,44, each task's cells count its own seeds (no CoLA seed 43
    reported missing); without --seeds every seed of the table is expected everywhere, so that a
    run that never started is missing; a seed asked for and absent is missing."""
    root = tmp_path / "results"
    table = root / "one_to_one_glue"
    for seed, accuracy in zip((42, 43, 44), (0.80, 0.84, 0.85)):
        finished(table / f"sst2/kd/seed{seed}", accuracy=accuracy)
    finished(table / "cola/kd/seed42", matthews_correlation=0.2)
    finished(table / "sst2/teacher/seed42", accuracy=0.9)
    finished(table / "cola/teacher/seed42", matthews_correlation=0.3)
    collected = collect_results.collect_table(root, "one_to_one_glue", {None: [42], "sst2": [42, 43, 44]},
                                              tasks=["cola", "sst2"], methods=["teacher", "kd"])
    assert collected["task_seeds"] == {"cola": [42], "sst2": [42, 43, 44]}
    kd = dict((label, cells) for label, cells, *_ in collected["rows"])["DistilBERT + logit KD"]
    assert kd[("sst2", "accuracy")].mean == pytest.approx(83.0) and kd[("sst2", "accuracy")].status() == "3/3"
    assert kd[("cola", "matthews_correlation")].status() == "1/1"
    assert kd["avg"] == pytest.approx((20 + 83) / 2)
    found = collect_results.collect_table(root, "one_to_one_glue", tasks=["cola", "sst2"], methods=["kd"],
                                          with_published=False)
    assert found["task_seeds"] == {"cola": [42, 43, 44], "sst2": [42, 43, 44]}
    (_, kd, *_), = found["rows"]
    assert kd[("cola", "matthews_correlation")].status() == "1/3 (2 missing)"
    assert collect_results.main([str(root), "--tasks", "cola,sst2", "--methods", "teacher,kd", "--seeds", "42",
                                 "--seeds", "SST-2=42,43,44"]) == 0
    markdown = capsys.readouterr().out
    assert "over seeds 42 on CoLA; 42, 43, 44 on SST-2; teacher seed 42" in markdown
    # asked for seed 45 on SST-2: reported missing there, CoLA untouched
    collected = collect_results.collect_table(root, "one_to_one_glue", {None: [42], "sst2": [42, 45]},
                                              tasks=["cola", "sst2"], methods=["kd"], with_published=False)
    (_, kd, *_), = collected["rows"]
    assert kd[("sst2", "accuracy")].status() == "1/2 (1 missing)" and kd[("cola", "matthews_correlation")].status() == "1/1"
    for bad, message in ((["qnlx=1"], "unknown task 'qnlx'"), (["=42"], "unknown task ''"),
                         (["sst2="], "give seeds as non-negative integers"),
                         (["4x"], "give seeds as non-negative integers"),
                         (["sst2=42 cola=43"], "one task per --seeds"),
                         (["42", "43"], "the seeds of every task are given twice"),
                         (["sst2=1", "SST-2=2"], "the seeds of sst2 are given twice")):
        assert collect_results.main([str(root)] + [f"--seeds={value}" for value in bad]) == 1
        assert message in capsys.readouterr().err
    assert collect_results.main([str(root), "--tasks", "cola", "--seeds", "42", "--seeds", "sst2=42,43"]) == 0
    assert "warning: --seeds sst2=...: no table shown has the task sst2" in capsys.readouterr().err


def test_collect_markdown_and_csv(results_tree, tmp_path, capsys):
    assert collect_results.main([str(results_tree), "--tasks", "mnli,qqp,rte"]) == 0
    markdown = capsys.readouterr().out
    lines = markdown.splitlines()
    header = next(line for line in lines if line.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Method", "MNLI acc", "MNLI acc-mm", "QQP F1", "QQP acc", "RTE acc", "Avg"]
    row = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
           for line in lines if line.startswith("| ") and not line.startswith("| Method")}
    assert row["LGTM"] == ["83.00 ± 1.00", "84.00 ± 1.00", "91.00 ± 1.41 [2/3 (1 failed)]",
                           "87.00 ± 1.41 [2/3 (1 failed)]", "73.00 ± 3.61", "81.67"]
    assert row["ProKT"] == ["failed", "failed", "missing", "missing", "62.00 ± 2.83 [2/3 (1 missing)]", "incomplete"]
    assert row["LGTM (published)"] == ["83.40", "", "91.10", "88.00", "", ""]
    assert row["LGTM: ours - published"] == ["-0.40", "", "-0.10", "-1.00", "", ""]

    assert collect_results.main([str(results_tree), "--tasks", "mnli,qqp,rte", "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    lgtm = next(r for r in table if r["method"] == "LGTM")
    assert (lgtm["MNLI acc mean"], lgtm["MNLI acc std"], lgtm["MNLI acc runs"]) == ("83.0000", "1.0000", "3/3")
    assert lgtm["QQP F1 runs"] == "2/3 (1 failed)" and lgtm["Avg"] == "81.6667"
    prokt = next(r for r in table if r["method"] == "ProKT")
    assert prokt["MNLI acc mean"] == "failed" and prokt["QQP F1 mean"] == "missing" and prokt["Avg"] == "incomplete"

    assert collect_results.main([str(results_tree), "--output-dir", str(tmp_path / "tables")]) == 0
    assert (tmp_path / "tables/lgtm_glue.md").read_text().startswith("### LGTM")
    assert (tmp_path / "tables/lgtm_glue.csv").read_text().startswith("table,method,MNLI acc mean")


def test_layout_is_the_scripts_layout():
    printed = subprocess.run([sys.executable, str(REPO / "collect_results.py"), "--print-layout"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert printed == collect_results.RUN_DIR_LAYOUT
    assert collect_results.run_dir("r", "lgtm_glue", "mnli", "lgtm", 42) == Path("r/lgtm_glue/mnli/lgtm/seed42")


@pytest.fixture
def one_to_one_tree(tmp_path):
    """one_to_one_glue: corr_mask on MRPC and RTE with seeds 1-3, pkd on RTE with seeds 1 and 2,
    ft on MRPC seed 1 only."""
    table = tmp_path / "results" / "one_to_one_glue"
    for seed, (f1, accuracy, rte) in zip((1, 2, 3), ((0.86, 0.80, 0.64), (0.87, 0.81, 0.66), (0.88, 0.82, 0.65))):
        finished(table / f"mrpc/corr_mask/seed{seed}", f1=f1, accuracy=accuracy)
        finished(table / f"rte/corr_mask/seed{seed}", accuracy=rte)
    finished(table / "rte/pkd/seed1", accuracy=0.60)
    finished(table / "rte/pkd/seed2", accuracy=0.62)
    finished(table / "mrpc/ft/seed1", f1=0.84, accuracy=0.78)
    return tmp_path / "results"


def test_one_to_one_glue_shows_the_published_rows_by_each_tasks_main_metric(one_to_one_tree):
    collected = collect_results.collect_table(one_to_one_tree, "one_to_one_glue", tasks=["mrpc", "rte"])
    rows = {label: cells for label, cells, *_ in collected["rows"]}
    masked = "DistilBERT + correlation + sub-teacher mask"
    assert rows[masked][("mrpc", "f1")].mean == pytest.approx(87.0)
    # the paper's one number per task is its main metric: MRPC F1; Avg of the main metrics
    assert rows[masked]["avg"] == pytest.approx((87.0 + 65.0) / 2)
    # two of the paper's eight tasks: its average (over eight) is not put beside ours (over two)
    assert rows[f"{masked} (published)"] == {("mrpc", "f1"): 86.45, ("rte", "accuracy"): 65.05}
    difference = rows[f"{masked}: ours - published"]
    assert difference[("mrpc", "f1")] == pytest.approx(0.55) and difference[("rte", "accuracy")] == pytest.approx(-0.05)
    everything = collect_results.collect_table(one_to_one_tree, "one_to_one_glue")
    rows = {label: cells for label, cells, *_ in everything["rows"]}
    assert rows[f"{masked} (published)"]["avg"] == 80.13 and rows["DistilBERT + PKD (published)"]["avg"] == 75.56
    assert "avg" not in rows[f"{masked}: ours - published"], "ours is incomplete over the eight tasks"
    assert rows["DistilBERT fine-tuned (no teacher) (published)"][("mrpc", "f1")] == 84.48
    assert rows["DistilBERT + PKD: ours - published"] == {("rte", "accuracy"): pytest.approx(61.0 - 62.24)}
    assert "DistilBERT, task loss only (published)" not in rows, "the paper has no such row"
    assert any("78.56" in note and "75.56" in note for note in collected["notes"])


def test_the_figure_plots_the_tables_values(one_to_one_tree, tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "figures"
    assert collect_results.main([str(one_to_one_tree), "--tasks", "mrpc,rte", "--plot", str(out)]) == 0
    assert "78.56" in capsys.readouterr().out
    path = out / "one_to_one_glue.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    collected = collect_results.collect_table(one_to_one_tree, "one_to_one_glue", tasks=["mrpc", "rte"])
    figure = collect_results.plot_table(collected, tmp_path / "again.png")
    width, height = figure.get_size_inches() * figure.dpi
    assert matplotlib.image.imread(path).shape[:2] == (round(height), round(width))
    rows = {method: cells for _, cells, kind, method in collected["rows"] if kind == "ours"}
    published = {method: cells for _, cells, kind, method in collected["rows"] if kind == "published"}
    panels = {axis.get_title(): axis for axis in figure.axes if axis.get_visible()}
    assert set(panels) == {"MRPC F1", "RTE acc"}
    labels = [tick.get_text() for tick in figure.axes[0].get_yticklabels()]
    methods = {label: method for method, label in collect_results.ONE_TO_ONE_GLUE_METHODS.items()}
    for title, (task, metric) in (("MRPC F1", ("mrpc", "f1")), ("RTE acc", ("rte", "accuracy"))):
        axis = panels[title]
        ours = axis.containers[0].lines[0]
        plotted = {methods[labels[int(y)]]: x for x, y in zip(ours.get_xdata(), ours.get_ydata())}
        assert plotted == {method: pytest.approx(cells[(task, metric)].mean) for method, cells in rows.items()
                           if cells[(task, metric)].values}
        (markers,) = [line for line in axis.lines if line.get_marker() == "D"]
        paper = {methods[labels[int(y)]]: x for x, y in zip(markers.get_xdata(), markers.get_ydata())}
        assert paper == {method: cells[(task, metric)] for method, cells in published.items()
                         if (task, metric) in cells}
        (bars,) = axis.containers[0].lines[2]  # one segment per method: its lowest to its highest seed
        spread = {methods[labels[round(segment[0][1])]]: (segment[0][0], segment[1][0]) for segment in bars.get_segments()}
        assert spread == {method: (pytest.approx(min(cells[(task, metric)].values)),
                                   pytest.approx(max(cells[(task, metric)].values)))
                          for method, cells in rows.items() if cells[(task, metric)].values}


def test_collect_results_says_what_it_cannot_read_and_still_prints_every_table(results_tree, capsys):
    """Finished runs with damaged results and folders of no table: each named on stderr, the
    tables still printed, the damaged runs counted as failed."""
    table = results_tree / "lgtm_glue"
    damaged = {"empty": "", "truncated": '{"accuracy": 0.7', "list": "[0.7]", "string": '{"accuracy": "0.7"}'}
    for seed, (name, text) in enumerate(damaged.items(), start=4):
        finished(table / f"rte/kd/seed{seed}")
        (table / f"rte/kd/seed{seed}/eval_results.json").write_text(text)
    finished(table / "rte/kd/seed8")
    (table / "rte/kd/seed8/eval_results.json").unlink()
    for stray in ("lgtm_glue/rte/kd/backup", "lgtm_glue/rtee/lgtm/seed1", "lgtm_glue/rte/distil/seed1", "old_runs"):
        (results_tree / stray).mkdir(parents=True)
    finished(results_tree / "one_to_one_imdb/imdb/corr/seed42", accuracy=0.91)

    assert collect_results.main([str(results_tree)]) == 0
    captured = capsys.readouterr()
    assert "LGTM (Ren et al. 2023)" in captured.out and "IMDB" in captured.out and "91.00" in captured.out
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 5, captured.err
    for seed, why in ((4, "empty"), (5, "not valid JSON"), (6, "a JSON list, not an object"),
                      (7, "accuracy is '0.7', not a number"), (8, "the run finished (run_complete.json) but wrote no results")):
        assert any(f"rte/kd/seed{seed}/eval_results.json: {why}" in line for line in warnings), (seed, warnings)
    note = next(line for line in captured.err.splitlines() if line.startswith("note: ") and "belong to no table" in line)
    assert note.startswith("note: 4 folder(s)") and all(
        name in note for name in ("lgtm_glue/rte/kd/backup", "lgtm_glue/rtee", "lgtm_glue/rte/distil", "old_runs"))
    collected = collect_results.collect_table(results_tree, "lgtm_glue", tasks=["rte"], seeds=[4, 5, 6, 7, 8])
    kd = next(cells for label, cells, *_ in collected["rows"] if label == "KD")
    assert kd[("rte", "accuracy")].statuses == ["failed"] * 5
