"""Throughput of one-to-one distillation on SST-2 lengths: dynamic padding against padding to 128.

    python -m benchmarks.distillation_throughput --sst2_dir glue_data/SST-2

Reads the SST-2 training sentences, trains a WordPiece vocabulary on them (so token counts are
realistic without downloading a tokenizer), builds a randomly initialised BERT teacher and
DistilBERT student, and times full distillation steps as run_glue_w_distillation.py takes them
(``utils.methods.one_to_one.classifier_distillation_loss`` with the frozen teacher: student forward,
teacher forward, the paper's loss; then the loop's backward, clipping and AdamW step) on the same
random batches, padded to the longest sentence of each batch or to 128 tokens, the
configurations taking turns step by step. Prints examples/s, real tokens/s, the share of the step
spent in the loss terms (the step with the paper's loss, less its teacher forward, against the
same step with the task loss alone, which runs no teacher), and peak memory (CUDA: max allocated;
CPU: peak resident set size of a process that runs only that configuration).
"""

import argparse
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks.common import PAPER_LOSS, LoopStep, add_model_shape_args, build_models, build_tokenizer, marked
from losses import OneToOneLoss
from utils.engine.features import PadCollator, tokenize_examples
from utils.engine.runtime import Runtime
from utils.methods.one_to_one import StudentAndTeacher, classifier_distillation_loss, classifier_teacher_outputs
from utils.tasks.glue_data import get_task, read_glue_tsv

ROOT = Path(__file__).resolve().parents[1]
PADDINGS = ("dynamic", "pad to 128")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sst2_dir", required=True, help="a glue_data/SST-2 folder (train.tsv is read)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    add_model_shape_args(parser)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--memory_of", default=None, help=argparse.SUPPRESS)  # a child measuring peak memory
    return parser.parse_args(argv)


def prepare(args):
    """Tokenizer, models, one optimizer per loss, and the same random batches in both paddings."""
    device = torch.device(args.device)
    examples = read_glue_tsv("sst2", args.sst2_dir, "train")
    tokenizer = build_tokenizer([example["text_a"] for example in examples], args.vocab_size)
    teacher, student = build_models(args, len(tokenizer), device)
    rng = random.Random(0)
    chosen = [rng.sample(range(len(examples)), args.batch_size) for _ in range(args.warmup + args.steps)]
    flat = [i for batch in chosen for i in batch]
    features = tokenize_examples(tokenizer, [examples[i] for i in flat], args.max_seq_length)
    for feature, index in zip(features, flat):
        feature["labels"] = examples[index]["label"]
    batches = {}
    for padding in PADDINGS:
        collate = PadCollator({"": tokenizer.pad_token_id}, args.max_seq_length, padding == "pad to 128")
        batches[padding] = [collate(features[b * args.batch_size:(b + 1) * args.batch_size])
                            for b in range(len(chosen))]
    return device, teacher, student, batches, tokenizer


def make_step(args, device, teacher, student, tokenizer, loss_name):
    """``step(batch) -> seconds in the teacher's forward``: one full distillation step on a batch, as
    run_glue_w_distillation.py takes it."""
    loss_fn = OneToOneLoss(**PAPER_LOSS) if loss_name == "paper" else OneToOneLoss(alpha_task=1.0)
    runtime = Runtime(device, amp_dtype=torch.bfloat16 if args.bf16 else None)
    pair = StudentAndTeacher(student, teacher, tokenizer)
    teacher_outputs = classifier_teacher_outputs(pair, loss_fn, get_task("sst2"),
                                                 SimpleNamespace(omit_teacher_token_type_ids=False))
    loop_step = LoopStep(student, runtime, 5e-5, args.warmup + args.steps)

    def step(batch):
        seconds, last = {}, [time.perf_counter()]

        def mark(phase):
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            seconds[phase] = seconds.get(phase, 0.0) + now - last[0]
            last[0] = now

        compute_loss = classifier_distillation_loss(pair, loss_fn, marked(teacher_outputs, mark, "student", "teacher"))
        loop_step(compute_loss, {key: value.to(device) for key, value in batch.items()}, mark)
        return seconds.get("teacher", 0.0)

    return step


def peak_memory(args, padding):
    """Peak memory of paper-loss steps at one padding: CUDA max allocated, or on the CPU the
    peak resident set size of a child process that runs only those steps."""
    if args.device.startswith("cuda"):
        device, teacher, student, batches, tokenizer = prepare(args)
        step = make_step(args, device, teacher, student, tokenizer, "paper")
        torch.cuda.reset_peak_memory_stats()
        for batch in batches[padding][:3]:
            step(batch)
        return torch.cuda.max_memory_allocated() / 1e9
    child = [sys.executable, "-m", "benchmarks.distillation_throughput", "--sst2_dir", args.sst2_dir,
             "--batch_size", str(args.batch_size),
             "--steps", "1", "--warmup", "1", "--hidden", str(args.hidden), "--heads", str(args.heads),
             "--teacher_layers", str(args.teacher_layers), "--student_layers", str(args.student_layers),
             "--vocab_size", str(args.vocab_size), "--device", args.device, "--memory_of", padding]
    done = subprocess.run(child + (["--bf16"] if args.bf16 else []), capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"the memory run ({padding}) failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.memory_of:
        device, teacher, student, batches, tokenizer = prepare(args)
        step = make_step(args, device, teacher, student, tokenizer, "paper")
        for batch in batches[args.memory_of]:
            step(batch)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9)
        return
    # measured first: a child started by a large parent would inherit the parent's peak RSS
    peaks = {padding: peak_memory(args, padding) for padding in PADDINGS}
    device, teacher, student, batches, tokenizer = prepare(args)
    configurations = [(padding, loss_name) for padding in PADDINGS for loss_name in ("paper", "task only")]
    steps = {config: make_step(args, device, teacher, student, tokenizer, config[1]) for config in configurations}
    times = {config: [] for config in configurations}
    teacher_times = {config: [] for config in configurations}
    # the configurations take turns, step by step, so that a busy machine slows them alike
    for index in range(args.warmup + args.steps):
        for config in configurations:
            start = time.perf_counter()
            teacher_seconds = steps[config](batches[config[0]][index])
            if index >= args.warmup:
                times[config].append(time.perf_counter() - start)
                teacher_times[config].append(teacher_seconds)
    seconds = {config: statistics.median(values) for config, values in times.items()}
    teacher = {config: statistics.median(values) for config, values in teacher_times.items()}
    real_tokens = {padding: sum(int(b["attention_mask"].sum()) for b in batches[padding][args.warmup:]) / args.steps
                   for padding in PADDINGS}
    print(f"one-to-one distillation on SST-2 lengths, device {args.device}, batch {args.batch_size}, "
          f"teacher {args.teacher_layers}x{args.hidden}, student {args.student_layers}x{args.hidden}, "
          f"loss {PAPER_LOSS}; median of {args.steps} steps after {args.warmup}, configurations interleaved")
    print(f"{'padding':<11} {'examples/s':>10} {'real tok/s':>10} {'s/step':>7} {'loss terms':>10} {'peak GB':>8}")
    for padding in PADDINGS:
        paper, task_only = seconds[(padding, "paper")], seconds[(padding, "task only")]
        loss_share = max(0.0, paper - teacher[(padding, "paper")] - task_only) / paper
        print(f"{padding:<11} {args.batch_size / paper:>10.1f} {real_tokens[padding] / paper:>10.0f} {paper:>7.3f} "
              f"{loss_share:>9.1%} {peaks[padding]:>8.2f}")
    speedup = seconds[("pad to 128", "paper")] / seconds[("dynamic", "paper")]
    print(f"dynamic padding / padding to 128: {speedup:.2f}x examples/s; "
          f"mean real tokens per sentence {real_tokens['dynamic'] / args.batch_size:.1f}")
    print("loss terms: (step with the paper's loss - its teacher forward - step with the task loss only) / (step with "
          "the paper's loss), same batches; "
          "peak memory: " + ("torch.cuda.max_memory_allocated" if args.device.startswith("cuda")
                             else "peak RSS of a process running only paper-loss steps at that padding"))


if __name__ == "__main__":
    main()
