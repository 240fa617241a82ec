"""GLUE metrics against values worked out by hand."""

import math
import warnings

import numpy as np
import pytest

from utils.tasks.glue_data import GLUE_TASKS
from utils.tasks.metrics import glue_metrics

# Binary confusion matrix: labels 1 1 1 1 0 0, predictions 1 1 1 0 1 0
#   TP = 3, FN = 1, FP = 1, TN = 1
#   accuracy = (TP + TN) / 6 = 4/6
#   F1 = 2 TP / (2 TP + FP + FN) = 6 / 8 = 0.75
#   MCC = (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (3 - 1) / sqrt(4 * 4 * 2 * 2) = 0.25
BINARY_LABELS = [1, 1, 1, 1, 0, 0]
BINARY_PREDICTIONS = [1, 1, 1, 0, 1, 0]


def test_mrpc_and_qqp_report_accuracy_and_f1_of_class_1():
    for task in ("mrpc", "qqp"):
        assert glue_metrics(task, BINARY_PREDICTIONS, BINARY_LABELS) == pytest.approx(
            {"accuracy": 4 / 6, "f1": 0.75})


def test_cola_reports_matthews_correlation():
    assert glue_metrics("cola", BINARY_PREDICTIONS, BINARY_LABELS) == pytest.approx(
        {"matthews_correlation": 0.25})


def test_matthews_correlation_is_signed():
    # TP = 1, TN = 1, FP = 3, FN = 3: (1 - 9) / sqrt(4 * 4 * 4 * 4) = -0.5
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    predictions = [1, 0, 0, 0, 1, 1, 1, 0]
    assert glue_metrics("cola", predictions, labels)["matthews_correlation"] == pytest.approx(-0.5)


def test_accuracy_tasks_include_three_class_mnli():
    # 3 of 5 right
    assert glue_metrics("mnli", [0, 1, 2, 2, 1], [0, 1, 2, 0, 0]) == pytest.approx({"accuracy": 0.6})
    for task in ("sst2", "qnli", "rte", "wnli"):
        assert glue_metrics(task, [0, 1, 1, 0], [0, 1, 0, 0]) == pytest.approx({"accuracy": 0.75})


def test_stsb_pearson_and_spearman():
    # x = 1 2 3 4 (deviations -1.5 -0.5 0.5 1.5, sum of squares 5);
    # y = 1 4 9 16 (mean 7.5, deviations -6.5 -3.5 1.5 8.5, sum of squares 129);
    # sum of products 9.75 + 1.75 + 0.75 + 12.75 = 25, so pearson = 25 / sqrt(5 * 129);
    # y increases with x, so the ranks agree: spearman = 1.
    result = glue_metrics("stsb", [1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 16.0])
    assert result == pytest.approx({"pearson": 25 / math.sqrt(645), "spearmanr": 1.0})


def test_stsb_with_ties_in_ranks():
    # x = 1 2 3, y = 1 3 2: deviations (-1 0 1), (-1 1 0); products sum 1, squares 2 and 2:
    # pearson = 1 / 2; the values are their own ranks, so spearman = 1 / 2 too.
    assert glue_metrics("stsb", [1, 2, 3], [1, 3, 2]) == pytest.approx({"pearson": 0.5, "spearmanr": 0.5})


@pytest.mark.parametrize("task, predictions, labels, expected", [
    ("cola", [1, 1, 1, 1], [0, 1, 1, 0], {"matthews_correlation": 0.0}),
    ("cola", [1, 1, 1, 1], [1, 1, 1, 1], {"matthews_correlation": 0.0}),
    ("mrpc", [0, 0, 0, 0], [0, 1, 1, 0], {"accuracy": 0.5, "f1": 0.0}),
    ("stsb", [2.5, 2.5, 2.5], [1.0, 3.0, 2.0], {"pearson": 0.0, "spearmanr": 0.0}),
    ("stsb", [1.0, 3.0, 2.0], [4.0, 4.0, 4.0], {"pearson": 0.0, "spearmanr": 0.0}),
])
def test_constant_inputs_give_zero_without_warnings(task, predictions, labels, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert glue_metrics(task, predictions, labels) == expected


@pytest.mark.parametrize("task", sorted(GLUE_TASKS))
def test_every_task_returns_its_metric_names_as_plain_floats(task):
    labels = np.array([0.5, 1.0, 4.0, 3.0]) if GLUE_TASKS[task].is_regression else np.array([0, 1, 1, 0])
    result = glue_metrics(task, labels, labels)
    assert tuple(result) == GLUE_TASKS[task].metric_names
    assert GLUE_TASKS[task].main_metric in result
    assert all(type(value) is float for value in result.values())


def test_task_names_in_any_spelling():
    assert glue_metrics("SST-2", [1, 0], [1, 1]) == {"accuracy": 0.5}
    assert glue_metrics("STS-B", [1, 2], [1, 2]) == pytest.approx({"pearson": 1.0, "spearmanr": 1.0})


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="as many predictions as labels"):
        glue_metrics("rte", [0, 1, 1], [0, 1])
