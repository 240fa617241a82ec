"""Small synthetic GLUE tasks written in the original TSV formats (for the demo and the tests).

``write_synthetic_task`` (the tests): the label of each pair is decided by one cue word of the
second sentence, so that a tiny model learns it in a few steps; the files follow the classic
layout and quirks of each task (CoLA without a header, MRPC's byte-order mark, STS-B's ten
columns, MNLI's parses and five files).

``write_negation_sst2`` (the demo): review sentences whose sentiment no single word decides: an
adjective's polarity flipped by a negation ("the plot was not dull" is positive), among filler
words that carry none.
"""

import random
from pathlib import Path

from utils.tasks.glue_data import get_task

SUBJECTS = ["the man", "the woman", "the dog", "the cat", "a man", "a woman"]
CUES = ["good", "bad", "not"]  # class 0, 1, 2 of the synthetic rule
MNLI_PARSES = ["( ( the cat ) sat )", "( the cat )", "(ROOT (S (NP the cat) (VP sat)))", "(ROOT (NP the cat))"]
STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
MRPC_COLUMNS = ["#1 ID", "#2 ID", "#1 String", "#2 String"]
MNLI_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]

# task -> (header of labelled files or None, header of test files, row(index, s1, s2, label) for
# labelled files, row(index, s1, s2) for test files, label strings of classes 0, 1, 2)
LAYOUTS = {
    "cola": (None, ["index", "sentence"],
             lambda i, a, b, y: ["gj04", y, "" if y == "1" else "*", f"{a} {b}"],
             lambda i, a, b: [i, f"{a} {b}"], ["0", "1"]),
    "sst2": (["sentence", "label"], ["index", "sentence"],
             lambda i, a, b, y: [f"{a} {b} ", y], lambda i, a, b: [i, f"{a} {b}"], ["0", "1"]),
    "mrpc": (["\ufeffQuality", *MRPC_COLUMNS], ["index", *MRPC_COLUMNS],
             lambda i, a, b, y: [y, 1000 + i, 2000 + i, a, b], lambda i, a, b: [i, 1000 + i, 2000 + i, a, b],
             ["0", "1"]),
    "stsb": ([*STSB_HEADER, "score"], STSB_HEADER,
             lambda i, a, b, y: [i, "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", a, b, y],
             lambda i, a, b: [i, "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", a, b],
             ["0.500", "4.500"]),
    "qqp": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], ["id", "question1", "question2"],
            lambda i, a, b, y: [i, 2 * i, 2 * i + 1, a, b, y], lambda i, a, b: [i, a, b], ["0", "1"]),
    "mnli": ([*MNLI_HEADER, "label1", "gold_label"], MNLI_HEADER,
             lambda i, a, b, y: [i, 100 + i, f"{100 + i}e", "fiction", *MNLI_PARSES, a, b, y, y],
             lambda i, a, b: [i, 100 + i, f"{100 + i}e", "fiction", *MNLI_PARSES, a, b],
             ["entailment", "contradiction", "neutral"]),
    "qnli": (["index", "question", "sentence", "label"], ["index", "question", "sentence"],
             lambda i, a, b, y: [i, a + " ?", b, y], lambda i, a, b: [i, a + " ?", b], ["entailment", "not_entailment"]),
    "rte": (["index", "sentence1", "sentence2", "label"], ["index", "sentence1", "sentence2"],
            lambda i, a, b, y: [i, a, b, y], lambda i, a, b: [i, a, b], ["entailment", "not_entailment"]),
    "wnli": (["index", "sentence1", "sentence2", "label"], ["index", "sentence1", "sentence2"],
             lambda i, a, b, y: [i, a, b, y], lambda i, a, b: [i, a, b], ["1", "0"]),
}
MNLI_DEV_HEADER = [*MNLI_HEADER, "label1", "label2", "label3", "label4", "label5", "gold_label"]


def _pairs(count, num_classes, rng):
    """(sentence1, sentence2, class) triples; the class is the index of the cue word in sentence2."""
    for _ in range(count):
        label = rng.randrange(num_classes)
        subject = rng.choice(SUBJECTS)
        yield f"{subject} sat on the mat .", f"{subject} was {CUES[label]} .", label


def _write(path, header, rows):
    lines = (["\t".join(header)] if header else []) + ["\t".join(str(field) for field in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_synthetic_task(glue_dir, task_name, num_train=64, num_dev=32, num_test=16, seed=0):
    """Write ``glue_dir/<TASK>/`` with train, dev and test files of ``task_name``; return the folder."""
    task = get_task(task_name)
    header, test_header, labelled_row, test_row, label_strings = LAYOUTS[task.name]
    folder = Path(glue_dir) / task.dir_name
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    num_classes = len(label_strings)

    def labelled(count, row=labelled_row):
        return [row(i, a, b, label_strings[y]) for i, (a, b, y) in enumerate(_pairs(count, num_classes, rng))]

    def unlabelled(count):
        return [test_row(i, a, b) for i, (a, b, _) in enumerate(_pairs(count, num_classes, rng))]

    _write(folder / "train.tsv", header, labelled(num_train))
    if task.name == "mnli":
        def dev_row(i, a, b, y):
            return labelled_row(i, a, b, y)[:-2] + [y] * 6  # label1..label5, gold_label

        _write(folder / "dev_matched.tsv", MNLI_DEV_HEADER, labelled(num_dev, dev_row))
        _write(folder / "dev_mismatched.tsv", MNLI_DEV_HEADER, labelled(num_dev, dev_row))
        _write(folder / "test_matched.tsv", test_header, unlabelled(num_test))
        _write(folder / "test_mismatched.tsv", test_header, unlabelled(num_test))
        diagnostic = Path(glue_dir) / "diagnostic"
        diagnostic.mkdir(exist_ok=True)
        _write(diagnostic / "diagnostic.tsv", ["index", "sentence1", "sentence2"],
               [[i, a, b] for i, (a, b, _) in enumerate(_pairs(num_test, num_classes, rng))])
    else:
        _write(folder / "dev.tsv", header, labelled(num_dev))
        _write(folder / "test.tsv", test_header, unlabelled(num_test))
    return folder


POSITIVE_WORDS = ["good", "great", "fun", "clever", "moving", "charming"]
NEGATIVE_WORDS = ["bad", "dull", "boring", "weak", "silly", "clumsy"]
REVIEW_SUBJECTS = ["the film", "the movie", "the plot", "the acting", "the ending", "the cast", "the script"]
ADVERBS = ["", "really", "truly", "quite"]
NEGATIONS = ["not", "never", "hardly"]
FILLERS = ["", "i think", "to be honest", "overall", "in the end"]


def negation_review(rng):
    """(sentence, label) with label 1 (positive) iff the adjective is positive and not negated, or
    negative and negated: half the sentences of each adjective and of each negation are positive."""
    positive_word = rng.random() < 0.5
    negated = rng.random() < 0.5
    adjective = rng.choice(POSITIVE_WORDS if positive_word else NEGATIVE_WORDS)
    words = [rng.choice(FILLERS), rng.choice(REVIEW_SUBJECTS), "was", rng.choice(NEGATIONS) if negated else "",
             rng.choice(ADVERBS), adjective, "."]
    return " ".join(word for word in words if word), int(positive_word != negated)


def review_words():
    """Every word ``negation_review`` writes (for a tiny tokenizer that keeps them whole)."""
    phrases = POSITIVE_WORDS + NEGATIVE_WORDS + REVIEW_SUBJECTS + ADVERBS + NEGATIONS + FILLERS + ["was"]
    return sorted({word for phrase in phrases for word in phrase.split()})


def write_negation_sst2(glue_dir, num_train=1024, num_dev=256, seed=0):
    """Write ``glue_dir/SST-2/`` (SST-2's format, 1 = positive) with ``negation_review`` sentences."""
    folder = Path(glue_dir) / "SST-2"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for name, count in (("train.tsv", num_train), ("dev.tsv", num_dev)):
        _write(folder / name, ["sentence", "label"], [negation_review(rng) for _ in range(count)])
    _write(folder / "test.tsv", ["index", "sentence"], [[i, negation_review(rng)[0]] for i in range(16)])
    return folder
