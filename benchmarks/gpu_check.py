"""The GPU check: every script on CUDA in float32, bf16 and fp16, a kill and resume, and the
speed of the shipped steps at BERT-base shapes: two commands, each of a few minutes on one H200.

    python -m benchmarks.gpu_check correctness --out correctness.md [--budget_s 220]
    python -m benchmarks.gpu_check speed --out speed.md [--budget_s 220]
    bash scripts/gpu_check.sh OUTDIR                 # both, each under a time limit
    python -m benchmarks.gpu_check all --tiny ...    # a CPU run of the same code on tiny models (the test's)

It needs no hub, no downloaded weights, no ``datasets`` and nothing outside the repository: the
models are built from configs with random weights (teacher BERT 12x768, student DistilBERT 6x768,
the 30522-row vocabulary of bert-base-uncased; --tiny: 2x32 and 1x32), the scripts' data are the
synthetic fixtures of ``utils.miniature.synthetic_*`` (GLUE RTE, SQuAD, aclImdb), and the speed rows read the
subsampled real sentences of ``benchmarks/data`` (SST-2 lengths; MRPC sentence pairs, 53 tokens a
pair on average, for MNLI-like lengths; MNLI's average about 40). Each command prints an estimate
of its time from its step counts before it starts, and stops cleanly once the next piece would
pass --budget_s, or on SIGTERM, writing the table so far with the rest marked "not run".

Correctness, each a few optimizer steps of a script, called in this process, in this order:
  run_glue, run_glue_w_distillation (the paper's loss), run_squad, run_squad_w_distillation,
  run_imdb, run_imdb_w_distillation, run_lgtm_glue as KD, ProKT and LGTM, in float32 and --bf16;
  one kill and resume: run_glue_w_distillation (float32) killed with SIGKILL once checkpoint-4
  exists and run again, its final weights against an uninterrupted run's; every script in --fp16
  (LGTM under --fp16 must be refused: its teacher update has no loss scaler); last
  run_glue_w_distillation --bf16 --torch_compile. Checked: exit status 0, every logged loss finite,
  and the first LOSS_STEPS logged losses of bf16/fp16 within LOSS_TOLERANCE of float32's (same
  seed, same batches).
Speed (benchmarks.run_all, the steps the scripts run, against the released-choices reference):
  teacher fine-tuning (batch 32), one-to-one distillation (batch 16), KD/ProKT/LGTM steps (batch 32),
  at SST-2 and pair lengths; ours in bf16 autocast and in float32; and, as a user would run it on a
  GPU, teacher fine-tuning at pair lengths with its forward compiled (bf16). Examples/s, real
  tokens/s, model TFLOP/s, MFU against the H200's 989 TFLOP/s dense bf16 peak and against the 790
  TFLOP/s its bf16 matrix products measured; peak GPU memory (bf16, SST-2 lengths), measured in this
  process as each configuration is built. Every configuration's data is checked before the first
  is timed; a shortfall is a row of the table, not an exit. A row whose bf16 step gains less than
  10% over float32 is marked as bound by kernel launches: at such sizes the GPU waits on the CPU.
"""

import argparse
import contextlib
import io
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = {"float32": [], "bf16": ["--bf16"], "fp16": ["--fp16"]}
LOSS_STEPS = 3
LOSS_TOLERANCE = (0.05, 0.02)  # |loss - float32 loss| <= 0.05 * |float32 loss| + 0.02
RESUME_TOLERANCE = 1e-5  # largest weight difference of the resumed run (CUDA kernels need not be bitwise repeatable)
PEAKS = {"989 (dense bf16)": 989.0, "790 (measured)": 790.0}
TARGETS = ("one-to-one distillation >= 5x the reference (SST-2 lengths, bf16)",
           "teacher fine-tuning >= 30% MFU of 989 (pair lengths, bf16, best of eager and compiled)",
           "LGTM step, quiz = x <= 2.1x a ProKT step (SST-2 lengths, bf16)",
           "no step slower in bf16 than in float32")
LAUNCH_BOUND_GAIN = 1.10  # bf16 ex/s below 1.1x float32's: the step is bound by kernel launches
DATA = ROOT / "benchmarks" / "data"
# Seconds assumed for the estimate printed before a command starts, per device type: a script run
# (start-up, models, data, evaluation, saving), one of its optimizer steps, a torch.compile, one
# speed configuration (building its models and optimizer), one of its steps.
ESTIMATE = {"cuda": dict(script_run=4.0, script_step=0.1, compile=60.0, configuration=1.5, speed_step=0.06),
            "cpu": dict(script_run=1.2, script_step=0.05, compile=6.0, configuration=0.4, speed_step=0.02)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=("correctness", "speed", "all"), default="all",
                        help="which command to run (default all: both, one after the other)")
    parser.add_argument("--sst2_dir", default=str(DATA / "SST-2"),
                        help="a glue_data/SST-2 folder (train.tsv, dev.tsv); default: the repository's subsample")
    parser.add_argument("--pairs_dir", default=str(DATA / "MRPC"),
                        help="a glue_data/MRPC folder (train.tsv, dev.tsv); default: the repository's subsample")
    parser.add_argument("--out", default="gpu_check.md", help="the table is also written here")
    parser.add_argument("--work_dir", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--tiny", action="store_true", help="tiny models and few steps (a CPU test of this code)")
    parser.add_argument("--budget_s", type=float, default=None,
                        help="stop before the piece that would end after this many seconds, writing the table so far")
    parser.add_argument("--speed_steps", type=int, default=None,
                        help="timed steps per speed configuration (default 6; --tiny: 1)")
    return parser.parse_args(argv)


class OutOfTime(BaseException):
    """SIGTERM (a time limit's ``timeout``, Slurm): the check stops and writes the table so far. A
    BaseException, so that the scripts called in this process do not report it as their crash."""


def stop_on_signal(signum, frame):
    raise OutOfTime(f"stopped by {signal.Signals(signum).name} after the rows above")


class Budget:
    """Seconds since the command started against ``--budget_s``; what was left out for it."""

    def __init__(self, seconds):
        self.seconds, self.start, self.skipped = seconds, time.perf_counter(), 0

    def elapsed(self):
        return time.perf_counter() - self.start

    def allows(self, estimate):
        """Whether a piece estimated at ``estimate`` seconds ends within the budget; counts it if not."""
        if self.seconds is None or self.elapsed() + estimate <= self.seconds:
            return True
        self.skipped += 1
        return False

    def not_run(self, estimate):
        return (f"not run: {self.elapsed():.0f} s gone, about {estimate:.0f} s more would pass "
                f"--budget_s {self.seconds:g}")


# --------------------------------------------------------------------------- models and data


def make_inputs(root, tiny):
    """The models (random weights, from configs) and the scripts' fixture data under ``root``."""
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    from utils.miniature.synthetic_glue import write_synthetic_task
    from utils.miniature.synthetic_imdb import write_acl_imdb
    from utils.miniature.synthetic_squad import write_squad_dir
    from utils.miniature.tiny_models import save_tokenizer, tiny_vocab

    width, heads, teacher_layers, student_layers = (32, 2, 2, 1) if tiny else (768, 12, 12, 6)
    filler = [] if tiny else [f"[unused{i}]" for i in range(30522 - len(tiny_vocab()))]
    models = {}
    for name, layers in (("teacher", teacher_layers), ("student", student_layers)):
        folder = root / name
        tokenizer = save_tokenizer(folder, extra_words=filler)
        torch.manual_seed(len(models))
        if name == "teacher":
            config = BertConfig(vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=layers,
                                num_attention_heads=heads, intermediate_size=4 * width)
            BertModel(config).save_pretrained(folder)
        else:
            config = DistilBertConfig(vocab_size=len(tokenizer), dim=width, n_layers=layers, n_heads=heads,
                                      hidden_dim=4 * width)
            DistilBertModel(config).save_pretrained(folder)
        models[name] = folder
    write_synthetic_task(root / "glue", "rte", num_train=256, num_dev=64)
    write_squad_dir(root / "squad")
    write_acl_imdb(root / "imdb")
    return models, root / "glue" / "RTE", root / "squad", root / "imdb"


# --------------------------------------------------------------------------- correctness


def script_runs(models, glue, squad, imdb, out, steps, lgtm_layers):
    """``[(name, module, argv, teacher run or None)]`` in the order they must run, and the
    options they share; the LGTM student is the teacher's first ``lgtm_layers`` layers."""
    common = ["--max_steps", str(steps), "--logging_steps", "1", "--save_steps", "0", "--disable_tqdm",
              "--seed", "7", "--do_train"]
    windows = ["--max_seq_length", "128", "--doc_stride", "32", "--max_query_length", "32"]
    lgtm = ["--model_name_or_path", str(models["teacher"]), "--task_name", "rte", "--data_dir", str(glue),
            "--num_layers", str(lgtm_layers), "--per_device_train_batch_size", "32", "--eval_steps",
            str(steps), "--do_eval", "--alpha_kd", "1.0", "--temperature", "1.0", "--t_learning_rate", "3e-05"]
    return [
        ("run_glue", "run_glue", ["--model_name_or_path", str(models["teacher"]), "--task_name", "rte", "--data_dir",
                                  str(glue), "--per_device_train_batch_size", "32", "--output_dir",
                                  str(out / "glue_teacher")], None),
        ("run_glue_w_distillation", "run_glue_w_distillation",
         ["--teacher_model_name_or_path", str(out / "glue_teacher"), "--student_model_name_or_path",
          str(models["student"]), "--task_name", "rte", "--data_dir", str(glue), "--alpha_ce", "0", "--alpha_glue",
          "0.5", "--alpha_corr", "0.005", "--alpha_mse", "0", "--alpha_cos", "0", "--do_mask", "True",
          "--per_device_train_batch_size", "16", "--output_dir", str(out / "glue_student")], "run_glue"),
        ("run_squad", "run_squad", ["--model", str(models["teacher"]), "--data_dir", str(squad), "--train_file",
                                    "train.json", "--predict_file", "dev.json", *windows,
                                    "--per_device_train_batch_size", "16", "--output_dir",
                                    str(out / "squad_teacher")], None),
        ("run_squad_w_distillation", "run_squad_w_distillation",
         ["--model_name_or_path", str(models["student"]), "--teacher_name_or_path", str(out / "squad_teacher"),
          "--data_dir", str(squad), "--train_file", "train.json", "--predict_file", "dev.json", "--do_eval",
          "--alpha_corr", "0.5", "--alpha_ce", "0.5", "--alpha_squad", "0.5", "--do_mask", "True", *windows,
          "--per_device_train_batch_size", "16", "--output_dir", str(out / "squad_student"),
          "--output_dir_intermed", str(out / "squad_student_intermed")], "run_squad"),
        ("run_imdb", "run_imdb", ["--model", str(models["teacher"]), "--data_dir", str(imdb), "--max_seq_length",
                                  "256", "--per_device_train_batch_size", "16", "--output_dir",
                                  str(out / "imdb_teacher")], None),
        ("run_imdb_w_distillation", "run_imdb_w_distillation",
         ["--teacher_model_name_or_path", str(out / "imdb_teacher"), "--student_model_name_or_path",
          str(models["student"]), "--data_dir", str(imdb), "--max_seq_length", "256", "--alpha_ce", "0.5",
          "--do_mask", "True", "--per_device_train_batch_size", "16", "--output_dir", str(out / "imdb_student")],
         "run_imdb"),
        ("run_lgtm_glue kd", "run_lgtm_glue", [*lgtm, "--teacher_model", str(out / "glue_teacher"), "--output_dir",
                                               str(out / "lgtm_kd")], "run_glue"),
        ("run_lgtm_glue prokt", "run_lgtm_glue", [*lgtm, "--teacher_model", str(models["teacher"]), "--train_teacher",
                                                  "--init_classifier_to_zero", "--output_dir", str(out / "lgtm_prokt")],
         None),
        ("run_lgtm_glue lgtm", "run_lgtm_glue", [*lgtm, "--teacher_model", str(models["teacher"]), "--train_teacher",
                                                 "--init_classifier_to_zero", "--use_lgtm", "--output_dir",
                                                 str(out / "lgtm_lgtm")], None),
    ], common


def call_script(module, argv):
    """(exit status, seconds, last stderr line) of ``module.main(argv)`` in this process."""
    import importlib

    main = importlib.import_module(module).main
    errors = io.StringIO()
    start = time.perf_counter()
    status = 0
    # the scripts' log lines too: their logging handler was bound to the stderr of the first call
    handler = logging.StreamHandler(errors)
    logging.getLogger().addHandler(handler)
    with contextlib.redirect_stderr(errors):
        try:
            main(argv)
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else 1
        except Exception as error:  # a crash is a finding of the check, reported in its table
            status, errors = 1, io.StringIO(f"{type(error).__name__}: {error}")
        finally:
            logging.getLogger().removeHandler(handler)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    lines = [line for line in errors.getvalue().splitlines() if line.strip()]
    return status, time.perf_counter() - start, lines[-1] if lines else ""


def logged_losses(run_dir):
    """The logged training losses (TensorBoard events) of a run, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folders = sorted(Path(run_dir).rglob("events.out.tfevents.*"))
    if not folders:
        return []
    accumulator = EventAccumulator(str(folders[-1].parent))
    accumulator.Reload()
    return [event.value for event in accumulator.Scalars("train/loss")]


def correctness_runs(models, glue, squad, imdb, work, tiny, device):
    """``[(name, module, argv, label, precision)]`` of every correctness run (float32, bf16, fp16,
    then the compiled run), and the steps each takes."""
    steps = 3 if tiny else 6
    precisions = ["float32", "bf16"] + ([] if device.type == "cpu" else ["fp16"])
    configurations = []
    for precision in precisions:
        runs, common = script_runs(models, glue, squad, imdb, work / precision, steps, 1 if tiny else 6)
        extra = [*common, *PRECISIONS[precision], *(["--use_cpu"] if device.type == "cpu" else [])]
        configurations += [(name, module, [*argv, *extra], precision, precision) for name, module, argv, _ in runs]
        if precision == "bf16":
            compiled = next(argv for name, _, argv, _ in runs if name == "run_glue_w_distillation")
            backend = ["--torch_compile_backend", "aot_eager"] if device.type == "cpu" else []
            compiled_run = ("run_glue_w_distillation", "run_glue_w_distillation",
                            [*compiled[:-2], "--output_dir", str(work / "compiled"), "--torch_compile", *backend,
                             *extra], "bf16 + torch_compile", precision)
    return configurations + [compiled_run], steps  # the compilation last: a budget that runs out takes it


def run_estimate(label, steps, costs):
    """Seconds a correctness run is expected to take (``ESTIMATE``)."""
    return (costs["script_run"] + steps * costs["script_step"]
            + (costs["compile"] if "torch_compile" in label else 0.0))


def correctness(configurations, steps, costs, budget, reference, rows):
    """Append to ``rows`` one row per (script, precision) as it ends: status, seconds, losses
    checked; ``reference``: the float32 losses per script, filled by the float32 runs and read by
    the others."""
    for name, module, argv, label, precision in configurations:
        estimate = run_estimate(label, steps, costs)
        if not budget.allows(estimate):
            rows.append((name, label, "", "", budget.not_run(estimate)))
            continue
        status, seconds, last = call_script(module, argv)
        out = Path(argv[argv.index("--output_dir") + 1])
        expect_refusal = name == "run_lgtm_glue lgtm" and precision == "fp16"
        losses = logged_losses(out.parent / "squad_student_intermed" if "squad_w" in module else out)
        if expect_refusal:
            verdict = "ok (refused, as it must be)" if status == 2 and "--fp16" in last else f"NO: {last}"
        elif status != 0:
            verdict = f"NO: exit {status}: {last}"
        elif not losses or not all(math.isfinite(loss) for loss in losses):
            verdict = f"NO: losses {losses}"
        elif precision == "float32":
            reference[name] = losses
            verdict = "ok"
        else:
            first, base = losses[:LOSS_STEPS], reference.get(name, [])[:LOSS_STEPS]
            close = len(base) == len(first) and all(
                abs(a - b) <= LOSS_TOLERANCE[0] * abs(b) + LOSS_TOLERANCE[1] for a, b in zip(first, base))
            verdict = "ok" if close else f"NO: losses {first} against float32's {base}"
        shown = ", ".join(f"{loss:.4g}" for loss in losses[:LOSS_STEPS])
        rows.append((name, label, f"{seconds:.1f}", shown, verdict))


RESUME_STEPS = 12  # killed at checkpoint-4: 8 steps left, so that the kill comes first


def resume_estimate(costs):
    """The kill-and-resume: four script runs of RESUME_STEPS steps, two in a fresh interpreter."""
    return 4 * (costs["script_run"] + RESUME_STEPS * costs["script_step"]) + 2 * 3 * costs["script_run"]


def kill_and_resume(models, glue, work, device, tiny):
    """SIGKILL run_glue_w_distillation once checkpoint-4 exists, run it again; the largest weight
    difference from an uninterrupted run, and the verdict."""
    from safetensors.torch import load_file

    runs, common = script_runs(models, glue, None, None, work / "resume", RESUME_STEPS, 1 if tiny else 6)
    cpu = ["--use_cpu"] if device.type == "cpu" else []
    status, _, last = call_script("run_glue", [*runs[0][2], *common, *cpu])
    if status != 0:
        return f"NO: the teacher's run failed: {last}"
    argv = [*runs[1][2][:-2], *common, "--save_steps", "2", *cpu]  # the last --save_steps counts
    whole, killed = work / "resume" / "whole", work / "resume" / "killed"
    status, _, last = call_script("run_glue_w_distillation", [*argv, "--output_dir", str(whole)])
    if status != 0:
        return f"NO: the uninterrupted run failed: {last}"
    command = [sys.executable, str(ROOT / "run_glue_w_distillation.py"), *argv, "--output_dir", str(killed)]
    with open(work / "resume" / "killed.log", "w") as log:  # a file: a full pipe would stall the run
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
        deadline = time.monotonic() + 600
        while not (killed / "checkpoint-4").is_dir() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if process.poll() is not None:
            return "NO: the run ended before checkpoint-4 could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        if not (killed / "checkpoint-4").is_dir():
            return "NO: checkpoint-4 did not appear within 600 s"
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if again.returncode != 0 or "resuming" not in again.stderr:
        return f"NO: the rerun did not resume: {again.stderr[-500:]}"
    expected, actual = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    largest = max((actual[name].float() - tensor.float()).abs().max().item() for name, tensor in expected.items())
    verdict = "ok" if largest <= RESUME_TOLERANCE else "NO"
    return (f"{verdict}: killed at checkpoint-4 of {RESUME_STEPS} steps, resumed; largest weight difference "
            f"{largest:.3g}")


# --------------------------------------------------------------------------- speed


def speed_configurations(args, device):
    """``{(lengths, dtype, batch size, compiled): run_all's argv}`` in the order they run: every
    row at both lengths in bf16, the compiled bf16 teacher fine-tuning a GPU user would run, then
    every row in float32."""
    shapes = (["--hidden", "32", "--heads", "2", "--teacher_layers", "2", "--student_layers", "1", "--vocab_size",
               "400"] if args.tiny else
              ["--hidden", "768", "--heads", "12", "--teacher_layers", "12", "--student_layers", "6",
               "--model_vocab_size", "30522"])
    steps = str(args.speed_steps or (1 if args.tiny else 6))
    timing = ["--steps", steps, "--warmup", "0" if args.tiny else "2"]
    # compiled forwards see a few batch lengths before their shapes settle: more warm-up steps
    compiled_timing = ["--steps", steps, "--warmup", "1" if args.tiny else "4"]
    backend = "aot_eager" if device.type == "cpu" else "inductor"
    batches = {16: ["one-to-one distillation"],
               32: ["teacher fine-tuning", "KD step", "ProKT step", "LGTM step", "LGTM step, quiz = x"]}
    folders = {"SST-2": (args.sst2_dir, "sst2"), "pairs": (args.pairs_dir, "mrpc")}

    def argv(lengths, dtype, batch_size, rows, compiled=False):
        folder, task = folders[lengths]
        memory = [] if (lengths == "SST-2" and dtype == "bfloat16" and not args.tiny and not compiled) else ["--no_memory"]
        return ["--data_dir", str(folder), "--task", task, "--batch_size", str(batch_size), "--ours_dtype", dtype,
                *shapes, *(compiled_timing if compiled else timing), *memory, "--device", str(device),
                *(["--torch_compile", backend] if compiled else []), "--rows", *rows]

    # bf16 first, then the compiled fine-tuning (the MFU target; the correctness command compiles the
    # distillation script), then float32: a budget that runs out takes what matters least
    configurations = {(lengths, "bfloat16", batch_size, False): argv(lengths, "bfloat16", batch_size, rows)
                      for lengths in folders for batch_size, rows in batches.items()}
    configurations[("pairs", "bfloat16", 32, True)] = argv("pairs", "bfloat16", 32, ["teacher fine-tuning"], True)
    configurations.update({(lengths, "float32", batch_size, False): argv(lengths, "float32", batch_size, rows)
                           for lengths in folders for batch_size, rows in batches.items()})
    return configurations


def speed_estimate(argv, costs):
    """Seconds a run_all configuration is expected to take (``ESTIMATE``): building its models and
    optimizers, its steps, and a compilation per row when compiled."""
    from benchmarks import run_all

    options = run_all.parse_args(argv)
    builds = len(options.rows) * (len(run_all.PIPELINES) + ("one-to-one distillation" in options.rows))
    seconds = builds * (costs["configuration"] + (options.warmup + options.steps) * costs["speed_step"])
    return seconds + (len(options.rows) * costs["compile"] if options.torch_compile else 0.0)


def data_shortfalls(configurations):
    """``{configuration: why}`` of those whose data give too few batches, found before any timing."""
    from benchmarks import run_all

    shortfalls = {}
    for key, argv in configurations.items():
        try:
            run_all.prepare_data(run_all.parse_args(argv))
        except run_all.NotEnoughData as error:
            shortfalls[key] = str(error)
    return shortfalls


def speed(configurations, costs, budget, measured, not_run):
    """Fill ``measured`` (``{configuration: run_all's results}``, as each ends) and ``not_run``
    (``{configuration: why it was not run}``)."""
    from benchmarks import run_all

    not_run.update(data_shortfalls(configurations))
    for key, argv in configurations.items():
        if key in not_run:
            continue
        estimate = speed_estimate(argv, costs)
        if not budget.allows(estimate):
            not_run[key] = budget.not_run(estimate)
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                measured[key] = run_all.main(argv)
        except (Exception, SystemExit) as error:  # a crash is a finding of the check, a row of its table
            not_run[key] = f"NO: {type(error).__name__}: {' '.join(str(error).split())[:300]}"


def launch_bound(measured, key, row):
    """Whether ours' bf16 ``row`` of ``key`` on CUDA gains less than LAUNCH_BOUND_GAIN over float32:
    with tensor cores twice as fast in bf16, a step that does not speed up waits on kernel launches.
    (On the CPU, bf16 autocast is no faster, and nothing is said.)"""
    lengths, dtype, batch_size, compiled = key
    float32 = measured.get((lengths, "float32", batch_size, False))
    if (dtype != "bfloat16" or compiled or float32 is None or (row, "ours") not in float32.results
            or measured[key].device.type != "cuda"):
        return False
    return (measured[key].results[(row, "ours")]["examples"]
            < LAUNCH_BOUND_GAIN * float32.results[(row, "ours")]["examples"])


def speed_rows(measured, not_run, configurations):
    from benchmarks.run_all import TASK_ONLY, parse_args

    rows = []
    for key in configurations:
        lengths, dtype, batch_size, compiled = key
        precision = dtype + (" + compile" if compiled else "")
        if key in not_run:
            for row in parse_args(configurations[key]).rows:
                rows.append((row, lengths, "ours", precision, *[""] * (5 + len(PEAKS)), not_run[key]))
            continue
        found = measured[key]
        for (row, pipeline), result in found.results.items():
            if pipeline == TASK_ONLY or (compiled and pipeline == "reference"):
                continue
            reference = found.results[(row, "reference")]
            mfus = [f"{result['tflops'] / peak:.1%}" if pipeline == "ours" else "" for peak in PEAKS.values()]
            peak = found.peaks.get((row, pipeline))
            note = ("bound by kernel launches (bf16 gains < 10% over float32)"
                    if pipeline == "ours" and launch_bound(measured, key, row) else "")
            rows.append((row, lengths, pipeline, precision if pipeline == "ours" else "float32",
                         f"{result['examples']:.1f}", f"{result['tokens']:.0f}", f"{result['tflops']:.3g}", *mfus,
                         f"{peak:.2f}" if peak is not None else "",
                         f"{result['examples'] / reference['examples']:.2f}x" if pipeline == "ours" else "", note))
    return rows


def speed_targets(measured):
    """``[(target, measured, verdict)]`` of the four GPU targets; a target whose rows were not
    measured says so."""
    def result(lengths, row, pipeline="ours", dtype="bfloat16", batch=32, compiled=False):
        found = measured.get((lengths, dtype, batch, compiled))
        return None if found is None else found.results.get((row, pipeline))

    targets = []
    ours, reference = result("SST-2", "one-to-one distillation", batch=16), result(
        "SST-2", "one-to-one distillation", "reference", batch=16)
    if ours and reference:
        ratio = ours["examples"] / reference["examples"]
        targets.append((TARGETS[0], f"{ratio:.2f}x", "yes" if ratio >= 5.0 else "NO"))
    else:
        targets.append((TARGETS[0], "", "not measured"))
    fine_tuning = {name: value for name, value in (("eager", result("pairs", "teacher fine-tuning")),
                                                   ("compiled", result("pairs", "teacher fine-tuning", compiled=True)))
                   if value}
    if fine_tuning:
        mfus = {name: value["tflops"] / PEAKS["989 (dense bf16)"] for name, value in fine_tuning.items()}
        best = max(mfus, key=mfus.get)
        bound = " (eager bound by kernel launches)" if launch_bound(
            measured, ("pairs", "bfloat16", 32, False), "teacher fine-tuning") else ""
        targets.append((TARGETS[1], ", ".join(f"{name} {mfu:.1%}" for name, mfu in mfus.items()) + bound,
                        "yes" if mfus[best] >= 0.30 else "NO"))
    else:
        targets.append((TARGETS[1], "", "not measured"))
    lgtm, prokt = result("SST-2", "LGTM step, quiz = x"), result("SST-2", "ProKT step")
    if lgtm and prokt:
        ratio = lgtm["seconds"] / prokt["seconds"]
        targets.append((TARGETS[2], f"{ratio:.2f}x", "yes" if ratio <= 2.1 else "NO"))
    else:
        targets.append((TARGETS[2], "", "not measured"))
    slower, bound = [], []
    for (lengths, dtype, batch, compiled), found in measured.items():
        float32 = measured.get((lengths, "float32", batch, False))
        if dtype != "bfloat16" or compiled or float32 is None:
            continue
        for (row, pipeline), value in found.results.items():
            if pipeline == "ours" and (row, pipeline) in float32.results:
                if value["examples"] < float32.results[(row, pipeline)]["examples"]:
                    slower.append(f"{row} ({lengths})")
                if launch_bound(measured, (lengths, dtype, batch, compiled), row):
                    bound.append(f"{row} ({lengths})")
    text = ("slower: " + ", ".join(slower) if slower else "none slower") + (
        "; bound by kernel launches: " + ", ".join(bound) if bound else "")
    targets.append((TARGETS[3], text, "NO" if slower else "yes") if measured else (TARGETS[3], "", "not measured"))
    return targets


# --------------------------------------------------------------------------- the table


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def main(argv=None):
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.tiny:
        sys.exit("error: no CUDA GPU here: the check is for a GPU (--tiny runs it on tiny models on the CPU)")
    budget, costs = Budget(args.budget_s), ESTIMATE[device.type]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    import transformers

    header = (f"# GPU check ({args.part}): {name}, torch {torch.__version__}, transformers "
              f"{transformers.__version__}" + (" (tiny models)" if args.tiny else ""))
    assumed = ", ".join(f"{key} {value:g} s" for key, value in costs.items())
    parts = ("correctness", "speed") if args.part == "all" else (args.part,)
    rows, planned, resume, measured, not_run, estimates, stopped = [], [], "not run: stopped before it", {}, {}, [], None
    speed_runs = speed_configurations(args, device) if "speed" in parts else {}
    previous = signal.signal(signal.SIGTERM, stop_on_signal)
    try:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
            work = Path(args.work_dir or scratch)
            work.mkdir(parents=True, exist_ok=True)
            try:
                if "correctness" in parts:
                    models, glue, squad, imdb = make_inputs(work / "inputs", args.tiny)
                    runs, steps = correctness_runs(models, glue, squad, imdb, work / "runs", args.tiny, device)
                    planned += [(name, label) for name, _, _, label, _ in runs]
                    estimates.append(sum(run_estimate(label, steps, costs) for *_, label, _ in runs)
                                     + resume_estimate(costs))
                    print(f"correctness: {len(runs)} script runs of {steps} steps, then a kill and resume "
                          f"({RESUME_STEPS} steps): about {estimates[-1]:.0f} s (assumed: {assumed})", flush=True)
                    # float32 and bf16, then the kill and resume, then fp16 and the compiled run
                    first = [run for run in runs if run[4] in ("float32", "bf16") and "compile" not in run[3]]
                    reference, estimate = {}, resume_estimate(costs)
                    correctness(first, steps, costs, budget, reference, rows)
                    resume = kill_and_resume(models, glue, work, device, args.tiny) if budget.allows(estimate) \
                        else budget.not_run(estimate)
                    correctness([run for run in runs if run not in first], steps, costs, budget, reference, rows)
                if "speed" in parts:
                    estimates.append(sum(speed_estimate(argv, costs) for argv in speed_runs.values()))
                    print(f"speed: {len(speed_runs)} run_all configurations: about {estimates[-1]:.0f} s "
                          f"(assumed: {assumed})", flush=True)
                    speed(speed_runs, costs, budget, measured, not_run)
            except OutOfTime as signal_stop:
                stopped = str(signal_stop)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the table so far is written whatever comes
            done = {(row[0], row[1]) for row in rows}
            rows += [(name, label, "", "", "not run: stopped before it") for name, label in planned
                     if (name, label) not in done]
            for key in speed_runs:
                if key not in measured:
                    not_run.setdefault(key, "not run: stopped before it")
            text = report(header, parts, rows, resume, measured, not_run, speed_runs, budget, estimates, stopped)
            Path(args.out).write_text(text)  # before the scratch folder (gigabytes of runs) is removed
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(text)
    failures = (sum(row[-1].startswith("NO") for row in rows) + resume.startswith("NO")
                + sum(why.startswith("NO") for why in not_run.values()))
    return 1 if failures or budget.skipped or stopped else 0


def report(header, parts, rows, resume, measured, not_run, speed_runs, budget, estimates, stopped):
    """The markdown of the check: each part's table, what was measured so far."""
    lines = [header, ""]
    if "correctness" in parts:
        lines += ["## Correctness", "", f"First {LOSS_STEPS} logged losses; tolerance against float32: "
                  f"{LOSS_TOLERANCE[0]:g} x |loss| + {LOSS_TOLERANCE[1]:g}.", ""]
        lines += markdown(("script", "precision", "s", "first losses", "verdict"), rows)
        lines += ["", f"Kill and resume (float32): {resume}", ""]
    if "speed" in parts:
        lines += ["## Speed", "", "ex/s and tok/s at the median step; TFLOP/s: model FLOPs over the summed "
                  "step time; MFU against the two peaks (ours only); peak GB: CUDA max allocated, bf16 at "
                  "SST-2 lengths.", ""]
        lines += markdown(("row", "lengths", "pipeline", "precision", "ex/s", "tok/s", "TFLOP/s",
                           *(f"MFU {peak}" for peak in PEAKS), "peak GB", "ours/ref", "note"),
                          speed_rows(measured, not_run, speed_runs))
        lines += ["", "Targets:", ""]
        lines += markdown(("target", "measured", "met"), speed_targets(measured))
    lines += ["", f"wall time {budget.elapsed():.0f} s (estimated {sum(estimates):.0f} s)"]
    if budget.skipped:
        lines += [f"incomplete: {budget.skipped} pieces not run within --budget_s {budget.seconds:g}"]
    if stopped:
        lines += [f"incomplete: {stopped}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
