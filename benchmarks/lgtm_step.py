"""Time and peak memory of one training step of KD, ProKT and LGTM (Ren et al., ACL 2023).

Each step is a full training step: the teacher update where the method has one, then the
student update. KD, ProKT and LGTM are the steps run_lgtm_glue.py takes (the loop's micro-batch
backward and optimizer step around ``utils.methods.lgtm.online_student_loss``, with
``utils.methods.lgtm.TeacherStep`` as its micro_batch_hook); "LGTM (released)" computes the teacher
gradient the way the released code does (``benchmarks.reference_pipeline``). Every method runs in
its own subprocess, so that its peak memory is its own; their steps are interleaved.

    python -m benchmarks.lgtm_step [--teacher_layers 6] [--student_layers 3] [--hidden 384]
                                   [--batch_size 16] [--seq_length 128] [--repeats 5] [--device cuda]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import reference_pipeline as reference
from benchmarks.common import LoopStep, QuizSource, add_model_shape_args, bert, training_options
from utils.engine.loop import make_scheduler
from utils.engine.runtime import Runtime
from utils.methods.lgtm import TeacherStep, online_student_loss, teacher_logits_of

ALPHA_KD, T_ALPHA_KD, TEMPERATURE, LEARNING_RATE = 1.0, 0.4, 1.0, 3e-5
STEPS = 1_000_000  # the schedules' length: far beyond the steps taken, so that the learning rates stay put
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Setup:
    """The models, a training batch and a quiz batch, and the method's step."""

    teacher: torch.nn.Module
    student: torch.nn.Module
    batch: dict
    quiz_batch: dict
    step: object = None


def make_setup(args, method):
    """BERT teacher and student, random padded batches, and ``method``'s step."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    setup = Setup(bert(args.vocab_size, args.hidden, args.hidden // 64, args.teacher_layers, device),
                  bert(args.vocab_size, args.hidden, args.hidden // 64, args.student_layers, device),
                  random_batch(args), random_batch(args))
    teacher, student = setup.teacher, setup.student
    if method == "KD":
        teacher.eval().requires_grad_(False)
    if method == "LGTM (released)":
        teacher_optimizer = reference.reference_optimizer(teacher.parameters(), LEARNING_RATE)
        student_optimizer = reference.reference_optimizer(student.parameters(), LEARNING_RATE)

        def released_step():
            reference.lgtm_teacher_update(teacher, student, teacher_optimizer, student_optimizer, setup.batch,
                                          setup.quiz_batch, ignore, alpha_kd=ALPHA_KD, t_alpha_kd=T_ALPHA_KD,
                                          temperature=TEMPERATURE)
            reference.student_update(teacher, student, student_optimizer, setup.batch, ignore, alpha_kd=ALPHA_KD,
                                     temperature=TEMPERATURE)

        setup.step = released_step
        return setup
    runtime = Runtime(device)
    loop_step = LoopStep(student, runtime, LEARNING_RATE, STEPS)
    teacher_step = None
    if method != "KD":
        teacher_step = TeacherStep(
            teacher, student, runtime, learning_rate=LEARNING_RATE, adam_epsilon=1e-8,
            make_schedule=lambda optimizer: make_scheduler(optimizer, training_options(LEARNING_RATE, STEPS), STEPS),
            t_alpha_kd=T_ALPHA_KD, temperature=TEMPERATURE, max_grad_norm=1.0,
            quiz_batches=QuizSource(batch=setup.quiz_batch) if method == "LGTM" else None,
            student_optimizer=loop_step.optimizer, alpha_kd=ALPHA_KD)
    compute_loss = online_student_loss(student, teacher_logits_of(teacher), alpha_kd=ALPHA_KD,
                                       temperature=TEMPERATURE)
    setup.step = lambda: loop_step(compute_loss, setup.batch, ignore, micro_batch_hook=teacher_step)
    return setup


def ignore(phase):
    """The steps' phase marks, unused here: the whole step is timed."""


def random_batch(args):
    """Random token ids (0 = [PAD]); each sequence's real length uniform in [seq_length / 2, seq_length]."""
    lengths = torch.randint(args.seq_length // 2, args.seq_length + 1, (args.batch_size, 1))
    attention_mask = (torch.arange(args.seq_length) < lengths).long()
    batch = {
        "input_ids": torch.randint(1, args.vocab_size, (args.batch_size, args.seq_length)) * attention_mask,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(attention_mask),
        "labels": torch.randint(0, 2, (args.batch_size,)),
    }
    return {key: value.to(args.device) for key, value in batch.items()}


METHODS = ("KD", "ProKT", "LGTM", "LGTM (released)")


def worker(method, args):
    """Build the setup, take the warm-up steps, print "ready"; then take one step per "step"
    line on stdin, printing its seconds; at the end of stdin print the memory as JSON."""
    setup = make_setup(args, method)
    memory_before = peak_memory_gb(args.device)
    for _ in range(args.warmup):
        timed_step(setup, args.device)
    print("ready", flush=True)
    for _ in sys.stdin:
        print(timed_step(setup, args.device), flush=True)
    print(json.dumps({"memory_before": memory_before, "peak_memory": peak_memory_gb(args.device)}))


def timed_step(setup, device):
    """Seconds of one training step of the setup's method."""
    synchronize(device)
    start = time.perf_counter()
    setup.step()
    synchronize(device)
    return time.perf_counter() - start


def peak_memory_gb(device):
    """CUDA: torch.cuda.max_memory_allocated; CPU: the process's peak RSS (ru_maxrss, KiB)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(argv, args):
    """One worker process per method; the methods' steps interleaved round by round, so that a
    change in the machine's load hits them alike. Returns median seconds and memory per method."""
    workers = {}
    for method in METHODS:
        workers[method] = subprocess.Popen([sys.executable, "-m", "benchmarks.lgtm_step", *argv, "--worker", method],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        if workers[method].stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {method} worker stopped before its first step")
    durations = {method: [] for method in METHODS}
    for _ in range(args.repeats):
        for method, process in workers.items():
            process.stdin.write("step\n")
            process.stdin.flush()
            durations[method].append(float(process.stdout.readline()))
    results = {}
    for method, process in workers.items():
        process.stdin.close()
        results[method] = {"seconds": statistics.median(durations[method]),
                           **json.loads(process.stdout.readline())}
        process.wait()
    return results


def print_report(results, args):
    memory_kind = ("torch.cuda.max_memory_allocated" if args.device.startswith("cuda")
                   else "peak RSS of the method's own process (resource.getrusage ru_maxrss)")
    print(f"device {args.device}, {torch.get_num_threads()} CPU threads; teacher "
          f"{args.teacher_layers}x{args.hidden}, student {args.student_layers}x{args.hidden}, "
          f"vocab {args.vocab_size}, batch {args.batch_size}x{args.seq_length}; "
          f"median of {args.repeats} steps after {args.warmup} warm-up, methods interleaved")
    print(f"memory: {memory_kind}; 'setup' is its value after building models, optimizers, batches")
    print(f"{'method':<16} {'step (s)':>9} {'peak (GB)':>10} {'setup (GB)':>11}")
    for method, result in results.items():
        print(f"{method:<16} {result['seconds']:>9.3f} {result['peak_memory']:>10.2f} "
              f"{result['memory_before']:>11.2f}")
    print(f"{'ratio':<24} {'time':>6} {'peak memory':>12}")
    for numerator, denominator in [("LGTM", "ProKT"), ("LGTM", "KD"), ("LGTM (released)", "ProKT")]:
        top, bottom = results[numerator], results[denominator]
        print(f"{numerator + ' / ' + denominator:<24} {top['seconds'] / bottom['seconds']:>6.2f} "
              f"{top['peak_memory'] / bottom['peak_memory']:>12.2f}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_shape_args(parser, vocab_size=30522, heads=False, hidden_help="hidden size (heads = hidden / 64)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        worker(args.worker, args)
    else:
        print_report(measure(argv, args), args)


if __name__ == "__main__":
    main(sys.argv[1:])
