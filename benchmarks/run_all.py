"""One table: the project's training steps ("ours") against the released code's pipeline ("reference").

    python -m benchmarks.run_all --sst2_dir glue_data/SST-2 [--batch_size 16] [--steps 2] [--warmup 1]
                                 [--teacher_layers 6] [--student_layers 3] [--hidden 384] [--no_memory]

Rows, each a full training step on SST-2 sentences (a new batch every step, its collation included):
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
  ours       the functions the scripts run: the loop's micro-batch backward and optimizer step
             (utils.engine.loop.backward_micro_batch, optimizer_step: clipping, fused AdamW, the linear
             schedule) around each script's compute_loss (utils.engine.models.fine_tuning_loss,
             utils.methods.one_to_one.classifier_distillation_loss with its teacher's utils.methods.teacher_cache.TeacherCache
             filled before timing, utils.methods.lgtm.online_student_loss) and run_lgtm_glue.py's teacher update
             (utils.methods.lgtm.TeacherStep, the loop's micro_batch_hook; LGTM's quiz batches drawn by
             utils.methods.lgtm.QuizBatches); dynamic padding, batches grouped by length (utils.engine.loop.epoch_batches
             with lengths=), bf16 autocast on CUDA (float32 on the CPU)
  reference  benchmarks/reference_pipeline.py: random batches padded to 128, float32, masked_select
             token rows, the teacher forward on every step, plain AdamW, a deep copy of the student per
             LGTM step (released_lgtm_teacher_grads)

Time split (perf_counter between phases, torch.cuda.synchronize first on CUDA), shares of the step:
  data      collating the batch (and the reference's quiz batch) and moving it to the device
  teacher   forwards without gradient that give the student's targets: the frozen teacher (ours
            distillation: the cache lookup), the KD/ProKT/LGTM teacher's logits
  t-update  ProKT/LGTM: the teacher's whole update (its gradient, LGTM's quiz batch included, and its
            optimizer step)
  fwd+bwd   forward and backward of the trained student (or of the fine-tuned teacher)
  optim     clipping, optimizer step and zero_grad
The share of ours' distillation step spent in its loss terms is measured as the time the step loses
against the same step with the task loss alone ("ours, task loss only", timed with the others),
the teacher lookup left out: (paper step - its teacher phase - task-only step) / paper step.
Model FLOPs of each step (benchmarks/flops.py, counted on the batches' padded shapes) give TFLOP/s
and, for ours, the model FLOPs utilisation against --peak_tflops (default: the bf16 peak of a known
CUDA GPU). The MFU of the distillation step at BERT-base -> 6-layer student shapes:
    python -m benchmarks.run_all --sst2_dir glue_data/SST-2 --hidden 768 --heads 12 --teacher_layers 12 \
        --student_layers 6 --batch_size 32 --rows "one-to-one distillation"
The configurations take turns step by step, so that a busy machine slows them alike. Peak memory
of a configuration, its optimizer state included: on CUDA, the max allocated while it is built and
takes its first step (its first warm-up step), less what was allocated before; on the CPU, the
peak RSS of a child process that runs only that configuration for one step, started before this
process builds anything. --torch_compile compiles ours' trained forward as the scripts do.
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

from benchmarks import reference_pipeline as reference
from benchmarks.common import (
    PAPER_LOSS,
    LoopStep,
    QuizSource,
    add_model_shape_args,
    bert,
    build_tokenizer,
    distilbert,
    marked,
    training_options,
    zero_classifier,
)
from benchmarks.flops import BF16_PEAK_TFLOPS, batch_flops, peak_tflops
from benchmarks.reference_pipeline import MAX_SEQ_LENGTH
from losses import OneToOneLoss
from utils.engine.features import PadCollator, tokenize_examples
from utils.engine.loop import epoch_batches, make_scheduler
from utils.engine.models import fine_tuning_loss
from utils.engine.runtime import Runtime, move_to_device
from utils.methods.lgtm import (
    QuizBatches,
    TeacherStep,
    online_student_loss,
    teacher_logits_of,
)
from utils.methods.one_to_one import StudentAndTeacher, classifier_distillation_loss, classifier_teacher_outputs
from utils.methods.teacher_cache import TeacherCache
from utils.tasks.glue_data import get_task, read_glue_tsv

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("one-to-one distillation", "teacher fine-tuning", "KD step", "ProKT step", "LGTM step",
        "LGTM step, quiz = x")
LGTM_ROWS = ("LGTM step", "LGTM step, quiz = x")
PIPELINES = ("ours", "reference")
PHASES = ("data", "teacher", "t-update", "fwd+bwd", "optim")
TASK_ONLY = "ours, task loss only"  # the distillation row's step without the distillation terms
ALPHA_KD, T_ALPHA_KD, TEMPERATURE = 1.0, 0.4, 1.0
LEARNING_RATES = {"one-to-one distillation": 5e-5, "teacher fine-tuning": 2e-5}
LGTM_LEARNING_RATE = 3e-5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sst2_dir", "--data_dir", dest="sst2_dir", required=True,
                        help="the task's glue_data folder, e.g. glue_data/SST-2 (train.tsv and dev.tsv are read)")
    parser.add_argument("--task", default="sst2", choices=("sst2", "qnli", "rte", "mrpc"),
                        help="a two-label GLUE task (default sst2; qnli for sentence pairs of MNLI-like length)")
    parser.add_argument("--model_vocab_size", type=int, default=None,
                        help="the models' embedding rows (default: the tokenizer's size), e.g. 30522 for BERT-base")
    parser.add_argument("--ours_dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                        help="ours' autocast (default auto: bfloat16 on CUDA, float32 on the CPU)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per configuration first")
    add_model_shape_args(parser, vocab_help="WordPiece vocabulary trained on the sentences")
    parser.add_argument("--pool_chunks", type=int, default=2,
                        help="training sentences drawn: pool_chunks * 50 batches (length grouping sorts chunks "
                             "of 50 batches)")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), metavar="ROW",
                        help=f"rows to run (default all): {', '.join(ROWS)}")
    parser.add_argument("--no_memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--torch_compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                        help="ours: the trained model's forward compiled with torch.compile (backend BACKEND, default "
                             "inductor), as the scripts' --torch_compile; the warm-up steps take the compilation")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="the device's peak TFLOP/s in ours' number format, for the MFU column (default: the "
                             "bf16 dense peak of a known CUDA GPU: " + ", ".join(BF16_PEAK_TFLOPS) + ")")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory_of", default=None, help=argparse.SUPPRESS)  # "row|pipeline": a memory child
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- data


class NotEnoughData(Exception):
    """The training sentences give fewer batches than a configuration's steps need."""


def prepare_data(args):
    """Tokenizer, a random pool of SST-2 training sentences (features with labels and
    example_index), the dev sentences for the quiz batches, and each pipeline's batches; made once
    per process for the same data options (the GPU check checks every configuration's data before
    it times the first). Raises NotEnoughData when the pool gives too few batches."""
    key = (args.task, str(Path(args.sst2_dir).resolve()), args.vocab_size, args.batch_size, args.pool_chunks,
           args.warmup + args.steps)
    if key not in _PREPARED:
        _PREPARED[key] = _prepare_data(args)
    return _PREPARED[key]


_PREPARED = {}


def _prepare_data(args):
    examples = read_glue_tsv(args.task, args.sst2_dir, "train")
    tokenizer = build_tokenizer([text for example in examples for text in (example["text_a"], example["text_b"])
                                 if text], args.vocab_size)
    pool_size = min(len(examples), args.pool_chunks * 50 * args.batch_size)
    pool = random.Random(0).sample(range(len(examples)), pool_size)
    features = tokenize_examples(tokenizer, [examples[i] for i in pool], MAX_SEQ_LENGTH)
    for index, (feature, example) in enumerate(zip(features, pool)):
        feature["labels"] = examples[example]["label"]
        feature["example_index"] = index
    dev = read_glue_tsv(args.task, args.sst2_dir, "validation")
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
        raise NotEnoughData(f"{args.task} in {args.sst2_dir}: {pool_size} sentences give fewer than {needed} batches "
                            f"of {args.batch_size}: raise --pool_chunks or give more training rows")
    quiz_lengths = [len(feature["input_ids"]) for feature in quiz_features]
    # ours draws its quiz batches with utils.methods.lgtm.QuizBatches (seed 1, grouped by length): these are its first ones
    grouped_quiz = epoch_batches(len(quiz_features), args.batch_size, seed=1, epoch=0, lengths=quiz_lengths)
    quiz = {
        "ours": [[quiz_features[i] for i in grouped_quiz[step % len(grouped_quiz)]] for step in range(needed)],
        "reference": [[quiz_features[(step * args.batch_size + j) % len(quiz_features)]
                       for j in range(args.batch_size)] for step in range(needed)],
    }
    return SimpleNamespace(tokenizer=tokenizer, features=features, lengths=lengths, batches=batches, quiz=quiz,
                           quiz_features=quiz_features)


def representative(batches, lengths, count):
    """``count`` of the length-grouped ``batches`` at evenly spaced quantiles of their token
    counts (in epoch order): a few grouped batches taken from the start of an epoch could all be
    short (or long) ones, which would bias examples/s."""
    by_tokens = sorted(range(len(batches)), key=lambda b: sum(lengths[i] for i in batches[b]))
    chosen = sorted({by_tokens[int((k + 0.5) * len(batches) / count)] for k in range(count)})
    return [batches[b] for b in chosen]


class Pipeline:
    """How one pipeline collates and moves its batches, and computes: ours as the scripts do
    (dynamic padding, bf16 autocast on CUDA), the reference as released (padded to 128, float32)."""

    def __init__(self, name, data, device, ours_dtype="auto"):
        self.name, self.data, self.device = name, data, device
        self.ours = name != "reference"
        bf16 = ours_dtype == "bfloat16" or (ours_dtype == "auto" and device.type == "cuda")
        self.runtime = Runtime(device, amp_dtype=torch.bfloat16 if self.ours and bf16 else None)
        pad_id = data.tokenizer.pad_token_id
        self.collate = (PadCollator({"": pad_id}, MAX_SEQ_LENGTH, pad_to_multiple_of=self.runtime.pad_multiple)
                        if self.ours else reference.reference_collator(pad_id))

    def _to_device(self, batch):
        if self.ours:
            return move_to_device(batch, self.device)
        return {key: value.to(self.device) for key, value in batch.items()}

    def batch(self, step):
        indices = self.data.batches["ours" if self.ours else "reference"][step]
        return self._to_device(self.collate([self.data.features[i] for i in indices]))

    def quiz_batch(self, step):
        return self._to_device(self.collate(self.data.quiz["reference"][step]))


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


# --------------------------------------------------------------------------- steps


def build_step(row, pipe, args, vocab_size):
    """``step(index, timer)`` of one configuration, returning its model FLOPs; models seeded alike
    in every pipeline. Ours: the scripts' own functions; reference: ``reference_pipeline``."""
    torch.manual_seed(0)
    if row == "one-to-one distillation":
        return distillation_step(pipe, args, vocab_size)
    if row == "teacher fine-tuning":
        return fine_tuning_step(pipe, args, vocab_size)
    return online_step(row, pipe, args, vocab_size)


def distillation_step(pipe, args, vocab_size):
    """The one-to-one distillation row: ``run_glue_w_distillation.py``'s loss with the paper's
    weights from the teacher cache (ours), the task loss alone (ours, task loss only), or the
    released step (reference)."""
    row, device, total_steps = "one-to-one distillation", pipe.device, args.warmup + args.steps
    teacher = bert(vocab_size, args.hidden, args.heads, args.teacher_layers, device).eval().requires_grad_(False)
    student = distilbert(vocab_size, args.hidden, args.heads, args.student_layers, device).train()
    if not pipe.ours:
        optimizer = reference.reference_optimizer(student.parameters(), LEARNING_RATES[row])

        def step(index, timer):
            batch = pipe.batch(index)
            timer.mark("data")
            reference.distillation_step(student, teacher, optimizer, batch, timer.mark,
                                        alpha_task=PAPER_LOSS["alpha_task"], alpha_corr=PAPER_LOSS["alpha_corr"],
                                        do_mask=PAPER_LOSS["do_mask"])
            return batch_flops(student, batch, 3) + batch_flops(teacher, batch, 1)

        return step
    loss_fn = OneToOneLoss(**PAPER_LOSS) if pipe.name == "ours" else OneToOneLoss(alpha_task=1.0)
    pair = StudentAndTeacher(student, teacher, pipe.data.tokenizer)
    teacher_outputs = classifier_teacher_outputs(pair, loss_fn, get_task(args.task),
                                                 SimpleNamespace(omit_teacher_token_type_ids=False))
    cache = None  # the task loss alone does not read the teacher
    if loss_fn.uses_teacher:
        cache_options = SimpleNamespace(cache_teacher_dtype="float16", cache_teacher_dir=None,
                                        cache_teacher_max_memory_gb=4.0, per_device_eval_batch_size=64)
        cache = TeacherCache.fill(cache_options, pipe.runtime, teacher, teacher_outputs, pipe.data.features,
                                  pipe.collate, num_logits=2, hidden_width=args.hidden)
    loop_step = LoopStep(student, pipe.runtime, LEARNING_RATES[row], total_steps, args.torch_compile)

    def step(index, timer):
        batch = pipe.batch(index)
        timer.mark("data")
        targets = None if cache is None else marked(cache, timer.mark, "fwd+bwd", "teacher")
        compute_loss = classifier_distillation_loss(pair, loss_fn, targets)
        loop_step(compute_loss, batch, timer.mark)
        return batch_flops(student, batch, 3)

    return step


def fine_tuning_step(pipe, args, vocab_size):
    """The teacher fine-tuning row: ``run_glue.py``'s loss (ours) or the released step."""
    row, device, total_steps = "teacher fine-tuning", pipe.device, args.warmup + args.steps
    teacher = bert(vocab_size, args.hidden, args.heads, args.teacher_layers, device).train()
    if pipe.ours:
        loop_step = LoopStep(teacher, pipe.runtime, LEARNING_RATES[row], total_steps, args.torch_compile)
    else:
        optimizer = reference.reference_optimizer(teacher.parameters(), LEARNING_RATES[row])

    def step(index, timer):
        batch = pipe.batch(index)
        timer.mark("data")
        if pipe.ours:
            loop_step(fine_tuning_loss(teacher), batch, timer.mark)
        else:
            reference.fine_tuning_step(teacher, optimizer, batch, timer.mark)
        return batch_flops(teacher, batch, 3)

    return step


def online_step(row, pipe, args, vocab_size):
    """A KD, ProKT or LGTM row: ``run_lgtm_glue.py``'s student loss and ``TeacherStep`` as the
    loop's micro_batch_hook (ours), or the released updates (reference)."""
    device, total_steps = pipe.device, args.warmup + args.steps
    trains_teacher = row != "KD step"
    teacher = bert(vocab_size, args.hidden, args.heads, args.teacher_layers, device)
    student = bert(vocab_size, args.hidden, args.heads, args.student_layers, device)
    if trains_teacher:  # --train_teacher --init_classifier_to_zero
        zero_classifier(teacher)
        zero_classifier(student)
        teacher.train()
    else:
        teacher.eval().requires_grad_(False)
    if not pipe.ours:
        teacher_optimizer = reference.reference_optimizer(teacher.parameters(), LGTM_LEARNING_RATE)
        student_optimizer = reference.reference_optimizer(student.parameters(), LGTM_LEARNING_RATE)

        def step(index, timer):
            batch = pipe.batch(index)
            quiz_batch = pipe.quiz_batch(index) if row == "LGTM step" else batch
            timer.mark("data")
            if row == "ProKT step":
                reference.prokt_teacher_update(teacher, student, teacher_optimizer, batch, timer.mark,
                                               t_alpha_kd=T_ALPHA_KD, temperature=TEMPERATURE)
            elif row in LGTM_ROWS:
                reference.lgtm_teacher_update(teacher, student, teacher_optimizer, student_optimizer, batch,
                                              quiz_batch, timer.mark, alpha_kd=ALPHA_KD, t_alpha_kd=T_ALPHA_KD,
                                              temperature=TEMPERATURE)
            reference.student_update(teacher, student, student_optimizer, batch, timer.mark, alpha_kd=ALPHA_KD,
                                     temperature=TEMPERATURE)
            return step_flops(row, pipe, teacher, student, batch, quiz_batch)

        return step

    # ours: run_lgtm_glue.py's student loss, and its teacher update as the loop's micro_batch_hook
    loop_step = LoopStep(student, pipe.runtime, LGTM_LEARNING_RATE, total_steps, args.torch_compile)
    quiz = QuizSource(QuizBatches(pipe.data.quiz_features, pipe.collate, batch_size=args.batch_size, seed=1,
                                 group_by_length=True, runtime=pipe.runtime) if row == "LGTM step" else None)
    teacher_step = None
    if trains_teacher:
        options = training_options(LGTM_LEARNING_RATE, total_steps)
        teacher_step = TeacherStep(
            teacher, student, pipe.runtime, learning_rate=LGTM_LEARNING_RATE, adam_epsilon=1e-8,
            make_schedule=lambda optimizer: make_scheduler(optimizer, options, total_steps),
            t_alpha_kd=T_ALPHA_KD, temperature=TEMPERATURE, max_grad_norm=1.0,
            quiz_batches=quiz if row in LGTM_ROWS else None, student_optimizer=loop_step.optimizer,
            alpha_kd=ALPHA_KD)

    def step(index, timer):
        batch = pipe.batch(index)
        quiz.batch = batch
        timer.mark("data")
        compute_loss = online_student_loss(student, marked(teacher_logits_of(teacher), timer.mark, "t-update",
                                                           "teacher"), alpha_kd=ALPHA_KD, temperature=TEMPERATURE)
        hook = None if teacher_step is None else marked(teacher_step, timer.mark, "data", "t-update")
        loop_step(compute_loss, batch, timer.mark, micro_batch_hook=hook)
        return step_flops(row, pipe, teacher, student, batch, quiz.last if row in LGTM_ROWS else batch)

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
    step = build_step(row, Pipeline(pipeline, data, device, args.ours_dtype), args, model_vocab_size(args, data))
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
        done = subprocess.run([sys.executable, "-m", "benchmarks.run_all", *argv, "--memory_of", f"{row}|{pipeline}"],
                              capture_output=True, text=True, cwd=ROOT)
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
    try:
        if args.memory_of:
            return memory_child(args)
        return measure(args, argv)
    except NotEnoughData as error:
        sys.exit(f"error: {error}")


def measure(args, argv):
    """Time every configuration (and measure its peak memory); print the table; the results."""
    configurations = [(row, pipeline) for row in args.rows for pipeline in PIPELINES]
    start = time.perf_counter()
    # CUDA: measured in this process, as each configuration is built; the CPU's peak RSS needs a
    # child per configuration, measured first (a child of a grown parent inherits its peak RSS)
    cuda_memory = not args.no_memory and torch.device(args.device).type == "cuda"
    peaks = {} if args.no_memory or cuda_memory else peak_memories(args, argv, configurations)
    if "one-to-one distillation" in args.rows:
        configurations.append(("one-to-one distillation", TASK_ONLY))
    memory_seconds = time.perf_counter() - start

    device = torch.device(args.device)
    data = prepare_data(args)
    pipelines = {name: Pipeline(name, data, device, args.ours_dtype) for name in (*PIPELINES, TASK_ONLY)}
    steps, records, first_index = {}, {configuration: [] for configuration in configurations}, 0
    for row, pipeline in configurations:
        if cuda_memory:  # its first step right after it is built: the peak it adds to what was allocated
            torch.cuda.synchronize(device)
            allocated = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        steps[(row, pipeline)] = build_step(row, pipelines[pipeline], args, model_vocab_size(args, data))
        if cuda_memory:
            timer = Timer(device)
            flops = steps[(row, pipeline)](0, timer)
            if args.warmup == 0:
                records[(row, pipeline)].append((timer.seconds, flops))
            peaks[(row, pipeline)] = (torch.cuda.max_memory_allocated(device) - allocated) / 1e9
            first_index = 1
    # the configurations take turns, step by step, so that a busy machine slows them alike
    for index in range(first_index, args.warmup + args.steps):
        for configuration, step in steps.items():
            timer = Timer(device)
            flops = step(index, timer)
            if index >= args.warmup:
                records[configuration].append((timer.seconds, flops))
    timed = range(args.warmup, args.warmup + args.steps)
    results = {}
    for row, pipeline in configurations:
        batches = [data.batches["reference" if pipeline == "reference" else "ours"][index] for index in timed]
        results[(row, pipeline)] = summarize(records[(row, pipeline)], [len(batch) for batch in batches],
                                             [sum(data.lengths[i] for i in batch) for batch in batches])
    print_table(args, results, peaks, device, time.perf_counter() - start, memory_seconds, data)
    return SimpleNamespace(results=results, peaks=peaks, device=device, data=data)


def model_vocab_size(args, data):
    """The models' embedding rows: ``--model_vocab_size``, at least the tokenizer's size."""
    return max(len(data.tokenizer), args.model_vocab_size or 0)


def print_table(args, results, peaks, device, total_seconds, memory_seconds, data):
    """The table of every configuration, then the targets and the notes."""
    rows = list(args.rows) + (["LGTM training"] if "LGTM step" in args.rows else [])
    ours_dtype = ("bf16 autocast" if args.ours_dtype == "bfloat16" or (args.ours_dtype == "auto" and device.type == "cuda")
                  else "float32")
    print(f"device {device} ({torch.get_num_threads()} CPU threads), batch {args.batch_size}, teacher BERT "
          f"{args.teacher_layers}x{args.hidden}, students DistilBERT/BERT {args.student_layers}x{args.hidden}, "
          f"WordPiece vocab {args.vocab_size} trained on {args.task} (embedding rows {model_vocab_size(args, data)}); median of {args.steps} steps after {args.warmup} "
          f"warm-up, configurations interleaved step by step")
    compiled_with = f", forward compiled ({args.torch_compile})" if args.torch_compile else ""
    print(f"ours: dynamic padding + group_by_length, {ours_dtype}{compiled_with}; reference: pad to {MAX_SEQ_LENGTH}, random "
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
    print_targets(args, results, peak, data)
    print()
    print_notes(args, peaks, device, peak, total_seconds, memory_seconds)


def print_targets(args, results, peak, data):
    """The speed targets of the rows that ran: measured, target, met."""
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
        task_only = results[("one-to-one distillation", TASK_ONLY)]["seconds"]
        loss_share = max(0.0, ours["seconds"] * (1 - ours["shares"]["teacher"]) - task_only) / ours["seconds"]
        target("one-to-one distillation: loss terms share of ours' step", loss_share, 0.05,
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


def print_notes(args, peaks, device, peak, total_seconds, memory_seconds):
    """What the columns mean, and the wall time."""
    print("phases in % of the step (see the docstring): data = collate + to device; teacher = no-grad target "
          "forwards of the student's update (ours distillation: teacher-cache lookup); t-update = the ProKT/LGTM "
          "teacher's update; fwd+bwd = the trained model; optim = clipping + optimizer step; loss terms share: "
          "(paper step - its teacher phase - task-only step) / paper step")
    if "LGTM step" in args.rows:
        print("LGTM training: examples over the summed time of the timed LGTM steps (each on a new SST-2 batch, "
              "quiz batches cycled from dev.tsv)")
    print("peak memory: "
          + ("n/a (--no_memory)" if not peaks else "torch.cuda.max_memory_allocated during the configuration's "
             "building and first step, less what was allocated before" if device.type == "cuda"
             else "peak RSS of a child process running only that configuration (1 step; includes the ~0.3 GB "
                  "of torch itself)"))
    print("TFLOP/s: model FLOPs (benchmarks/flops.py: the matrix products on the padded batches) over the summed "
          "step time; MFU (ours): TFLOP/s over "
          + (f"a peak of {peak:g} TFLOP/s" if peak else "the device's peak, n/a: give --peak_tflops"))
    print(f"wall time {total_seconds:.0f} s, of which {memory_seconds:.0f} s in the memory children")


if __name__ == "__main__":
    main()
