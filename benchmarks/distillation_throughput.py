"""Throughput of one-to-one distillation on SST-2 lengths: dynamic padding against padding to 128.

    python benchmarks/distillation_throughput.py --sst2_dir glue_data/SST-2

Reads the SST-2 training sentences, trains a WordPiece vocabulary on them (so token counts are
realistic without downloading a tokenizer), builds a randomly initialised BERT teacher and
DistilBERT student, and times full distillation steps (student forward, teacher forward,
the paper's loss, backward, AdamW step) on the same random batches, padded to the longest
sentence of each batch or to 128 tokens. Prints examples/s, real tokens/s, the share of the
step spent in the loss terms (the step with the paper's loss against the same step with the
task loss alone), and peak memory (CUDA: max allocated; CPU: peak resident set size of a
process that runs only that configuration).
"""

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from losses import OneToOneLoss  # noqa: E402
from utils.features import PadCollator, model_inputs, tokenize_examples  # noqa: E402
from utils.glue_data import read_glue_tsv  # noqa: E402
from utils.models import forward_arguments  # noqa: E402

PAPER_LOSS = dict(alpha_task=0.5, alpha_ce=0.0, alpha_corr=0.005, alpha_mse=0.0, alpha_cos=0.0, do_mask=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sst2_dir", required=True, help="a glue_data/SST-2 folder (train.tsv is read)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--teacher_layers", type=int, default=6)
    parser.add_argument("--student_layers", type=int, default=3)
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)  # one configuration, in a child process
    return parser.parse_args(argv)


def build_tokenizer(sentences, vocab_size):
    """A BERT WordPiece tokenizer whose vocabulary is trained on ``sentences``."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizer

    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(sentences, vocab_size=vocab_size, show_progress=False)
    return BertTokenizer(vocab=trainer.get_vocab(), do_lower_case=True)


def build_models(args, vocab_size, device):
    from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(
        vocab_size=vocab_size, hidden_size=args.hidden, num_hidden_layers=args.teacher_layers,
        num_attention_heads=args.heads, intermediate_size=4 * args.hidden, num_labels=2))
    student = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=vocab_size, dim=args.hidden, n_layers=args.student_layers, n_heads=args.heads,
        hidden_dim=4 * args.hidden, num_labels=2))
    return teacher.to(device).eval().requires_grad_(False), student.to(device).train()


def run_configuration(args, padding, loss_name):
    """Time ``args.steps`` distillation steps; return the figures as a dict."""
    device = torch.device(args.device)
    examples = read_glue_tsv("sst2", args.sst2_dir, "train")
    tokenizer = build_tokenizer([example["text_a"] for example in examples], args.vocab_size)
    teacher, student = build_models(args, len(tokenizer), device)
    rng = random.Random(0)
    total = args.warmup + args.steps
    chosen = [rng.sample(range(len(examples)), args.batch_size) for _ in range(total)]
    features = tokenize_examples(tokenizer, [examples[i] for batch in chosen for i in batch], args.max_seq_length)
    for feature, index in zip(features, (i for batch in chosen for i in batch)):
        feature["labels"] = examples[index]["label"]
    collate = PadCollator({"": tokenizer.pad_token_id}, args.max_seq_length, padding == "pad to 128")
    batches = [collate(features[b * args.batch_size:(b + 1) * args.batch_size]) for b in range(total)]
    loss_fn = OneToOneLoss(**PAPER_LOSS) if loss_name == "paper" else OneToOneLoss(alpha_task=1.0)
    optimizer = torch.optim.AdamW(student.parameters(), lr=5e-5)
    student_args, teacher_args = forward_arguments(student), forward_arguments(teacher)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    real_tokens, elapsed = 0, 0.0
    for step, batch in enumerate(batches):
        batch = {key: value.to(device) for key, value in batch.items()}
        synchronize()
        start = time.perf_counter()
        with autocast:
            outputs = student(**model_inputs(batch, student_args), labels=batch["labels"], output_hidden_states=True)
            with torch.no_grad():
                teacher_outputs = teacher(**model_inputs(batch, teacher_args), output_hidden_states=True)
            loss, _ = loss_fn(outputs.loss, outputs.logits, teacher_outputs.logits, outputs.hidden_states[-1],
                              teacher_outputs.hidden_states[-1], batch["attention_mask"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize()
        if step >= args.warmup:
            elapsed += time.perf_counter() - start
            real_tokens += int(batch["attention_mask"].sum())
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"padding": padding, "loss": loss_name, "seconds_per_step": elapsed / args.steps,
            "examples_per_s": args.steps * args.batch_size / elapsed, "real_tokens_per_s": real_tokens / elapsed,
            "mean_real_tokens": real_tokens / (args.steps * args.batch_size), "peak_memory_gb": peak / 1e9}


def main(argv=None):
    args = parse_args(argv)
    if args.only:
        padding, loss_name = args.only.split("|")
        print(json.dumps(run_configuration(args, padding, loss_name)))
        return
    rows = []
    for padding in ("dynamic", "pad to 128"):
        for loss_name in ("paper", "task only"):
            child = list(argv if argv is not None else sys.argv[1:])
            done = subprocess.run([sys.executable, __file__, *child, "--only", f"{padding}|{loss_name}"],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"the {padding} / {loss_name} run failed:\n{done.stderr[-2000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    by_key = {(row["padding"], row["loss"]): row for row in rows}
    print(f"one-to-one distillation on SST-2 lengths, device {args.device}, batch {args.batch_size}, "
          f"teacher {args.teacher_layers}x{args.hidden}, student {args.student_layers}x{args.hidden}, "
          f"loss {PAPER_LOSS}")
    print(f"{'padding':<11} {'examples/s':>10} {'real tok/s':>10} {'s/step':>7} {'loss terms':>10} {'peak GB':>8}")
    for padding in ("dynamic", "pad to 128"):
        paper, task_only = by_key[(padding, "paper")], by_key[(padding, "task only")]
        share = max(0.0, 1 - task_only["seconds_per_step"] / paper["seconds_per_step"])
        print(f"{padding:<11} {paper['examples_per_s']:>10.1f} {paper['real_tokens_per_s']:>10.0f} "
              f"{paper['seconds_per_step']:>7.3f} {share:>9.1%} {paper['peak_memory_gb']:>8.2f}")
    speedup = by_key[("dynamic", "paper")]["examples_per_s"] / by_key[("pad to 128", "paper")]["examples_per_s"]
    print(f"dynamic padding / padding to 128: {speedup:.2f}x examples/s; "
          f"mean real tokens per sentence {by_key[('dynamic', 'paper')]['mean_real_tokens']:.1f}")
    print("loss terms: 1 - (step with the task loss only) / (step with the paper's loss), same batches; "
          "peak memory: " + ("torch.cuda.max_memory_allocated" if args.device.startswith("cuda")
                             else "peak RSS of a process running only that configuration"))


if __name__ == "__main__":
    main()
