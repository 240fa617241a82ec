"""Time and peak memory of one training step of KD, ProKT and LGTM (REFERENCE.md section 2).

Each step is a full training step: the teacher update where the method has one, then the
student update. "LGTM (released)" computes the teacher gradient the way the released code
does (``released_lgtm_teacher_grads``, also the reference of tests/test_lgtm.py). Every method
runs in its own subprocess, so that its peak memory is its own; their steps are interleaved.

    python benchmarks/lgtm_step.py [--teacher_layers 6] [--student_layers 3] [--hidden 384]
                                   [--batch_size 16] [--seq_length 128] [--repeats 5] [--device cuda]
"""

import argparse
import copy
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
from transformers import BertConfig, BertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.lgtm import forward, lgtm_student_loss, lgtm_teacher_grads, lgtm_teacher_loss  # noqa: E402

ALPHA_KD, T_ALPHA_KD, TEMPERATURE, LEARNING_RATE = 1.0, 0.4, 1.0, 3e-5


def released_lgtm_teacher_grads(teacher, student, batch, quiz_batch, student_optimizer, *,
                                alpha_kd, t_alpha_kd, temperature, teacher_lr, r=0.01):
    """``utils.lgtm.lgtm_teacher_grads`` the way the released code computes it: a deep copy of
    the student (and its optimizer) takes a real AdamW step for the look-ahead, and the influence
    is the difference of two full teacher gradients, the student's parameters moved in place to
    theta + eps v, then theta - eps v, then back (up to rounding, as released)."""
    teacher_was_training, student_was_training = teacher.training, student.training
    teacher_out, student_out = forward(teacher, batch), forward(student, batch)
    student_grads = torch.autograd.grad(
        lgtm_student_loss(student_out.logits, teacher_out.logits, student_out.loss,
                          alpha_kd=alpha_kd, temperature=temperature),
        list(student.parameters()))
    lookahead_student, lookahead_optimizer = copy.deepcopy((student, student_optimizer))
    for param, grad in zip(lookahead_student.parameters(), student_grads):
        param.grad = grad
    lookahead_optimizer.step()
    lookahead_student.zero_grad()
    teacher_grads = torch.autograd.grad(
        lgtm_teacher_loss(teacher_out.logits, student_out.logits, teacher_out.loss,
                          t_alpha_kd=t_alpha_kd, temperature=temperature),
        list(teacher.parameters()))

    lookahead_student.train()
    forward(lookahead_student, quiz_batch).loss.backward()
    direction = [param.grad for param in lookahead_student.parameters()]
    eps = r / torch.cat([v.flatten() for v in direction]).norm()

    teacher.eval()
    student.eval()
    teacher_grads_at = {}
    for sign in (1, -2):
        with torch.no_grad():
            for param, v in zip(student.parameters(), direction):
                param.add_(sign * eps * v)
        teacher_out, student_out = forward(teacher, batch), forward(student, batch)
        teacher_grads_at[sign] = torch.autograd.grad(
            lgtm_teacher_loss(teacher_out.logits, student_out.logits, teacher_out.loss,
                              t_alpha_kd=t_alpha_kd, temperature=temperature),
            list(teacher.parameters()))
    with torch.no_grad():
        for param, v in zip(student.parameters(), direction):
            param.add_(eps * v)
    teacher.train(teacher_was_training)
    student.train(student_was_training)
    return [g - teacher_lr * (plus - minus) / (2 * eps)
            for g, plus, minus in zip(teacher_grads, teacher_grads_at[1], teacher_grads_at[-2])]


@dataclass
class Setup:
    """The models, their optimizers, a training batch and a quiz batch."""

    teacher: torch.nn.Module
    student: torch.nn.Module
    teacher_optimizer: torch.optim.Optimizer
    student_optimizer: torch.optim.Optimizer
    batch: dict
    quiz_batch: dict


def make_setup(args):
    """BERT teacher and student, AdamW optimizers (no weight decay), random padded batches."""
    torch.manual_seed(0)
    teacher = bert(args, args.teacher_layers).to(args.device)
    student = bert(args, args.student_layers).to(args.device)
    return Setup(
        teacher, student,
        torch.optim.AdamW(teacher.parameters(), lr=LEARNING_RATE, weight_decay=0.0),
        torch.optim.AdamW(student.parameters(), lr=LEARNING_RATE, weight_decay=0.0),
        random_batch(args), random_batch(args),
    )


def bert(args, num_layers):
    """A randomly initialised BERT classifier (2 labels), ``hidden / 64`` heads."""
    return BertForSequenceClassification(BertConfig(
        vocab_size=args.vocab_size, hidden_size=args.hidden, num_hidden_layers=num_layers,
        num_attention_heads=args.hidden // 64, intermediate_size=4 * args.hidden, num_labels=2,
    ))


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


def student_update(setup):
    """Student step on L_S against the teacher's logits (teacher in eval mode, no grad)."""
    setup.teacher.eval()
    setup.student.train()
    with torch.no_grad():
        teacher_logits = forward(setup.teacher, setup.batch).logits
    student_out = forward(setup.student, setup.batch)
    lgtm_student_loss(student_out.logits, teacher_logits, student_out.loss,
                      alpha_kd=ALPHA_KD, temperature=TEMPERATURE).backward()
    setup.student_optimizer.step()
    setup.student_optimizer.zero_grad()


def prokt_teacher_update(setup):
    """Teacher step on L_T against the student's logits (student in eval mode, no grad)."""
    setup.teacher.train()
    setup.student.eval()
    with torch.no_grad():
        student_logits = forward(setup.student, setup.batch).logits
    teacher_out = forward(setup.teacher, setup.batch)
    lgtm_teacher_loss(teacher_out.logits, student_logits, teacher_out.loss,
                      t_alpha_kd=T_ALPHA_KD, temperature=TEMPERATURE).backward()
    setup.teacher_optimizer.step()
    setup.teacher_optimizer.zero_grad()


def lgtm_teacher_update(setup, teacher_grads=lgtm_teacher_grads):
    """Teacher step on the LGTM gradient (both models in train mode when it is computed)."""
    setup.teacher.train()
    setup.student.train()
    grads = teacher_grads(
        setup.teacher, setup.student, setup.batch, setup.quiz_batch, setup.student_optimizer,
        alpha_kd=ALPHA_KD, t_alpha_kd=T_ALPHA_KD, temperature=TEMPERATURE,
        teacher_lr=setup.teacher_optimizer.param_groups[0]["lr"])
    for param, grad in zip(setup.teacher.parameters(), grads):
        param.grad = grad
    del grads
    setup.teacher_optimizer.step()
    setup.teacher_optimizer.zero_grad()


METHODS = {
    "KD": [student_update],
    "ProKT": [prokt_teacher_update, student_update],
    "LGTM": [lgtm_teacher_update, student_update],
    "LGTM (released)": [lambda setup: lgtm_teacher_update(setup, released_lgtm_teacher_grads),
                        student_update],
}


def worker(method, args):
    """Build the setup, take the warm-up steps, print "ready"; then take one step per "step"
    line on stdin, printing its seconds; at the end of stdin print the memory as JSON."""
    setup = make_setup(args)
    memory_before = peak_memory_gb(args.device)
    for _ in range(args.warmup):
        timed_step(method, setup, args.device)
    print("ready", flush=True)
    for _ in sys.stdin:
        print(timed_step(method, setup, args.device), flush=True)
    print(json.dumps({"memory_before": memory_before, "peak_memory": peak_memory_gb(args.device)}))


def timed_step(method, setup, device):
    """Seconds of one training step of ``method``."""
    synchronize(device)
    start = time.perf_counter()
    for update in METHODS[method]:
        update(setup)
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
        workers[method] = subprocess.Popen([sys.executable, __file__, *argv, "--worker", method],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
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
    parser.add_argument("--teacher_layers", type=int, default=6)
    parser.add_argument("--student_layers", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=384, help="hidden size (heads = hidden / 64)")
    parser.add_argument("--vocab_size", type=int, default=30522)
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
