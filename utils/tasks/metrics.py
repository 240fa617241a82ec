"""GLUE metrics, computed locally with scikit-learn and scipy (no hub download).

Every metric takes ``(predictions, labels)``: class ids, or float scores for STS-B. scikit-learn
and scipy are imported by the metrics that use them, when first called: together they cost a
script more than a second of start-up, before any work.
"""

import numpy as np

from utils.tasks.glue_data import get_task


def accuracy(predictions, labels):
    """Fraction of predictions equal to their label."""
    from sklearn import metrics as sklearn_metrics

    return float(sklearn_metrics.accuracy_score(labels, predictions))


def binary_f1(predictions, labels):
    """F1 of the positive class 1: 2 TP / (2 TP + FP + FN); 0.0 when there is no TP, FP or FN."""
    from sklearn import metrics as sklearn_metrics

    return float(sklearn_metrics.f1_score(labels, predictions, pos_label=1, zero_division=0.0))


def matthews_correlation(predictions, labels):
    """Matthews correlation (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)), multi-class form.

    0.0 where it is undefined (a zero denominator: constant predictions or labels), as
    scikit-learn returns; a single class in both is answered here, without its warning.
    """
    if len(np.union1d(predictions, labels)) < 2:
        return 0.0
    from sklearn import metrics as sklearn_metrics

    return float(sklearn_metrics.matthews_corrcoef(labels, predictions))


def pearson(predictions, labels):
    """Pearson correlation; 0.0 (not NaN, no warning) when either side is constant."""
    if is_constant(predictions) or is_constant(labels):
        return 0.0
    from scipy import stats

    return float(stats.pearsonr(predictions, labels).statistic)


def spearmanr(predictions, labels):
    """Spearman rank correlation; 0.0 (not NaN, no warning) when either side is constant."""
    if is_constant(predictions) or is_constant(labels):
        return 0.0
    from scipy import stats

    return float(stats.spearmanr(predictions, labels).statistic)


def is_constant(values):
    """Whether all values are equal (a correlation with them is undefined)."""
    return bool(np.ptp(values) == 0)


METRICS = {
    "accuracy": accuracy,
    "f1": binary_f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearmanr": spearmanr,
}


def glue_metrics(task_name, predictions, labels):
    """The task's official metrics as plain floats: cola {matthews_correlation}; mrpc, qqp
    {accuracy, f1}; stsb {pearson, spearmanr}; sst2, mnli, qnli, rte, wnli {accuracy}."""
    task = get_task(task_name)
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.size == 0:
        raise ValueError(f"need as many predictions as labels, at least one: got shapes "
                         f"{predictions.shape} and {labels.shape}")
    return {name: METRICS[name](predictions, labels) for name in task.metric_names}
