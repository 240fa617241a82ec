"""Per-example dev predictions, and the bootstrap intervals computed from them.

Every script writes its dev predictions beside ``eval_results.json``, in
``eval_predictions.json``::

    {"task": "rte", "sets": {"": {"ids": [...], "predictions": [...], "labels": [...]}}}

one set per metric suffix (MNLI: ``""`` matched, ``"_mm"`` mismatched); ``labels`` are class ids
or STS-B scores; SQuAD's set holds each question's ``exact_match`` and ``f1`` (in percent)
instead of labels. ``collect_results.py`` reads them for its intervals:

- ``bootstrap_interval``: a 95% percentile bootstrap of a cell's value, resampling the dev
  examples (the same draw for every seed of the cell) and, where there are several, the seeds;
- ``paired_interval``: the same for the difference of two cells, with one draw of dev examples
  for both (paired), the seeds of each drawn apart.

The metrics here are the GLUE and SQuAD metrics of ``utils.tasks.metrics`` and
``utils.tasks.squad_metrics``, vectorised over the bootstrap's replicates.
"""

import json
from pathlib import Path

import numpy as np

EVAL_PREDICTIONS = "eval_predictions.json"
REPLICATES = 2000


class Evaluation(dict):
    """The metrics of an evaluation (a dict, as ``eval_results.json`` holds them) and, as
    ``sets``, the per-example predictions they were computed from (``{suffix: {"ids",
    "predictions", "labels"}}``)."""

    def __init__(self, metrics, sets):
        super().__init__(metrics)
        self.sets = sets


def prediction_set(predictions, labels, ids=None):
    """One set of ``eval_predictions.json`` from arrays (ids: the positions in the dev set)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return {"ids": list(range(len(predictions))) if ids is None else list(ids),
            "predictions": predictions.tolist(), "labels": labels.tolist()}


def write_eval_predictions(output_dir, task_name, sets):
    path = Path(output_dir) / EVAL_PREDICTIONS
    path.write_text(json.dumps({"task": task_name, "sets": sets}) + "\n")
    return path


def read_eval_predictions(path):
    """The ``sets`` of an ``eval_predictions.json``; a ValueError saying why when it is not one."""
    content = json.loads(Path(path).read_text())
    if not isinstance(content, dict) or not isinstance(content.get("sets"), dict):
        raise ValueError("not an object with its prediction sets")
    return content["sets"]


# --------------------------------------------------------------------------- vectorised metrics
# Each takes (predictions, labels) of shape (R, n), one row per replicate, and returns (R,).


def _accuracy(predictions, labels):
    return (predictions == labels).mean(axis=1)


def _f1(predictions, labels):
    true_positive = ((predictions == 1) & (labels == 1)).sum(axis=1)
    false = ((predictions == 1) != (labels == 1)).sum(axis=1)
    denominator = 2 * true_positive + false
    return np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), 0.0)


def _matthews(predictions, labels):
    """(c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2)), 0 where undefined."""
    classes = np.union1d(np.unique(predictions), np.unique(labels))
    n = predictions.shape[1]
    correct = (predictions == labels).sum(axis=1).astype(float)
    predicted = np.stack([(predictions == k).sum(axis=1) for k in classes], axis=1).astype(float)
    true = np.stack([(labels == k).sum(axis=1) for k in classes], axis=1).astype(float)
    numerator = correct * n - (predicted * true).sum(axis=1)
    denominator = np.sqrt((n**2 - (predicted**2).sum(axis=1)) * (n**2 - (true**2).sum(axis=1)))
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)


def _pearson(predictions, labels):
    x = predictions - predictions.mean(axis=1, keepdims=True)
    y = labels - labels.mean(axis=1, keepdims=True)
    denominator = np.sqrt((x**2).sum(axis=1) * (y**2).sum(axis=1))
    return np.where(denominator > 0, (x * y).sum(axis=1) / np.where(denominator > 0, denominator, 1), 0.0)


def _spearman(predictions, labels):
    from scipy.stats import rankdata

    return _pearson(rankdata(predictions, axis=1), rankdata(labels, axis=1))


def _mean(values, _unused):
    return values.mean(axis=1)


METRICS = {"accuracy": _accuracy, "f1": _f1, "matthews_correlation": _matthews, "pearson": _pearson,
           "spearmanr": _spearman}


def metric_arrays(prediction_sets, metric):
    """``(predictions, labels, metric function)`` of one seed's set for ``metric`` (a metric name
    of ``eval_results.json``, ``_mm`` for MNLI mismatched). A SQuAD set holds per-question
    scores, whose mean is the metric: they come back as the predictions, with no labels."""
    base, suffix = (metric[:-3], "_mm") if metric.endswith("_mm") else (metric, "")
    entry = prediction_sets[suffix]
    if "labels" not in entry:
        return np.asarray(entry[base], dtype=float), None, _mean
    return np.asarray(entry["predictions"]), np.asarray(entry["labels"]), METRICS[base]


CHUNK = 200  # replicates gathered at a time: QQP's 40k dev pairs x 200 stay near 65 MB


def _replicate_values(runs, metric, rows, seed_draws):
    """(R,) the metric on each replicate: the mean over the replicate's seeds (``seed_draws``,
    (R, k) indices into ``runs``) of the metric of those runs on the replicate's ``rows`` (R, n)."""
    per_run = []
    for prediction_sets in runs:
        predictions, labels, function = metric_arrays(prediction_sets, metric)
        per_run.append(np.concatenate([function(predictions[chunk], None if labels is None else labels[chunk])
                                       for chunk in np.array_split(rows, max(1, len(rows) // CHUNK))]))
    per_run = np.stack(per_run)  # (k, R)
    return np.take_along_axis(per_run.T, seed_draws, axis=1).mean(axis=1)


def _rows(runs, metric, replicates, generator):
    """(R, n) resampled dev rows, the same for every run; a ValueError unless the runs predicted
    the same dev examples (their ids)."""
    suffix = "_mm" if metric.endswith("_mm") else ""
    ids = {tuple(prediction_sets[suffix]["ids"]) for prediction_sets in runs}
    if len(ids) != 1:
        sizes = sorted({len(example_ids) for example_ids in ids})
        raise ValueError("the runs predicted different dev examples" + (f" ({' and '.join(map(str, sizes))})"
                                                                        if len(sizes) > 1 else ""))
    n = len(ids.pop())
    return generator.integers(0, n, size=(replicates, n), dtype=np.int32)


def point_value(runs, metric):
    """The cell's value: the mean over ``runs`` of the metric on the whole dev set."""
    values = []
    for prediction_sets in runs:
        predictions, labels, function = metric_arrays(prediction_sets, metric)
        values.append(float(function(predictions[None], None if labels is None else labels[None])[0]))
    return float(np.mean(values))


def bootstrap_interval(runs, metric, *, replicates=REPLICATES, level=0.95, seed=0):
    """``(low, high)``: the percentile bootstrap interval of the mean over ``runs`` (one
    ``eval_predictions.json`` ``sets`` per seed, on the same dev examples) of ``metric``, dev
    examples resampled (the same rows for every seed) and seeds resampled."""
    generator = np.random.default_rng(seed)
    rows = _rows(runs, metric, replicates, generator)
    seed_draws = generator.integers(0, len(runs), size=(replicates, len(runs)))
    values = _replicate_values(runs, metric, rows, seed_draws)
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def paired_interval(runs, baseline_runs, metric, *, replicates=REPLICATES, level=0.95, seed=0):
    """``(difference, low, high)``: the cell of ``runs`` minus the cell of ``baseline_runs`` on
    ``metric``, and its percentile bootstrap interval with the dev examples resampled once for
    both (paired: the same questions for both) and the seeds of each resampled apart."""
    generator = np.random.default_rng(seed)
    rows = _rows([*runs, *baseline_runs], metric, replicates, generator)
    draws = generator.integers(0, len(runs), size=(replicates, len(runs)))
    baseline_draws = generator.integers(0, len(baseline_runs), size=(replicates, len(baseline_runs)))
    differences = (_replicate_values(runs, metric, rows, draws)
                   - _replicate_values(baseline_runs, metric, rows, baseline_draws))
    tail = (1 - level) / 2
    return (point_value(runs, metric) - point_value(baseline_runs, metric),
            float(np.quantile(differences, tail)), float(np.quantile(differences, 1 - tail)))
