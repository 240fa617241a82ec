"""Training throughput on IMDB review lengths, with and without length grouping.

    python -m benchmarks.imdb_throughput --data_dir aclImdb

Reads the reviews of an aclImdb folder (train and test; ``<br />`` turned into line breaks as
the IMDB scripts do), trains a WordPiece vocabulary on them (realistic token counts without
downloading a tokenizer), truncates at 512 tokens as released, and builds a randomly
initialised BERT teacher and DistilBERT student from configs. It plans the same epochs of the
same reviews with the training loop's ``epoch_batches``, without and with ``lengths``, and
times full training steps, alternating the two plans step by step: one-to-one distillation
steps as run_imdb_w_distillation.py takes them (student forward, teacher forward, the IMDB
script's loss; the loop's backward, clipping and AdamW step), or with ``--mode teacher``
run_imdb.py's fine-tuning steps of the teacher. Prints examples/s, real (non-pad)
tokens/s, seconds per step and the padding waste (share of pad tokens in the padded batches).
"""

import argparse
import time
from types import SimpleNamespace

import torch

from benchmarks.common import LoopStep, add_model_shape_args, build_models, build_tokenizer
from losses import OneToOneLoss
from utils.engine.features import PadCollator
from utils.engine.loop import epoch_batches
from utils.engine.models import fine_tuning_loss
from utils.engine.runtime import Runtime
from utils.methods.one_to_one import StudentAndTeacher, classifier_distillation_loss, classifier_teacher_outputs
from utils.tasks.imdb import IMDB, read_aclimdb, tokenize_reviews

IMDB_LOSS = dict(alpha_task=0.5, alpha_corr=0.005)  # run_imdb_w_distillation.py's defaults


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="an aclImdb folder or the folder holding it")
    parser.add_argument("--mode", choices=["distillation", "teacher"], default="distillation")
    parser.add_argument("--max_reviews", type=int, default=None, help="use only the first N reviews (default all)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per batching")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each batching before the timed epochs")
    parser.add_argument("--max_seq_length", type=int, default=512)
    add_model_shape_args(parser)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    return parser.parse_args(argv)


def load_features(args):
    """Review features (``clean_review`` then 512-token head truncation) with labels, and the tokenizer."""
    examples = read_aclimdb(args.data_dir, "train") + read_aclimdb(args.data_dir, "test")
    examples = examples[:args.max_reviews] if args.max_reviews else examples
    tokenizer = build_tokenizer([example["text_a"] for example in examples], args.vocab_size)
    features = tokenize_reviews(tokenizer, examples, args.max_seq_length)
    for feature, example in zip(features, examples):
        feature["labels"] = example["label"]
    return features, tokenizer


def planned_batches(features, args, grouped):
    """The training loop's batches for ``args.epochs`` epochs (lists of example indices)."""
    lengths = [len(feature["input_ids"]) for feature in features] if grouped else None
    return [batch for epoch in range(args.epochs)
            for batch in epoch_batches(len(features), args.batch_size, seed=42, epoch=epoch, lengths=lengths)]


def padding_waste(features, batches):
    """Share of pad tokens in the batches padded to their longest review."""
    real = sum(len(features[i]["input_ids"]) for batch in batches for i in batch)
    padded = sum(len(batch) * max(len(features[i]["input_ids"]) for i in batch) for batch in batches)
    return 1 - real / padded


def make_step(args, tokenizer, features):
    """``step(indices) -> (seconds, real tokens)``: one timed training step on those reviews, as
    run_imdb.py (``--mode teacher``) or run_imdb_w_distillation.py takes it."""
    device = torch.device(args.device)
    teacher, student = build_models(args, len(tokenizer), device)
    if args.mode == "teacher":
        model = teacher.train().requires_grad_(True)
        compute_loss = fine_tuning_loss(model)
    else:
        model, pair = student, StudentAndTeacher(student, teacher, tokenizer)
        loss_fn = OneToOneLoss(**IMDB_LOSS)
        teacher_outputs = classifier_teacher_outputs(pair, loss_fn, IMDB,
                                                     SimpleNamespace(omit_teacher_token_type_ids=False))
        compute_loss = classifier_distillation_loss(pair, loss_fn, teacher_outputs)
    runtime = Runtime(device, amp_dtype=torch.bfloat16 if args.bf16 else None)
    loop_step = LoopStep(model, runtime, 5e-5, 1_000_000)
    collate = PadCollator({"": tokenizer.pad_token_id}, args.max_seq_length)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(indices):
        batch = {key: value.to(device) for key, value in collate([features[i] for i in indices]).items()}
        synchronize()
        start = time.perf_counter()
        loop_step(compute_loss, batch, lambda phase: None)
        synchronize()
        return time.perf_counter() - start, int(batch["attention_mask"].sum())

    return step


def main(argv=None):
    args = parse_args(argv)
    features, tokenizer = load_features(args)
    lengths = sorted(len(feature["input_ids"]) for feature in features)
    print(f"IMDB training throughput ({args.mode}), device {args.device}, batch {args.batch_size}, "
          f"{len(features)} reviews x {args.epochs} epochs, vocabulary {len(tokenizer)}, "
          f"teacher {args.teacher_layers}x{args.hidden}, student {args.student_layers}x{args.hidden}")
    print(f"review tokens (<= {args.max_seq_length}): mean {sum(lengths) / len(lengths):.0f}, "
          f"median {lengths[len(lengths) // 2]}, max {lengths[-1]}, "
          f"truncated {sum(length == args.max_seq_length for length in lengths) / len(lengths):.1%}")
    print(f"{'batching':<18} {'examples/s':>10} {'real tok/s':>10} {'s/step':>7} {'steps':>6} {'pad share':>9}")
    plans = {grouped: planned_batches(features, args, grouped) for grouped in (False, True)}
    step = make_step(args, tokenizer, features)
    for batches in zip(plans[False][:args.warmup], plans[True][:args.warmup]):
        for indices in batches:
            step(indices)
    timed = {grouped: [] for grouped in plans}  # (seconds, examples, real tokens) of each step
    # Every planned batch is timed, random and grouped ones alternating step by step (one model:
    # speed does not depend on the weights), so that both do the same work and a machine busy
    # with other work slows both alike.
    for batches in zip(plans[False], plans[True]):
        for grouped, indices in zip((False, True), batches):
            seconds, real_tokens = step(indices)
            timed[grouped].append((seconds, len(indices), real_tokens))
    speeds = {}
    for name, grouped in (("random", False), ("grouped by length", True)):
        seconds, examples, real_tokens = map(sum, zip(*timed[grouped]))
        speeds[grouped] = examples / seconds
        print(f"{name:<18} {examples / seconds:>10.1f} {real_tokens / seconds:>10.0f} "
              f"{seconds / len(timed[grouped]):>7.3f} {len(timed[grouped]):>6} "
              f"{padding_waste(features, plans[grouped]):>9.1%}")
    print(f"length grouping / random batches: {speeds[True] / speeds[False]:.2f}x examples/s "
          f"(the same {args.epochs} epochs of reviews, every step timed; {args.warmup} untimed warm-up "
          "steps each before)")


if __name__ == "__main__":
    main()
