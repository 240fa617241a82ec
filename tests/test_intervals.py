"""The bootstrap intervals of collect_results.py (utils/tasks/predictions.py): against the
closed-form binomial interval on a large synthetic case, the paired interval against a known
difference, the vectorised metrics against utils/tasks/metrics.py, and the tables and figure that
show them."""

import json
import math

import numpy as np
import pytest

import collect_results
from utils.tasks.metrics import glue_metrics
from utils.tasks.predictions import (
    EVAL_PREDICTIONS,
    bootstrap_interval,
    paired_interval,
    point_value,
    prediction_set,
)


def run(predictions, labels):
    """One seed's ``eval_predictions.json`` sets."""
    return {"": prediction_set(predictions, labels)}


def test_the_bootstrap_interval_of_an_accuracy_is_the_binomial_one():
    n, p = 4000, 0.8
    generator = np.random.default_rng(1)
    labels = generator.integers(0, 2, n)
    correct = np.zeros(n, dtype=bool)
    correct[generator.permutation(n)[: int(p * n)]] = True
    predictions = np.where(correct, labels, 1 - labels)
    low, high = bootstrap_interval([run(predictions, labels)], "accuracy")
    half_width = 1.959964 * math.sqrt(p * (1 - p) / n)  # the normal approximation of the binomial
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.08)
    assert (low + high) / 2 == pytest.approx(p, abs=0.003)


def test_the_paired_interval_finds_a_known_difference_and_is_narrower_than_unpaired():
    """The method is the baseline with 100 of its 2000 answers corrected: +5 points exactly,
    which only those 100 questions carry."""
    n = 2000
    generator = np.random.default_rng(2)
    labels = generator.integers(0, 2, n)
    baseline = labels.copy()
    wrong = generator.permutation(n)[:600]
    baseline[wrong] = 1 - labels[wrong]
    method = baseline.copy()
    method[wrong[:100]] = labels[wrong[:100]]
    difference, low, high = paired_interval([run(method, labels)], [run(baseline, labels)], "accuracy")
    assert difference == pytest.approx(0.05, abs=1e-12)
    assert low < 0.05 < high and low > 0.03 and high < 0.07
    spread = 1.959964 * math.sqrt(0.05 * 0.95 / n)  # the share of corrected rows in a resample
    assert (high - low) / 2 == pytest.approx(spread, rel=0.15)
    unpaired = np.subtract(bootstrap_interval([run(method, labels)], "accuracy", seed=3),
                           bootstrap_interval([run(baseline, labels)], "accuracy", seed=4)[::-1])
    assert high - low < (unpaired[1] - unpaired[0]) / 2


@pytest.mark.parametrize("task, metrics", [("mrpc", ("accuracy", "f1")), ("cola", ("matthews_correlation",)),
                                           ("mnli", ("accuracy",)), ("stsb", ("pearson", "spearmanr"))])
def test_the_vectorised_metrics_are_the_scripts_metrics(task, metrics):
    generator = np.random.default_rng(5)
    if task == "stsb":
        labels = generator.uniform(0, 5, 300).round(1)
        predictions = labels + generator.normal(0, 1, 300)
    else:
        classes = 3 if task == "mnli" else 2
        labels = generator.integers(0, classes, 300)
        predictions = np.where(generator.random(300) < 0.7, labels, generator.integers(0, classes, 300))
    expected = glue_metrics(task, predictions, labels)
    for metric in metrics:
        assert point_value([run(predictions, labels)], metric) == pytest.approx(expected[metric], abs=1e-12)


def test_seeds_that_disagree_widen_the_interval():
    n = 1000
    generator = np.random.default_rng(6)
    labels = generator.integers(0, 2, n)
    good = np.where(generator.random(n) < 0.9, labels, 1 - labels)
    poor = np.where(generator.random(n) < 0.7, labels, 1 - labels)
    same = bootstrap_interval([run(good, labels), run(good, labels)], "accuracy")
    apart = bootstrap_interval([run(good, labels), run(poor, labels)], "accuracy")
    assert apart[1] - apart[0] > 2 * (same[1] - same[0])


def write_run(folder, predictions, labels, metric="accuracy"):
    folder.mkdir(parents=True)
    value = float(np.mean(np.asarray(predictions) == np.asarray(labels)))
    (folder / "eval_results.json").write_text(json.dumps({metric: value}))
    (folder / EVAL_PREDICTIONS).write_text(json.dumps({"task": "rte", "sets": run(predictions, labels)}))
    (folder / "run_complete.json").write_text("{}")


def test_the_tables_show_intervals_and_the_differences_to_the_baseline(tmp_path, capsys):
    n = 800
    generator = np.random.default_rng(7)
    labels = generator.integers(0, 2, n)
    root = tmp_path / "results"
    for seed in (1, 2, 3):
        alone = np.where(generator.random(n) < 0.6, labels, 1 - labels)
        distilled = np.where(generator.random(n) < 0.8, labels, 1 - labels)
        write_run(root / f"one_to_one_glue/rte/ft/seed{seed}", alone, labels)
        write_run(root / f"one_to_one_glue/rte/corr/seed{seed}", distilled, labels)
        write_run(root / f"one_to_one_glue/rte/kd/seed{seed}", alone, labels)
    assert collect_results.main([str(root), "--tasks", "rte", "--compare"]) == 0
    out = capsys.readouterr().out
    table, comparison = out.split("each method minus DistilBERT fine-tuned (no teacher)")

    def cells(text):
        return {line.split("|")[1].strip(): line.split("|")[2].strip() for line in text.splitlines()
                if line.startswith("| DistilBERT")}

    mean, interval = cells(table)["DistilBERT + correlation"].split(" (")
    low, high = (float(value) for value in interval.rstrip(")").split(", "))
    assert low < float(mean.split(" ± ")[0]) < high
    differences = cells(comparison)
    assert differences["DistilBERT + correlation"].endswith("*"), "20 points apart on 800 examples"
    assert not differences["DistilBERT + logit KD"].endswith("*"), "the same predictions as the baseline"
    collected = collect_results.collect_table(root, "one_to_one_glue", tasks=["rte"])
    points = collect_results.plot_points(collected)[("rte", "accuracy")]
    cells = {label: cells for label, cells, kind, _ in collected["rows"] if kind == "ours"}
    drawn = [(label, low, high) for label, mean, low, high, _ in points if mean is not None]
    assert len(drawn) == 3
    for label, low, high in drawn:
        assert (low, high) == cells[label][("rte", "accuracy")].interval, "the figure draws the intervals"


def test_seeds_that_predicted_other_dev_examples_get_no_interval_and_the_report_goes_on(tmp_path, capsys):
    generator = np.random.default_rng(8)
    root = tmp_path / "results"
    for seed, n in ((1, 100), (2, 90)):
        labels = generator.integers(0, 2, n)
        write_run(root / f"one_to_one_glue/rte/ft/seed{seed}", labels, labels)
        write_run(root / f"one_to_one_glue/rte/corr/seed{seed}", labels, labels)
    assert collect_results.main([str(root), "--tasks", "rte", "--compare"]) == 0
    captured = capsys.readouterr()
    assert "a cell has no interval: the runs predicted different dev examples (90 and 100)" in captured.err
    assert "| DistilBERT + correlation | n/a |" in captured.out
    assert collect_results.main([str(root), "--compare", "nosuch"]) == 1
    assert "--compare nosuch: no such method" in capsys.readouterr().err


def test_a_script_writes_the_predictions_its_metrics_come_from(glue_dir, tmp_path):
    import run_glue
    from tests.conftest import run_main
    from utils.miniature.tiny_models import make_tiny_bert

    out = tmp_path / "run"
    argv = ["--model_name_or_path", str(make_tiny_bert(tmp_path / "bert")), "--task_name", "mrpc", "--data_dir",
            str(glue_dir / "MRPC"), "--do_train", "--max_steps", "2", "--output_dir", str(out), "--disable_tqdm",
            "--report_to", "none"]
    assert run_main(run_glue.main, argv) == 0
    results = json.loads((out / "eval_results.json").read_text())
    sets = json.loads((out / EVAL_PREDICTIONS).read_text())["sets"]
    assert len(sets[""]["predictions"]) == len(sets[""]["labels"]) == results["eval_samples"]
    assert sets[""]["ids"] == list(range(results["eval_samples"]))
    for metric in ("accuracy", "f1"):
        assert point_value([sets], metric) == pytest.approx(results[metric], abs=1e-12)
