"""One table: the project's training steps ("ours") against the released code's pipeline ("reference").

    python benchmarks/run_all.py --sst2_dir glue_data/SST-2 [--batch_size 16] [--steps 2] [--warmup 1]
                                 [--teacher_layers 6] [--student_layers 3] [--hidden 384] [--no_memory]

Rows (REFERENCE.md sections 1 and 2), each a full training step on SST-2 sentences (a new batch
every step, its collation included):
  one-to-one distillation  DistilBERT student, frozen BERT teacher, the paper's loss
                           (alpha_task 0.5, alpha_corr 0.005, do_mask)
  teacher fine-tuning      the BERT teacher on the task loss
  KD step                  LGTM paper's KD: student update against a frozen teacher (alpha_kd 1, T 1)
  ProKT step               teacher update (t_alpha_kd 0.4), then the student update
  LGTM step                LGTM teacher update, then the student update; the quiz batches cycle through
                           dev.tsv as run_lgtm_glue.py draws them (ours: grouped by length, as with
                           --group_by_length; SST-2 dev sentences are about twice as long as train ones)
  LGTM step, quiz = x      the same with the training batch itself as the quiz batch: quiz and training
                           batches of one shape, as in the released code (both padded to 128), so that
                           LGTM / ProKT measures the method's own cost (the 2.1x target)
  LGTM training            the same stream of LGTM steps, examples over the summed time of all its
                           timed steps (a throughput, where the other rows take the median step)

Pipelines:
  ours       dynamic padding, batches grouped by length (utils.loop.epoch_batches with lengths=),
             bf16 autocast on CUDA (float32 on the CPU), fused AdamW on CUDA (utils.loop.make_optimizer),
             token rows by boolean indexing (losses.OneToOneLoss), the distillation row's teacher outputs
             looked up in a utils.teacher_cache.TeacherCache filled before timing (not recomputed),
             the functional LGTM teacher gradient (utils.lgtm.lgtm_teacher_grads)
  reference  benchmarks/reference_pipeline.py: random batches padded to 128, float32, masked_select
             token rows, the teacher forward on every step, plain AdamW, a deep copy of the student per
             LGTM step (released_lgtm_teacher_grads of benchmarks/lgtm_step.py)

Time split (perf_counter between phases, torch.cuda.synchronize first on CUDA), shares of the step:
  data     collating the batch (and the quiz batch) and moving it to the device
  teacher  forwards without gradient that give targets: the frozen teacher (ours distillation: the
           cache lookup), and in ProKT/LGTM the student's logits for the teacher update
  fwd+bwd  forward and backward of the trained model(s); LGTM: the whole teacher-gradient computation
  loss     the distillation loss terms, forward and backward: they are evaluated on detached leaf
           copies of the logits / last hidden states, whose gradients are then passed into the model's
           backward together with the task loss (the same gradients as one backward of the full loss)
  optim    optimizer step and zero_grad
Model FLOPs of each step (benchmarks/flops.py, counted on the batches' padded shapes) give TFLOP/s
and, for ours, the model FLOPs utilisation against --peak_tflops (default: the bf16 peak of a known
CUDA GPU). The MFU of the distillation step at BERT-base -> 6-layer student shapes:
    python benchmarks/run_all.py --sst2_dir glue_data/SST-2 --hidden 768 --heads 12 --teacher_layers 12 \
        --student_layers 6 --batch_size 32 --rows "one-to-one distillation"
The configurations take turns step by step, so that a busy machine slows them alike. Peak memory:
CUDA max allocated, or on the CPU the peak RSS, of a child process that runs only that
configuration (one step, optimizer state included), started before this process builds anything.
"""

import argparse
import contextlib
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distillation_throughput import PAPER_LOSS, build_tokenizer  # noqa: E402
from flops import BF16_PEAK_TFLOPS, batch_flops, peak_tflops  # noqa: E402
from reference_pipeline import (  # noqa: E402
    MAX_SEQ_LENGTH,
    reference_collator,
    reference_optimizer,
    released_lgtm_teacher_grads,
    released_one_to_one_loss,
)

from losses import OneToOneLoss  # noqa: E402
from utils.features import PadCollator, model_inputs, tokenize_examples  # noqa: E402
from utils.glue_data import read_glue_tsv  # noqa: E402
from utils.lgtm import forward, lgtm_student_loss, lgtm_teacher_grads, lgtm_teacher_loss  # noqa: E402
from utils.models import forward_arguments  # noqa: E402
from utils.teacher_cache import TeacherCache  # noqa: E402
from utils.loop import epoch_batches, make_optimizer  # noqa: E402
from utils.runtime import Runtime  # noqa: E402

ROWS = ("one-to-one distillation", "teacher fine-tuning", "KD step", "ProKT step", "LGTM step",
        "LGTM step, quiz = x")
LGTM_ROWS = ("LGTM step", "LGTM step, quiz = x")
PIPELINES = ("ours", "reference")
PHASES = ("data", "teacher", "fwd+bwd", "loss", "optim")
ALPHA_KD, T_ALPHA_KD, TEMPERATURE = 1.0, 0.4, 1.0
LEARNING_RATES = {"one-to-one distillation": 5e-5, "teacher fine-tuning": 2e-5}
LGTM_LEARNING_RATE = 3e-5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sst2_dir", required=True, help="a glue_data/SST-2 folder (train.tsv and dev.tsv are read)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per configuration first")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--teacher_layers", type=int, default=6)
    parser.add_argument("--student_layers", type=int, default=3)
    parser.add_argument("--vocab_size", type=int, default=8000, help="WordPiece vocabulary trained on the sentences")
    parser.add_argument("--pool_chunks", type=int, default=2,
                        help="training sentences drawn: pool_chunks * 50 batches (length grouping sorts chunks "
                             "of 50 batches)")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), metavar="ROW",
                        help=f"rows to run (default all): {', '.join(ROWS)}")
    parser.add_argument("--no_memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="the device's peak TFLOP/s in ours' number format, for the MFU column (default: the "
                             "bf16 dense peak of a known CUDA GPU: " + ", ".join(BF16_PEAK_TFLOPS) + ")")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory_of", default=None, help=argparse.SUPPRESS)  # "row|pipeline": a memory child
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- data


def prepare_data(args):
    """Tokenizer, a random pool of SST-2 training sentences (features with labels and
    example_index), the dev sentences for the quiz batches, and each pipeline's batches."""
    examples = read_glue_tsv("sst2", args.sst2_dir, "train")
    tokenizer = build_tokenizer([example["text_a"] for example in examples], args.vocab_size)
    pool_size = min(len(examples), args.pool_chunks * 50 * args.batch_size)
    pool = random.Random(0).sample(range(len(examples)), pool_size)
    features = tokenize_examples(tokenizer, [examples[i] for i in pool], MAX_SEQ_LENGTH)
    for index, (feature, example) in enumerate(zip(features, pool)):
        feature["labels"] = examples[example]["label"]
        feature["example_index"] = index
    dev = read_glue_tsv("sst2", args.sst2_dir, "validation")
    quiz_features = tokenize_examples(tokenizer, dev, MAX_SEQ_LENGTH)
    for feature, example in zip(quiz_features, dev):
        feature["labels"] = example["label"]
    needed = args.warmup + args.steps
    lengths = [len(feature["input_ids"]) for feature in features]
    batches = {
        "ours": representative(epoch_batches(len(features), args.batch_size, seed=0, epoch=0, lengths=lengths),
                               lengths, needed),
        "reference": epoch_batches(len(features), args.batch_size, seed=0, epoch=0)[:needed],
    }
    if any(len(pipeline_batches) < needed for pipeline_batches in batches.values()):
        sys.exit(f"{pool_size} sentences give fewer than {needed} batches: raise --pool_chunks")
    quiz_lengths = [len(feature["input_ids"]) for feature in quiz_features]
    grouped_quiz = epoch_batches(len(quiz_features), args.batch_size, seed=1, epoch=0, lengths=quiz_lengths)
    quiz = {
        "ours": [[quiz_features[i] for i in grouped_quiz[step % len(grouped_quiz)]] for step in range(needed)],
        "reference": [[quiz_features[(step * args.batch_size + j) % len(quiz_features)]
                       for j in range(args.batch_size)] for step in range(needed)],
    }
    return SimpleNamespace(tokenizer=tokenizer, features=features, lengths=lengths, batches=batches, quiz=quiz)


def representative(batches, lengths, count):
    """``count`` of the length-grouped ``batches`` at evenly spaced quantiles of their token
    counts (in epoch order): a few grouped batches taken from the start of an epoch could all be
    short (or long) ones, which would bias examples/s."""
    by_tokens = sorted(range(len(batches)), key=lambda b: sum(lengths[i] for i in batches[b]))
    chosen = sorted({by_tokens[int((k + 0.5) * len(batches) / count)] for k in range(count)})
    return [batches[b] for b in chosen]


class Pipeline:
    """How one pipeline collates, moves, computes in and optimizes."""

    def __init__(self, name, data, device):
        self.name, self.data, self.device = name, data, device
        self.ours = name == "ours"
        pad_id = data.tokenizer.pad_token_id
        self.collate = PadCollator({"": pad_id}, MAX_SEQ_LENGTH) if self.ours else reference_collator(pad_id)
        self.amp = torch.bfloat16 if self.ours and device.type == "cuda" else None

    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _to_device(self, batch):
        return {key: value.to(self.device, non_blocking=self.ours) for key, value in batch.items()}

    def batch(self, step):
        indices = self.data.batches[self.name][step]
        return self._to_device(self.collate([self.data.features[i] for i in indices]))

    def quiz_batch(self, step):
        return self._to_device(self.collate(self.data.quiz[self.name][step]))

    def optimizer(self, model, lr):
        if self.ours:
            return make_optimizer(model, SimpleNamespace(weight_decay=0.0, learning_rate=lr, adam_epsilon=1e-8))
        return reference_optimizer(model.parameters(), lr)


class Timer:
    """Seconds per phase: ``mark(phase)`` charges the time since the previous mark to ``phase``."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._synchronize()
        self.last = time.perf_counter()

    def _synchronize(self):
        if self.cuda:
            torch.cuda.synchronize()

    def mark(self, phase):
        self._synchronize()
        now = time.perf_counter()
        self.seconds[phase] += now - self.last
        self.last = now


# --------------------------------------------------------------------------- models and steps


def bert(args, vocab_size, num_layers, device):
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(
        vocab_size=vocab_size, hidden_size=args.hidden, num_hidden_layers=num_layers,
        num_attention_heads=args.heads, intermediate_size=4 * args.hidden, num_labels=2)).to(device)


def distilbert(args, vocab_size, device):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    return DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=vocab_size, dim=args.hidden, n_layers=args.student_layers, n_heads=args.heads,
        hidden_dim=4 * args.hidden, num_labels=2)).to(device)


def zero_classifier(model):
    """``--init_classifier_to_zero``."""
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    return model


def backward_through(task_weight, task_loss, output, leaf):
    """The model's backward of ``task_weight * task_loss + loss_terms(output)``, where the loss
    terms were already back-propagated to ``leaf`` (a detached copy of ``output``)."""
    torch.autograd.backward([task_weight * task_loss, output], [None, leaf.grad])


def student_update(pipe, teacher, student, optimizer, batch, timer):
    """KD / ProKT / LGTM student step: L_S against the teacher's logits (teacher in eval mode)."""
    teacher.eval()
    student.train()
    with torch.no_grad(), pipe.autocast():
        teacher_logits = forward(teacher, batch).logits
    timer.mark("teacher")
    with pipe.autocast():
        out = forward(student, batch)
    timer.mark("fwd+bwd")
    leaf = out.logits.detach().requires_grad_()
    lgtm_student_loss(leaf, teacher_logits, out.loss.detach(), alpha_kd=ALPHA_KD, temperature=TEMPERATURE).backward()
    timer.mark("loss")
    backward_through(1 - ALPHA_KD, out.loss, out.logits, leaf)
    timer.mark("fwd+bwd")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    timer.mark("optim")


def prokt_teacher_update(pipe, teacher, student, optimizer, batch, timer):
    """ProKT teacher step: L_T against the student's logits (student in eval mode, no grad)."""
    teacher.train()
    student.eval()
    with torch.no_grad(), pipe.autocast():
        student_logits = forward(student, batch).logits
    timer.mark("teacher")
    with pipe.autocast():
        out = forward(teacher, batch)
    timer.mark("fwd+bwd")
    leaf = out.logits.detach().requires_grad_()
    lgtm_teacher_loss(leaf, student_logits, out.loss.detach(), t_alpha_kd=T_ALPHA_KD,
                      temperature=TEMPERATURE).backward()
    timer.mark("loss")
    backward_through(1 - T_ALPHA_KD, out.loss, out.logits, leaf)
    timer.mark("fwd+bwd")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    timer.mark("optim")


def lgtm_teacher_update(pipe, teacher, student, teacher_optimizer, student_optimizer, batch, quiz_batch, timer):
    """LGTM teacher step: the functional gradient (ours) or the released deep-copy one (reference)."""
    teacher.train()
    student.train()
    teacher_grads = lgtm_teacher_grads if pipe.ours else released_lgtm_teacher_grads
    with pipe.autocast():
        grads = teacher_grads(teacher, student, batch, quiz_batch, student_optimizer, alpha_kd=ALPHA_KD,
                              t_alpha_kd=T_ALPHA_KD, temperature=TEMPERATURE,
                              teacher_lr=teacher_optimizer.param_groups[0]["lr"])
    timer.mark("fwd+bwd")
    for parameter, grad in zip(teacher.parameters(), grads):
        parameter.grad = grad
    del grads
    teacher_optimizer.step()
    teacher_optimizer.zero_grad(set_to_none=True)
    timer.mark("optim")


def build_step(row, pipe, args, vocab_size):
    """``step(index, timer)`` of one configuration; models seeded alike in both pipelines."""
    device = pipe.device
    torch.manual_seed(0)
    if row == "one-to-one distillation":
        teacher = bert(args, vocab_size, args.teacher_layers, device).eval().requires_grad_(False)
        student = distilbert(args, vocab_size, device).train()
        optimizer = pipe.optimizer(student, LEARNING_RATES[row])
        student_args, teacher_args = forward_arguments(student), forward_arguments(teacher)

        def teacher_outputs(batch):
            out = teacher(**model_inputs(batch, teacher_args), output_hidden_states=True)
            return out.logits, out.hidden_states[-1]

        if pipe.ours:
            cache_args = SimpleNamespace(cache_teacher_dtype="float16", cache_teacher_dir=None,
                                         cache_teacher_max_memory_gb=4.0, per_device_eval_batch_size=64)
            cache = TeacherCache.fill(cache_args, Runtime(device, amp_dtype=pipe.amp), teacher, teacher_outputs,
                                      pipe.data.features, pipe.collate, num_logits=2, hidden_width=args.hidden)
        loss_fn = OneToOneLoss(**PAPER_LOSS)

        def step(index, timer):
            batch = pipe.batch(index)
            timer.mark("data")
            if pipe.ours:
                teacher_logits, teacher_hidden = cache(batch)
            else:
                with torch.no_grad():
                    teacher_logits, teacher_hidden = teacher_outputs(batch)
            timer.mark("teacher")
            with pipe.autocast():
                out = student(**model_inputs(batch, student_args), labels=batch["labels"], output_hidden_states=True)
            timer.mark("fwd+bwd")
            hidden = out.hidden_states[-1]
            leaf = hidden.detach().requires_grad_()
            if pipe.ours:
                loss, _ = loss_fn(out.loss.detach(), out.logits.detach(), teacher_logits, leaf, teacher_hidden,
                                  batch["attention_mask"])
            else:
                loss = released_one_to_one_loss(out.loss.detach(), leaf, teacher_hidden, batch["attention_mask"],
                                                alpha_task=PAPER_LOSS["alpha_task"],
                                                alpha_corr=PAPER_LOSS["alpha_corr"], do_mask=PAPER_LOSS["do_mask"])
            loss.backward()
            timer.mark("loss")
            backward_through(PAPER_LOSS["alpha_task"], out.loss, hidden, leaf)
            timer.mark("fwd+bwd")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            timer.mark("optim")
            return batch_flops(student, batch, 3) + (0 if pipe.ours else batch_flops(teacher, batch, 1))

        return step

    if row == "teacher fine-tuning":
        teacher = bert(args, vocab_size, args.teacher_layers, device).train()
        optimizer = pipe.optimizer(teacher, LEARNING_RATES[row])

        def step(index, timer):
            batch = pipe.batch(index)
            timer.mark("data")
            with pipe.autocast():
                out = forward(teacher, batch)
            out.loss.backward()
            timer.mark("fwd+bwd")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            timer.mark("optim")
            return batch_flops(teacher, batch, 3)

        return step

    trains_teacher = row != "KD step"
    teacher = bert(args, vocab_size, args.teacher_layers, device)
    student = bert(args, vocab_size, args.student_layers, device)
    if trains_teacher:  # --train_teacher --init_classifier_to_zero
        zero_classifier(teacher)
        zero_classifier(student)
        teacher_optimizer = pipe.optimizer(teacher, LGTM_LEARNING_RATE)
    else:
        teacher.eval().requires_grad_(False)
    student_optimizer = pipe.optimizer(student, LGTM_LEARNING_RATE)

    def step(index, timer):
        batch = pipe.batch(index)
        quiz_batch = pipe.quiz_batch(index) if row == "LGTM step" else batch
        timer.mark("data")
        if row == "ProKT step":
            prokt_teacher_update(pipe, teacher, student, teacher_optimizer, batch, timer)
        elif row in LGTM_ROWS:
            lgtm_teacher_update(pipe, teacher, student, teacher_optimizer, student_optimizer, batch, quiz_batch,
                                timer)
        student_update(pipe, teacher, student, student_optimizer, batch, timer)
        return step_flops(row, pipe, teacher, student, batch, quiz_batch)

    return step


def step_flops(row, pipe, teacher, student, batch, quiz_batch):
    """Model FLOPs of a KD, ProKT or LGTM step, in forwards' worth of each model (benchmarks/flops.py).

    Student update (every method): teacher forward, student forward and backward.
    ProKT teacher update: student forward, teacher forward and backward.
    LGTM teacher update, ours: both models' forward and backward on x, the look-ahead student's
    on q, two perturbed student forwards and a teacher forward and VJP on x. Released: both
    forwards on x, one backward each, the copy's forward and backward on q, and twice a student
    forward with a teacher forward and backward on x.
    """
    teacher_passes, student_passes, quiz_passes = 1, 3, 0
    if row == "ProKT step":
        teacher_passes, student_passes = teacher_passes + 3, student_passes + 1
    elif row in LGTM_ROWS and pipe.ours:
        teacher_passes, student_passes, quiz_passes = teacher_passes + 3 + 3, student_passes + 3 + 2, 3
    elif row in LGTM_ROWS:
        teacher_passes, student_passes, quiz_passes = teacher_passes + 3 + 2 * 3, student_passes + 3 + 2 * 1, 3
    return (batch_flops(teacher, batch, teacher_passes) + batch_flops(student, batch, student_passes)
            + batch_flops(student, quiz_batch, quiz_passes))


# --------------------------------------------------------------------------- measuring


def memory_child(args):
    """Run one step of one configuration and print its peak memory in GB."""
    row, pipeline = args.memory_of.split("|")
    device = torch.device(args.device)
    data = prepare_data(args)
    step = build_step(row, Pipeline(pipeline, data, device), args, len(data.tokenizer))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step(0, Timer(device))
    if device.type == "cuda":
        print(torch.cuda.max_memory_allocated() / 1e9)
    else:
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9)


def peak_memories(args, argv, configurations):
    """One child process per configuration, run one after the other."""
    peaks = {}
    for row, pipeline in configurations:
        done = subprocess.run([sys.executable, __file__, *argv, "--memory_of", f"{row}|{pipeline}"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"the memory run of {row} ({pipeline}) failed:\n{done.stderr[-3000:]}")
        peaks[(row, pipeline)] = float(done.stdout.strip().splitlines()[-1])
    return peaks


def summarize(records, examples, tokens):
    """Median step, examples/s and real tokens/s at the median, phase shares of the summed time,
    model TFLOP/s over the summed time. ``records``: (seconds per phase, model FLOPs) per step."""
    totals = [sum(seconds.values()) for seconds, _ in records]
    median = statistics.median(totals)
    shares = {phase: sum(seconds[phase] for seconds, _ in records) / sum(totals) for phase in PHASES}
    return dict(seconds=median, examples=statistics.mean(examples) / median, tokens=statistics.mean(tokens) / median,
                shares=shares, stream=sum(examples) / sum(totals),
                tflops=sum(flops for _, flops in records) / sum(totals) / 1e12)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.memory_of:
        memory_child(args)
        return
    configurations = [(row, pipeline) for row in args.rows for pipeline in PIPELINES]
    start = time.perf_counter()
    # measured first: a child started by a grown parent would inherit the parent's peak RSS
    peaks = {} if args.no_memory else peak_memories(args, argv, configurations)
    memory_seconds = time.perf_counter() - start

    device = torch.device(args.device)
    data = prepare_data(args)
    pipelines = {name: Pipeline(name, data, device) for name in PIPELINES}
    steps = {(row, pipeline): build_step(row, pipelines[pipeline], args, len(data.tokenizer))
             for row, pipeline in configurations}
    records = {configuration: [] for configuration in configurations}
    # the configurations take turns, step by step, so that a busy machine slows them alike
    for index in range(args.warmup + args.steps):
        for configuration, step in steps.items():
            timer = Timer(device)
            flops = step(index, timer)
            if index >= args.warmup:
                records[configuration].append((timer.seconds, flops))
    timed = range(args.warmup, args.warmup + args.steps)
    results = {}
    for row, pipeline in configurations:
        batches = [data.batches[pipeline][index] for index in timed]
        results[(row, pipeline)] = summarize(records[(row, pipeline)], [len(batch) for batch in batches],
                                             [sum(data.lengths[i] for i in batch) for batch in batches])
    print_table(args, results, peaks, device, time.perf_counter() - start, memory_seconds, data)


def print_table(args, results, peaks, device, total_seconds, memory_seconds, data):
    rows = list(args.rows) + (["LGTM training"] if "LGTM step" in args.rows else [])
    ours_dtype = "bf16 autocast" if device.type == "cuda" else "float32"
    print(f"device {device} ({torch.get_num_threads()} CPU threads), batch {args.batch_size}, teacher BERT "
          f"{args.teacher_layers}x{args.hidden}, students DistilBERT/BERT {args.student_layers}x{args.hidden}, "
          f"WordPiece vocab {args.vocab_size} trained on SST-2; median of {args.steps} steps after {args.warmup} "
          f"warm-up, configurations interleaved step by step")
    print(f"ours: dynamic padding + group_by_length, {ours_dtype}; reference: pad to {MAX_SEQ_LENGTH}, random "
          f"batches, float32, masked_select rows, teacher forward every step, deep-copy LGTM")
    peak = peak_tflops(device, args.peak_tflops)
    header = (f"{'row':<24} {'pipeline':<9} {'ex/s':>7} {'tok/s':>7} {'ms/step':>8} {'TFLOP/s':>8} {'MFU':>6} | "
              + " ".join(f"{phase:>7}" for phase in PHASES) + f" | {'peak GB':>7} {'ours/ref':>8}")
    print(header)
    print("-" * len(header))
    for row in rows:
        source = "LGTM step" if row == "LGTM training" else row
        for pipeline in PIPELINES:
            result = results[(source, pipeline)]
            if row == "LGTM training":
                speed, ratio = result["stream"], result["stream"] / results[(source, "reference")]["stream"]
                tokens, step_ms, tflops, mfu = "", "", "", ""
            else:
                speed, ratio = result["examples"], result["examples"] / results[(source, "reference")]["examples"]
                tokens, step_ms = f"{result['tokens']:.0f}", f"{1000 * result['seconds']:.0f}"
                tflops = f"{result['tflops']:.3g}"
                mfu = f"{result['tflops'] / peak:.1%}" if peak and pipeline == "ours" else "n/a"
            memory = f"{peaks[(source, pipeline)]:.2f}" if (source, pipeline) in peaks else "n/a"
            shares = " ".join(f"{result['shares'][phase]:>7.1%}" for phase in PHASES)
            print(f"{row:<24} {pipeline:<9} {speed:>7.1f} {tokens:>7} {step_ms:>8} {tflops:>8} {mfu:>6} | {shares} | "
                  f"{memory:>7} {(f'{ratio:.2f}x' if pipeline == 'ours' else ''):>8}")
    print()
    print(f"{'target':<58} {'measured':>9} {'target':>8} {'met':>4}")

    def target(name, measured, goal, text, at_least):
        met = measured >= goal if at_least else measured <= goal
        print(f"{name:<58} {text(measured):>9} {('>= ' if at_least else '<= ') + text(goal):>8} "
              f"{'yes' if met else 'NO':>4}")

    times = lambda value: f"{value:.2f}x"  # noqa: E731
    timed = range(args.warmup, args.warmup + args.steps)
    quiz_tokens = {pipeline: statistics.mean(len(feature["input_ids"]) for index in timed
                                             for feature in data.quiz[pipeline][index]) for pipeline in PIPELINES}
    train_tokens = statistics.mean(data.lengths[i] for index in timed for i in data.batches["ours"][index])
    if "one-to-one distillation" in args.rows:
        ours, reference = results[("one-to-one distillation", "ours")], results[("one-to-one distillation", "reference")]
        target("one-to-one distillation: ours / reference examples/s", ours["examples"] / reference["examples"], 5.0,
               times, True)
        target("one-to-one distillation: loss terms share of ours' step", ours["shares"]["loss"], 0.05,
               lambda value: f"{value:.1%}", False)
        if peak:
            print(f"{'one-to-one distillation: model FLOPs utilisation (ours)':<58} {ours['tflops'] / peak:>9.1%}  "
                  f"no target: {ours['tflops']:.3g} of {peak:g} TFLOP/s")
    if "LGTM step, quiz = x" in args.rows and "ProKT step" in args.rows:
        target("LGTM step, quiz = x / ProKT step (ours, median step)",
               results[("LGTM step, quiz = x", "ours")]["seconds"] / results[("ProKT step", "ours")]["seconds"], 2.1,
               times, False)
        ratio = (results[("LGTM step, quiz = x", "reference")]["seconds"]
                 / results[("ProKT step", "reference")]["seconds"])
        print(f"{'LGTM step, quiz = x / ProKT step (reference, median step)':<58} {times(ratio):>9}  no target: "
              f"the released code's ratio")
    if "LGTM step" in args.rows and "ProKT step" in args.rows:
        ratio = results[("LGTM step", "ours")]["seconds"] / results[("ProKT step", "ours")]["seconds"]
        print(f"{'LGTM step (dev.tsv quiz) / ProKT step (ours, median step)':<58} {times(ratio):>9}  no target: "
              f"its quiz batches average {quiz_tokens['ours']:.1f} real tokens a sentence, the training batches "
              f"{train_tokens:.1f}")
    if "LGTM step" in args.rows:
        target("LGTM training: ours / released examples/s",
               results[("LGTM step", "ours")]["stream"] / results[("LGTM step", "reference")]["stream"], 3.0,
               times, True)
    print()
    print("phases in % of the step (see the docstring): data = collate + to device; teacher = no-grad target "
          "forwards (ours distillation: teacher-cache lookup); fwd+bwd = trained model(s), LGTM's teacher "
          "gradient included; loss = distillation loss terms on detached leaves, forward + backward; "
          "optim = optimizer step")
    if "LGTM step" in args.rows:
        print("LGTM training: examples over the summed time of the timed LGTM steps (each on a new SST-2 batch, "
              "quiz batches cycled from dev.tsv)")
    print("peak memory: "
          + ("n/a (--no_memory)" if not peaks else "torch.cuda.max_memory_allocated" if device.type == "cuda"
             else "peak RSS of a child process running only that configuration (1 step; includes the ~0.3 GB "
                  "of torch itself)"))
    print("TFLOP/s: model FLOPs (benchmarks/flops.py: the matrix products on the padded batches) over the summed "
          "step time; MFU (ours): TFLOP/s over "
          + (f"a peak of {peak:g} TFLOP/s" if peak else "the device's peak, n/a: give --peak_tflops"))
    print(f"wall time {total_seconds:.0f} s, of which {memory_seconds:.0f} s in the memory children")


if __name__ == "__main__":
    main()
