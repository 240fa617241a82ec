"""SQuAD v1.1 for the one-to-one scripts: data options, windows over long contexts, the span loss,
answers from start/end logits and the evaluation the teacher and distillation scripts share.

A question and its context become one or more windows ``[CLS] question [SEP] context part [SEP]``
of at most ``max_seq_length`` tokens. As in the released script (and Google's BERT),
``doc_stride`` is the distance in tokens between the starts of consecutive context parts, so
consecutive windows overlap by ``context part length - doc_stride`` tokens. A training window
whose context part does not contain the whole answer points at [CLS] (index 0) for both ends.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from utils.engine.cli import add_flag, bounded
from utils.engine.errors import UserError
from utils.engine.features import model_inputs
from utils.engine.loop import predict
from utils.engine.models import forward_arguments, max_input_length
from utils.engine.runtime import write_json
from utils.tasks.predictions import write_eval_predictions
from utils.tasks.squad_data import HUB_DATASET, load_squad_split, squad_file, training_examples
from utils.tasks.squad_metrics import exact_match, gold_answers, squad_scores, token_f1

logger = logging.getLogger(__name__)

# The logit given to padding positions: far below any real logit, yet finite, so that softmax
# and KL terms at any temperature give exact zeros there instead of NaN.
MASKED_LOGIT = -1e4


def add_squad_data_args(parser):
    group = parser.add_argument_group("data")
    group.add_argument("--data_dir", default=None,
                       help="folder of the SQuAD v1.1 JSON files (default names train-v1.1.json, dev-v1.1.json); "
                            f"without it and without file names, the hub's {HUB_DATASET}")
    group.add_argument("--train_file", default=None, help="training file (in --data_dir when given)")
    group.add_argument("--predict_file", "--validation_file", default=None, dest="predict_file",
                       help="evaluation file (in --data_dir when given); without gold answers it is only predicted")
    group.add_argument("--max_seq_length", type=bounded(int, at_least=1), default=384, help="tokens per window")
    group.add_argument("--doc_stride", type=bounded(int, at_least=1), default=128,
                       help="tokens between the starts of consecutive windows over a long context (as released; "
                            "at most the window's context part)")
    group.add_argument("--max_query_length", type=bounded(int, at_least=1), default=64, help="questions are cut to this many tokens")
    group.add_argument("--n_best_size", type=bounded(int, at_least=1), default=20,
                       help="start and end candidates per window, and answers kept per question in "
                            "nbest_predictions.json")
    group.add_argument("--max_answer_length", type=bounded(int, at_least=1), default=30, help="longest answer, in tokens")
    add_flag(group, "--version_2_with_negative", help="SQuAD v2.0: not supported (refused with a message)")
    add_flag(group, "--overwrite_cache",
             help="accepted for the released command; features are made in memory on every run, so there is no "
                  "cache to overwrite")
    return group


def check_squad_args(args):
    if args.version_2_with_negative:
        raise UserError("--version_2_with_negative: SQuAD v2.0 is not supported; the one-to-one paper's "
                        "experiments use SQuAD v1.1")


def check_window_length(args, tokenizer, *models):
    """Refuse windows longer than the models (and the tokenizer) can read."""
    limit = max_input_length(tokenizer, *models)
    if args.max_seq_length > limit:
        raise UserError(f"--max_seq_length {args.max_seq_length} is more than the model can read ({limit} tokens)")


def split_file(args, split):
    """The file of ``train`` or ``validation`` that the options name, or None (the hub)."""
    return squad_file(args.data_dir, args.train_file if split == "train" else args.predict_file, split)


def load_squad_examples(args, split, limit=None):
    """The examples of ``train`` or ``validation`` (first ``limit`` questions only)."""
    examples = load_squad_split(split, split_file(args, split), args.cache_dir)
    return examples[:limit] if limit else examples


# --------------------------------------------------------------------------- windows


class EncodedWindow(NamedTuple):
    """One tokenised window, as the tokenizer gives it, and where its context part starts in the
    tokens of the whole context (``number * step``)."""

    example_index: int
    number: int
    step: int
    input_ids: list
    token_type_ids: list
    offsets: list
    sequence_ids: list


def truncate_questions(tokenizer, questions, max_query_length):
    """The questions, cut at the end of their ``max_query_length``-th token, and their token counts."""
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True,
                        return_attention_mask=False, return_token_type_ids=False)
    cut, lengths = [], []
    for question, offsets in zip(questions, encoded["offset_mapping"]):
        # Re-tokenising a cut text can give other word pieces, so cut until it fits.
        while len(offsets) > max_query_length and offsets[max_query_length - 1][1] < len(question):
            question = question[:offsets[max_query_length - 1][1]]
            offsets = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        cut.append(question)
        lengths.append(len(offsets))
    return cut, lengths


def encode_windows(tokenizer, examples, *, max_seq_length, doc_stride, max_query_length):
    """Every example's windows (``EncodedWindow``), in example order.

    Questions are grouped by token count: within a group every window has the same room for
    the context, so one tokenizer call with overlap ``room - doc_stride`` makes the context
    parts start every ``doc_stride`` tokens.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"SQuAD windows need a fast tokenizer (character offsets); {type(tokenizer).__name__} "
                        "is not one")
    questions, lengths = truncate_questions(tokenizer, [example["question"].lstrip() for example in examples],
                                            max_query_length)
    special_tokens = tokenizer.num_special_tokens_to_add(pair=True)
    groups = defaultdict(list)
    for index, length in enumerate(lengths):
        groups[length].append(index)
    longest = max(groups)
    room = max_seq_length - longest - special_tokens
    if room < 1:
        raise UserError(f"a question of {longest} tokens leaves no room for the context in windows of "
                        f"--max_seq_length {max_seq_length}: lower --max_query_length or raise --max_seq_length")
    if doc_stride > room:
        raise UserError(f"--doc_stride {doc_stride} is longer than the context part of a window with a question of "
                        f"{longest} tokens ({room} tokens in --max_seq_length {max_seq_length}): the windows could "
                        "not move by it without skipping context; lower --doc_stride")
    windows = []
    for question_length, indices in groups.items():
        room = max_seq_length - question_length - special_tokens
        step = doc_stride
        encoded = tokenizer([questions[i] for i in indices], [examples[i]["context"] for i in indices],
                            truncation="only_second", max_length=max_seq_length, stride=room - step,
                            return_overflowing_tokens=True, return_offsets_mapping=True,
                            return_token_type_ids=True, return_attention_mask=False)
        numbers = defaultdict(int)
        for row, sample in enumerate(encoded["overflow_to_sample_mapping"]):
            example_index = indices[sample]
            windows.append(EncodedWindow(example_index, numbers[example_index], step, encoded["input_ids"][row],
                                         encoded["token_type_ids"][row], encoded["offset_mapping"][row],
                                         encoded.sequence_ids(row)))
            numbers[example_index] += 1
    windows.sort(key=lambda window: window.example_index)  # stable: windows of an example stay in order
    return windows


def context_bounds(sequence_ids):
    """Indices of the first and last context token of a window, or None when it has none."""
    if 1 not in sequence_ids:
        return None
    return sequence_ids.index(1), len(sequence_ids) - 1 - sequence_ids[::-1].index(1)


def answer_positions(window, answer_start, answer_end):
    """Token indices of the first and last answer token in ``window`` for the answer's character
    span ``[answer_start, answer_end)``; ``(0, 0)`` ([CLS]) when its context part does not hold
    the whole answer."""
    bounds = context_bounds(window.sequence_ids)
    if bounds is None:
        return 0, 0
    first, last = bounds
    offsets = window.offsets
    if offsets[first][0] > answer_start or offsets[last][1] < answer_end:
        return 0, 0
    start = first
    while start < last and offsets[start + 1][0] <= answer_start:
        start += 1
    end = last
    while end > start and offsets[end - 1][1] >= answer_end:
        end -= 1
    return start, end


def training_features(tokenizer, examples, *, max_seq_length, doc_stride, max_query_length):
    """Model inputs and answer positions of every window of ``examples`` (which carry an
    ``answer_span``, see ``utils.tasks.squad_data.training_examples``)."""
    features = []
    for window in encode_windows(tokenizer, examples, max_seq_length=max_seq_length, doc_stride=doc_stride,
                                 max_query_length=max_query_length):
        start, end = answer_positions(window, *examples[window.example_index]["answer_span"])
        features.append({"input_ids": window.input_ids, "token_type_ids": window.token_type_ids,
                         "start_positions": start, "end_positions": end})
    return features


@dataclass
class Window:
    """What turns a window's logits into answers: its question, the character span of each of its
    tokens in the context (-1 outside the context part) and whether a token has its maximum
    context in this window (answers must start at such a token)."""

    example_index: int
    char_starts: np.ndarray
    char_ends: np.ndarray
    max_context: np.ndarray


def max_context_flags(lengths, step):
    """For context parts of ``lengths`` tokens starting every ``step`` tokens: a bool array per
    part telling which of its tokens have their maximum context there.

    A token's context in a part is ``min(tokens left of it, tokens right of it) + 0.01 * part
    length`` (Google's BERT, the released script); ties go to the earlier part.
    """
    flags = []
    for number, length in enumerate(lengths):
        positions = np.arange(number * step, number * step + length)
        own = _context_score(positions, number * step, length)
        best = np.ones(length, dtype=bool)
        for other, other_length in enumerate(lengths):
            if other == number:
                continue
            start = other * step
            inside = (positions >= start) & (positions < start + other_length)
            score = _context_score(positions, start, other_length)
            best &= ~(inside & ((score > own) | ((score == own) & (other < number))))
        flags.append(best)
    return flags


def _context_score(positions, start, length):
    return np.minimum(positions - start, start + length - 1 - positions) + 0.01 * length


def evaluation_windows(tokenizer, examples, *, max_seq_length, doc_stride, max_query_length):
    """``(features, windows)``: model inputs of every window of ``examples`` and its ``Window``."""
    encoded = encode_windows(tokenizer, examples, max_seq_length=max_seq_length, doc_stride=doc_stride,
                             max_query_length=max_query_length)
    by_example = defaultdict(list)
    for window in encoded:
        by_example[window.example_index].append(window)
    features, windows = [], []
    for example_windows in by_example.values():
        bounds = [context_bounds(window.sequence_ids) for window in example_windows]
        lengths = [span[1] - span[0] + 1 if span else 0 for span in bounds]
        flags = max_context_flags(lengths, example_windows[0].step)
        for window, span, flag in zip(example_windows, bounds, flags):
            size = len(window.input_ids)
            char_starts, char_ends = np.full(size, -1), np.full(size, -1)
            max_context = np.zeros(size, dtype=bool)
            if span is not None:
                first, last = span
                offsets = np.asarray(window.offsets[first:last + 1]).reshape(-1, 2)
                char_starts[first:last + 1], char_ends[first:last + 1] = offsets[:, 0], offsets[:, 1]
                max_context[first:last + 1] = flag
            features.append({"input_ids": window.input_ids, "token_type_ids": window.token_type_ids})
            windows.append(Window(window.example_index, char_starts, char_ends, max_context))
    return features, windows


# --------------------------------------------------------------------------- logits and loss


def span_logits(outputs, batch, released_padding=False):
    """Start and end logits, float32, for the span loss and logit KD.

    Padding positions get ``MASKED_LOGIT``, so that a window's loss does not depend on how far
    its batch is padded. With ``released_padding`` (``--pad_to_max_length``) they are kept, as in
    the released scripts, whose softmax ran over all ``max_seq_length`` positions.
    """
    logits = (outputs.start_logits.float(), outputs.end_logits.float())
    if released_padding:
        return logits
    padding = batch["attention_mask"] == 0
    return tuple(side.masked_fill(padding, MASKED_LOGIT) for side in logits)


def span_loss(start_logits, end_logits, batch):
    """``(CE(start_logits, start_positions) + CE(end_logits, end_positions)) / 2``, each averaged over the batch."""
    return (F.cross_entropy(start_logits, batch["start_positions"])
            + F.cross_entropy(end_logits, batch["end_positions"])) / 2


def span_fine_tuning_loss(model, released_padding):
    """``compute_loss(wrapped_model, batch) -> (loss, {})`` of fine-tuning a span predictor
    (``model``; ``wrapped_model`` is the loop's wrapped or compiled copy): ``span_loss`` of its
    start and end logits, masked by ``span_logits`` (``released_padding``: ``--pad_to_max_length``)."""
    accepted = forward_arguments(model)

    def compute_loss(wrapped_model, batch):
        outputs = wrapped_model(**model_inputs(batch, accepted))
        return span_loss(*span_logits(outputs, batch, released_padding), batch), {}

    return compute_loss


def stacked_span_logits(outputs, width):
    """``(B, 2, width)``: start and end logits padded with -inf to ``width`` positions, so that
    batches of any padding concatenate."""
    logits = torch.stack([outputs.start_logits, outputs.end_logits], dim=1)
    return F.pad(logits, (0, width - logits.shape[-1]), value=float("-inf"))


# --------------------------------------------------------------------------- answers


def best_answers(examples, windows, start_logits, end_logits, *, n_best_size=20, max_answer_length=30):
    """``(predictions, nbest)``: each question's best answer text, and its ``n_best_size`` best
    distinct answers with ``text``, ``probability`` (softmax of the kept scores), ``start_logit``
    and ``end_logit``.

    In every window of the question, the ``n_best_size`` highest start logits among the tokens
    with their maximum context there and the ``n_best_size`` highest end logits among the
    context tokens are paired; a pair is a candidate when the end is not before the start and
    the span has at most ``max_answer_length`` tokens. Candidates of all windows are ranked by
    start logit + end logit; the answer text is the context between the start token's first and
    the end token's last character. A question without any candidate gets the empty answer.
    """
    by_example = defaultdict(list)
    for index, window in enumerate(windows):
        by_example[window.example_index].append(index)
    predictions, nbest = {}, {}
    for example_index, example in enumerate(examples):
        parts = [_window_candidates(windows[index], start_logits[index], end_logits[index], n_best_size,
                                    max_answer_length) for index in by_example[example_index]]
        entries = _distinct_best(example["context"], parts, n_best_size)
        predictions[example["id"]] = entries[0]["text"]
        nbest[example["id"]] = entries
    return predictions, nbest


def _window_candidates(window, start_logits, end_logits, n_best_size, max_answer_length):
    """Arrays (start logit, end logit, character start, character end) of a window's candidates."""
    starts = np.flatnonzero(window.max_context)
    ends = np.flatnonzero(window.char_starts >= 0)
    starts = starts[np.argsort(-start_logits[starts], kind="stable")[:n_best_size]]
    ends = ends[np.argsort(-end_logits[ends], kind="stable")[:n_best_size]]
    length = ends[None, :] - starts[:, None] + 1
    start_rows, end_columns = np.nonzero((length >= 1) & (length <= max_answer_length))
    chosen_starts, chosen_ends = starts[start_rows], ends[end_columns]
    return (start_logits[chosen_starts], end_logits[chosen_ends], window.char_starts[chosen_starts],
            window.char_ends[chosen_ends])


def _distinct_best(context, parts, n_best_size):
    """The ``n_best_size`` best candidates with distinct texts, as nbest entries."""
    if not parts or not any(len(part[0]) for part in parts):
        return [{"text": "", "probability": 1.0, "start_logit": 0.0, "end_logit": 0.0}]
    start_logits, end_logits, char_starts, char_ends = (np.concatenate(column) for column in zip(*parts))
    scores = start_logits + end_logits
    entries, seen = [], set()
    for index in np.argsort(-scores, kind="stable"):
        text = context[char_starts[index]:char_ends[index]]
        if text in seen:
            continue
        seen.add(text)
        entries.append({"text": text, "start_logit": float(start_logits[index]),
                        "end_logit": float(end_logits[index]), "score": float(scores[index])})
        if len(entries) == n_best_size:
            break
    kept = np.array([entry.pop("score") for entry in entries])
    probabilities = np.exp(kept - kept.max())
    probabilities /= probabilities.sum()
    for entry, probability in zip(entries, probabilities):
        entry["probability"] = float(probability)
    return entries


# --------------------------------------------------------------------------- evaluation


@dataclass
class SquadEvalSet:
    examples: list
    features: list
    windows: list


@dataclass
class Answers:
    metrics: dict
    predictions: dict
    nbest: dict
    golds: dict  # id -> the gold answers of the scored questions


def window_options(args):
    return {"max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride,
            "max_query_length": args.max_query_length}


def load_train_features(args, tokenizer):
    """Training windows with answer positions; unusable questions are skipped with a warning."""
    examples = training_examples(load_squad_examples(args, "train", args.max_train_samples),
                                  split_file(args, "train") or f"{HUB_DATASET} train")
    features = training_features(tokenizer, examples, **window_options(args))
    logger.info("training on %d questions in %d windows", len(examples), len(features))
    return features


def load_squad_eval_set(args, tokenizer):
    """The evaluation questions and their windows."""
    examples = load_squad_examples(args, "validation", args.max_eval_samples)
    unanswered = sum(not example["answers"] for example in examples)
    if 0 < unanswered < len(examples):
        logger.warning("%s: %d of %d questions have no gold answer; they are predicted but not scored",
                       split_file(args, "validation") or f"{HUB_DATASET} validation", unanswered, len(examples))
    features, windows = evaluation_windows(tokenizer, examples, **window_options(args))
    return SquadEvalSet(examples, features, windows)


def answer_questions(forward, eval_set, collate_fn, batch_size, runtime, args):
    """Answers to the evaluation questions and, where they have gold answers, their scores.

    ``forward(batch)`` returns ``stacked_span_logits`` of a batch of windows.
    """
    logits = predict(forward, eval_set.features, collate_fn, batch_size, runtime, desc="evaluating")
    predictions, nbest = best_answers(eval_set.examples, eval_set.windows, logits[:, 0], logits[:, 1],
                                      n_best_size=args.n_best_size, max_answer_length=args.max_answer_length)
    golds = gold_answers(eval_set.examples)
    metrics = dict(squad_scores(predictions, golds), eval_samples=len(golds)) if golds else {}
    return Answers(metrics, predictions, nbest, golds)


def question_scores(predictions, golds):
    """``eval_predictions.json``'s set of SQuAD: each scored question's id, answer and exact match
    and F1 in percent (their means are ``squad_scores``); a question without an answer scores 0."""
    ids = list(golds)
    answers = [predictions.get(question_id, "") for question_id in ids]
    return {"ids": ids, "predictions": answers,
            "exact_match": [100.0 * max(exact_match(answer, gold) for gold in golds[question_id]) if
                            question_id in predictions else 0.0 for question_id, answer in zip(ids, answers)],
            "f1": [100.0 * max(token_f1(answer, gold) for gold in golds[question_id]) if
                   question_id in predictions else 0.0 for question_id, answer in zip(ids, answers)]}


def write_answers(args, answers):
    """``predictions.json`` and ``nbest_predictions.json``; ``eval_results.json`` when scored."""
    output_dir = Path(args.output_dir)
    write_json(output_dir / "predictions.json", answers.predictions)
    write_json(output_dir / "nbest_predictions.json", answers.nbest)
    if answers.metrics:
        write_eval_predictions(output_dir, "squad", {"": question_scores(answers.predictions, answers.golds)})
        write_json(output_dir / "eval_results.json", answers.metrics)
        logger.info("dev results: %s", answers.metrics)
    else:
        logger.info("the evaluation questions have no gold answers: wrote predictions.json only")
