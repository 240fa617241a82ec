"""Speed of the SQuAD data path: making windows (windows/s) and turning logits into answers (questions/s).

    python -m benchmarks.squad_speed dev-v1.1.json [--tokenizer bert-base-uncased]

Reads a SQuAD v1.1 file, tokenises it into training windows (with answer positions; the first
gold answer of each question) and evaluation windows (with character offsets and maximum-context
flags), then runs the evaluation post-processing (n-best span search over every window of a
question, answer texts, n-best lists) on random logits of the evaluation windows' shape and
scores the answers. Without ``--tokenizer`` a lower-cased WordPiece vocabulary is trained on the
file's text (no download), so token counts are realistic. Each step is timed ``--repeat`` times;
the best time is reported.
"""

import argparse
import time

import numpy as np

from benchmarks.common import build_tokenizer
from utils.engine.models import load_tokenizer
from utils.tasks.squad import best_answers, evaluation_windows, training_features
from utils.tasks.squad_data import read_squad_file, training_examples
from utils.tasks.squad_metrics import gold_answers, squad_scores


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("squad_file", help="a SQuAD v1.1 JSON file (dev-v1.1.json, train-v1.1.json, ...)")
    parser.add_argument("--tokenizer", default=None,
                        help="a hub name or local tokenizer (default: trained on the file)")
    parser.add_argument("--vocab_size", type=int, default=8000, help="of the trained WordPiece vocabulary")
    parser.add_argument("--max_seq_length", type=int, default=384)
    parser.add_argument("--doc_stride", type=int, default=128)
    parser.add_argument("--max_query_length", type=int, default=64)
    parser.add_argument("--n_best_size", type=int, default=20)
    parser.add_argument("--max_answer_length", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args(argv)


def best_time(function, repeat):
    """(the smallest wall time of ``repeat`` calls, the last call's result)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None):
    args = parse_args(argv)
    examples = read_squad_file(args.squad_file)
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    else:
        texts = list(dict.fromkeys(example["context"] for example in examples))
        tokenizer = build_tokenizer(texts + [example["question"] for example in examples], args.vocab_size)
    windows = {"max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride,
               "max_query_length": args.max_query_length}
    trainable = training_examples(examples, args.squad_file)

    train_seconds, train_features = best_time(lambda: training_features(tokenizer, trainable, **windows), args.repeat)
    eval_seconds, (features, eval_windows) = best_time(lambda: evaluation_windows(tokenizer, examples, **windows),
                                                       args.repeat)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, len(eval_windows), args.max_seq_length)).astype(np.float32)
    answer_seconds, (predictions, _) = best_time(
        lambda: best_answers(examples, eval_windows, logits[0], logits[1], n_best_size=args.n_best_size,
                             max_answer_length=args.max_answer_length), args.repeat)
    golds = gold_answers(examples)
    score_seconds, _ = best_time(lambda: squad_scores(predictions, golds), args.repeat)

    print(f"{args.squad_file}: {len(examples)} questions, {len({e['context'] for e in examples})} contexts; "
          f"tokenizer {args.tokenizer or f'WordPiece trained on the file ({len(tokenizer)} tokens)'}; "
          f"max_seq_length {args.max_seq_length}, doc_stride {args.doc_stride}, "
          f"max_query_length {args.max_query_length}; best of {args.repeat}")
    print(f"{'step':<38} {'items':>8} {'seconds':>8} {'per second':>12}")
    rows = [
        ("training windows (with answer positions)", len(train_features), train_seconds, "windows"),
        ("evaluation windows (offsets, max context)", len(features), eval_seconds, "windows"),
        ("post-processing (n-best answers)", len(examples), answer_seconds, "questions"),
        ("scoring (exact match, F1)", len(golds), score_seconds, "questions"),
    ]
    for name, items, seconds, unit in rows:
        print(f"{name:<38} {items:>8} {seconds:>8.3f} {items / seconds:>12.0f} {unit}/s")


if __name__ == "__main__":
    main()
