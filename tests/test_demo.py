"""The README's demo command, on a smaller synthetic set, and the demo's task."""

import collections
import json
import random

from demo import RUNS, gain_intervals, report, run_demo
from utils.miniature.synthetic_glue import NEGATIONS, NEGATIVE_WORDS, POSITIVE_WORDS, negation_review, review_words


def test_demo_runs_a_teacher_a_student_alone_and_a_distilled_student_per_seed(tmp_path):
    summary = run_demo(tmp_path, seeds=(1, 2), num_teacher_train=128, num_student_train=32, num_dev=32,
                       teacher_epochs=1, student_epochs=1)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["seeds"] == [1, 2] and all(len(summary[key]) == 2 for key in ("teacher", "alone", "distilled"))
    assert all(0.0 <= value <= 1.0 for key in ("teacher", "alone", "distilled") for value in summary[key])
    for seed in (1, 2):
        for name in RUNS:
            assert json.loads((tmp_path / f"seed{seed}" / name / "eval_results.json").read_text())["eval_samples"] == 32
    distilled_args = json.loads((tmp_path / "seed1" / "student_distilled" / "run_args.json").read_text())
    alone_args = json.loads((tmp_path / "seed1" / "student_alone" / "run_args.json").read_text())
    differing = {key for key in distilled_args if distilled_args[key] != alone_args.get(key)}
    assert differing == {"alpha_corr", "do_mask", "output_dir"}, "the same command but the distillation terms"
    assert (distilled_args["alpha_corr"], distilled_args["do_mask"], alone_args["alpha_corr"]) == (0.005, True, 0.0)
    intervals = gain_intervals(tmp_path, summary["seeds"])
    for (low, high), alone, distilled in zip(intervals, summary["alone"], summary["distilled"]):
        assert low <= distilled - alone <= high


def test_the_report_gives_each_seed_and_the_mean_gain_with_its_range():
    lines = report({"seeds": [1, 2, 3], "teacher": [1.0, 0.9, 1.0], "alone": [0.5, 0.6, 0.55],
                    "distilled": [0.8, 0.62, 0.75]})
    assert lines[2].split() == ["1", "1.000", "0.500", "0.800", "+0.300"]
    assert lines[-1].endswith("mean +0.173, from +0.020 to +0.300 over 3 seeds")


def test_a_review_is_positive_when_its_adjective_is_positive_xor_negated():
    rng = random.Random(1)
    for _ in range(500):
        sentence, label = negation_review(rng)
        words = sentence.split()
        positive = any(word in POSITIVE_WORDS for word in words)
        assert positive != any(word in NEGATIVE_WORDS for word in words), sentence
        assert label == int(positive != any(word in NEGATIONS for word in words)), sentence


def test_no_single_word_decides_the_demo_label():
    rng = random.Random(2)
    labels_with = collections.defaultdict(list)
    for _ in range(4000):
        sentence, label = negation_review(rng)
        for word in set(sentence.split()):
            labels_with[word].append(label)
    assert set(labels_with) <= set(review_words()) | {"."}
    for word, labels in labels_with.items():
        share = sum(labels) / len(labels)
        assert 0.35 < share < 0.65, f"{word!r} is positive in {share:.0%} of its sentences"
