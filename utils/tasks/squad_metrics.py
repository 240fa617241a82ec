"""The official SQuAD v1.1 scores: exact match and token F1, in percent, best over the gold answers.

    python -m utils.tasks.squad_metrics dev-v1.1.json predictions.json
    {"exact_match": 81.2, "f1": 88.5}

As in the official evaluation script, both texts are normalised first: lower-cased, ASCII
punctuation removed, the articles a/an/the removed, white space collapsed. A question of the
data file that the predictions leave out scores 0 (one line on stderr says how many);
predictions for ids that are not in the data file are ignored.
"""

import argparse
import json
import re
import string
import sys
from collections import Counter
from pathlib import Path

from utils.engine.errors import UserError, exit_on_user_error
from utils.tasks.glue_data import decode_json, read_text
from utils.tasks.squad_data import read_squad_file

PUNCTUATION = frozenset(string.punctuation)
ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text):
    """``text`` lower-cased, without ASCII punctuation and the words a/an/the, white space collapsed."""
    text = "".join(char for char in text.lower() if char not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction, gold):
    """1.0 if both normalise to the same text, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction, gold):
    """Token F1 of the normalised texts: ``2 P R / (P + R)`` with P and R the shares of the
    prediction's and the gold answer's tokens that the other has (counted with multiplicity);
    0.0 when they share no token."""
    prediction_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    shared = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(prediction_tokens), shared / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions, gold_answers):
    """``{"exact_match", "f1"}`` in percent over the questions of ``gold_answers`` (id -> list of
    gold texts), each scored against its best-matching gold answer; a question missing from
    ``predictions`` (id -> text) scores 0."""
    if not gold_answers:
        raise ValueError("no gold answers to score against")
    total_exact = total_f1 = 0.0
    for question_id, golds in gold_answers.items():
        if question_id in predictions:
            total_exact += max(exact_match(predictions[question_id], gold) for gold in golds)
            total_f1 += max(token_f1(predictions[question_id], gold) for gold in golds)
    return {"exact_match": 100.0 * total_exact / len(gold_answers), "f1": 100.0 * total_f1 / len(gold_answers)}


def gold_answers(examples):
    """``{id: [gold texts]}`` of the examples that have gold answers."""
    return {example["id"]: [answer["text"] for answer in example["answers"]]
            for example in examples if example["answers"]}


def read_predictions(path):
    """The ``{id: text}`` object of a predictions file (as ``predictions.json``)."""
    if not Path(path).is_file():
        raise UserError(f"predictions file not found: {path}")
    predictions = decode_json(path, read_text(path), line_number=None)
    if not isinstance(predictions, dict):
        raise UserError(f"{path}: expected a JSON object mapping question ids to answer texts")
    for question_id, text in predictions.items():
        if not isinstance(text, str):
            raise UserError(f"{path}: the prediction for id {question_id!r} is {type(text).__name__}, expected a text")
    return predictions


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description="Evaluation for SQuAD 1.1")
    parser.add_argument("dataset_file", help="the SQuAD v1.1 JSON file with the gold answers")
    parser.add_argument("prediction_file", help="a JSON object mapping question ids to answer texts")
    args = parser.parse_args(argv)
    golds = gold_answers(read_squad_file(args.dataset_file))
    if not golds:
        raise UserError(f"{args.dataset_file} has no gold answers to score against")
    predictions = read_predictions(args.prediction_file)
    missing = sum(question_id not in predictions for question_id in golds)
    if missing:
        print(f"warning: {missing} of {len(golds)} questions have no prediction in {args.prediction_file}; "
              "they score 0", file=sys.stderr)
    print(json.dumps(squad_scores(predictions, golds)))


if __name__ == "__main__":
    main()
