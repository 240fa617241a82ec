"""The README's demo command, on a smaller synthetic set, and the demo's task."""

import collections
import random

from demo import RUNS, run_demo
from utils.miniature.synthetic_glue import NEGATIONS, NEGATIVE_WORDS, POSITIVE_WORDS, negation_review, review_words


def test_demo_fine_tunes_a_teacher_a_student_alone_and_distils_a_student(tmp_path):
    metrics = run_demo(tmp_path, num_train=128, num_dev=32, epochs=2)
    assert set(metrics) == set(RUNS)
    for name in RUNS:
        assert metrics[name]["eval_samples"] == 32 and 0.0 <= metrics[name]["accuracy"] <= 1.0
        assert (tmp_path / name / "model.safetensors").is_file()


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
