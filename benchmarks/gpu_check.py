"""The GPU check: every script on CUDA in float32, bf16 and fp16, a kill and resume, and the
speed of the shipped steps at BERT-base shapes, in one table.

    python -m benchmarks.gpu_check --sst2_dir glue_data/SST-2 --pairs_dir glue_data/MRPC --out gpu_check.md
    python -m benchmarks.gpu_check --tiny ...      # a CPU run of the same code on tiny models (the test's)

It needs no hub and no downloaded weights: the models are built from configs with random weights
(teacher BERT 12x768, student DistilBERT 6x768, the 30522-row vocabulary of bert-base-uncased;
--tiny: 2x32 and 1x32), the scripts' data are the tests' synthetic fixtures (GLUE RTE, SQuAD,
aclImdb), and the speed rows read real sentences from --sst2_dir (SST-2 lengths) and --pairs_dir
(MRPC sentence pairs, 53 tokens a pair on average, for MNLI-like lengths; MNLI's average about 40).

Correctness, each a few optimizer steps of a script, called in this process:
  run_glue, run_glue_w_distillation (the paper's loss), run_squad, run_squad_w_distillation,
  run_imdb, run_imdb_w_distillation, run_lgtm_glue as KD, ProKT and LGTM, in float32, --bf16 and
  --fp16 (LGTM under --fp16 must be refused: its teacher update has no loss scaler), plus
  run_glue_w_distillation --bf16 --torch_compile. Checked: exit status 0, every logged loss finite,
  and the first LOSS_STEPS logged losses of bf16/fp16 within LOSS_TOLERANCE of float32's (same
  seed, same batches). Then one kill and resume: run_glue_w_distillation (float32) killed with
  SIGKILL once checkpoint-4 exists and run again, its final weights against an uninterrupted run's.
Speed (benchmarks.run_all, the steps the scripts run, against the released-choices reference):
  teacher fine-tuning (batch 32), one-to-one distillation (batch 16), KD/ProKT/LGTM steps (batch 32),
  at SST-2 and pair lengths; ours in bf16 autocast and in float32; examples/s, real tokens/s, model
  TFLOP/s, MFU against the H200's 989 TFLOP/s dense bf16 peak and against the 790 TFLOP/s its
  bf16 matrix products measured; peak GPU memory (bf16, SST-2 lengths).
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
           "teacher fine-tuning >= 30% MFU of 989 (pair lengths, bf16)",
           "LGTM step, quiz = x <= 2.1x a ProKT step (SST-2 lengths, bf16)",
           "no step slower in bf16 than in float32")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sst2_dir", required=True, help="a glue_data/SST-2 folder (train.tsv, dev.tsv)")
    parser.add_argument("--pairs_dir", required=True, help="a glue_data/MRPC folder (train.tsv, dev.tsv)")
    parser.add_argument("--out", default="gpu_check.md", help="the table is also written here")
    parser.add_argument("--work_dir", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--tiny", action="store_true", help="tiny models and few steps (a CPU test of this code)")
    parser.add_argument("--skip", choices=("correctness", "speed"), action="append", default=[])
    parser.add_argument("--speed_steps", type=int, default=6, help="timed steps per speed configuration")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- models and data


def make_inputs(root, tiny):
    """The models (random weights, from configs) and the scripts' fixture data under ``root``."""
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    from utils.synthetic_glue import write_synthetic_task
    from utils.synthetic_imdb import write_acl_imdb
    from utils.synthetic_squad import write_squad_dir
    from utils.tiny_models import save_tokenizer, tiny_vocab

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


def correctness(models, glue, squad, imdb, work, tiny, device):
    """One row per (script, precision): status, seconds, losses checked."""
    steps = 3 if tiny else 6
    precisions = ["float32", "bf16"] + ([] if device.type == "cpu" else ["fp16"])
    rows, reference = [], {}
    for precision in precisions:
        runs, common = script_runs(models, glue, squad, imdb, work / precision, steps, 1 if tiny else 6)
        extra = PRECISIONS[precision] + (["--use_cpu"] if device.type == "cpu" else [])
        configurations = [(name, module, argv, precision) for name, module, argv, _ in runs]
        if precision == "bf16":
            compiled = next(argv for name, _, argv, _ in runs if name == "run_glue_w_distillation")
            backend = ["--torch_compile_backend", "aot_eager"] if device.type == "cpu" else []
            configurations.append(("run_glue_w_distillation", "run_glue_w_distillation",
                                   [*compiled[:-2], "--output_dir", str(work / "compiled"), "--torch_compile",
                                    *backend], "bf16 + torch_compile"))
        for name, module, argv, label in configurations:
            status, seconds, last = call_script(module, [*argv, *common, *extra])
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
    return rows


def kill_and_resume(models, glue, work, device, tiny):
    """SIGKILL run_glue_w_distillation once checkpoint-4 exists, run it again; the largest weight
    difference from an uninterrupted run, and the verdict."""
    from safetensors.torch import load_file

    runs, common = script_runs(models, glue, None, None, work / "resume", 8, 1 if tiny else 6)
    cpu = ["--use_cpu"] if device.type == "cpu" else []
    call_script("run_glue", [*runs[0][2], *common, *cpu])
    argv = [*runs[1][2][:-2], *common, "--save_steps", "2", *cpu]  # the last --save_steps counts
    whole, killed = work / "resume" / "whole", work / "resume" / "killed"
    status, _, last = call_script("run_glue_w_distillation", [*argv, "--output_dir", str(whole)])
    if status != 0:
        return f"NO: the uninterrupted run failed: {last}"
    command = [sys.executable, str(ROOT / "run_glue_w_distillation.py"), *argv, "--output_dir", str(killed)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    while not (killed / "checkpoint-4").is_dir() and process.poll() is None:
        time.sleep(0.05)
    if process.poll() is not None:
        return "NO: the run finished before checkpoint-4 could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if again.returncode != 0 or "resuming" not in again.stderr:
        return f"NO: the rerun did not resume: {again.stderr[-500:]}"
    expected, actual = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    largest = max((actual[name].float() - tensor.float()).abs().max().item() for name, tensor in expected.items())
    verdict = "ok" if largest <= RESUME_TOLERANCE else "NO"
    return f"{verdict}: killed at checkpoint-4 of 8 steps, resumed; largest weight difference {largest:.3g}"


# --------------------------------------------------------------------------- speed


def speed(args, device):
    """run_all at the two lengths and two precisions; ``{(lengths, dtype): run_all's results}``."""
    from benchmarks import run_all

    shapes = (["--hidden", "32", "--heads", "2", "--teacher_layers", "2", "--student_layers", "1", "--vocab_size",
               "400"] if args.tiny else
              ["--hidden", "768", "--heads", "12", "--teacher_layers", "12", "--student_layers", "6",
               "--model_vocab_size", "30522"])
    timing = ["--steps", "1", "--warmup", "0"] if args.tiny else ["--steps", str(args.speed_steps), "--warmup", "2"]
    batches = {16: ["one-to-one distillation"],
               32: ["teacher fine-tuning", "KD step", "ProKT step", "LGTM step", "LGTM step, quiz = x"]}
    measured = {}
    for lengths, folder, task in (("SST-2", args.sst2_dir, "sst2"), ("pairs", args.pairs_dir, "mrpc")):
        for dtype in ("bfloat16", "float32"):
            for batch_size, rows in batches.items():
                memory = [] if (lengths == "SST-2" and dtype == "bfloat16" and not args.tiny) else ["--no_memory"]
                argv = ["--data_dir", str(folder), "--task", task, "--batch_size", str(batch_size),
                        "--ours_dtype", dtype, *shapes, *timing, *memory, "--device", str(device), "--rows", *rows]
                with contextlib.redirect_stdout(io.StringIO()):
                    measured[(lengths, dtype, batch_size)] = run_all.main(argv)
    return measured


def speed_rows(measured):
    from benchmarks.run_all import TASK_ONLY

    rows = []
    for (lengths, dtype, _), found in measured.items():
        for (row, pipeline), result in found.results.items():
            if pipeline == TASK_ONLY:
                continue
            reference = found.results[(row, "reference")]
            mfus = [f"{result['tflops'] / peak:.1%}" if pipeline == "ours" else "" for peak in PEAKS.values()]
            peak = found.peaks.get((row, pipeline))
            rows.append((row, lengths, pipeline, dtype if pipeline == "ours" else "float32",
                         f"{result['examples']:.1f}", f"{result['tokens']:.0f}", f"{result['tflops']:.3g}", *mfus,
                         f"{peak:.2f}" if peak is not None else "",
                         f"{result['examples'] / reference['examples']:.2f}x" if pipeline == "ours" else ""))
    return rows


def speed_targets(measured):
    """``[(target, measured, met)]`` of the issue's four GPU targets."""
    def result(lengths, dtype, batch, row, pipeline="ours"):
        return measured[(lengths, dtype, batch)].results[(row, pipeline)]

    distillation = (result("SST-2", "bfloat16", 16, "one-to-one distillation")["examples"]
                    / result("SST-2", "bfloat16", 16, "one-to-one distillation", "reference")["examples"])
    mfu = result("pairs", "bfloat16", 32, "teacher fine-tuning")["tflops"] / PEAKS["989 (dense bf16)"]
    lgtm = (result("SST-2", "bfloat16", 32, "LGTM step, quiz = x")["seconds"]
            / result("SST-2", "bfloat16", 32, "ProKT step")["seconds"])
    slower = [f"{row} ({lengths})" for (lengths, dtype, batch), found in measured.items() if dtype == "bfloat16"
              for (row, pipeline), res in found.results.items() if pipeline == "ours"
              and res["examples"] < measured[(lengths, "float32", batch)].results[(row, pipeline)]["examples"]]
    return [(TARGETS[0], f"{distillation:.2f}x", distillation >= 5.0), (TARGETS[1], f"{mfu:.1%}", mfu >= 0.30),
            (TARGETS[2], f"{lgtm:.2f}x", lgtm <= 2.1),
            (TARGETS[3], "slower: " + ", ".join(slower) if slower else "none slower", not slower)]


# --------------------------------------------------------------------------- the table


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def main(argv=None):
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.tiny:
        sys.exit("error: no CUDA GPU here: the check is for a GPU (--tiny runs it on tiny models on the CPU)")
    start = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    import transformers

    lines = [f"# GPU check: {name}, torch {torch.__version__}, transformers {transformers.__version__}"
             + (" (tiny models)" if args.tiny else ""), ""]
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        work = Path(args.work_dir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        failures = 0
        if "correctness" not in args.skip:
            models, glue, squad, imdb = make_inputs(work / "inputs", args.tiny)
            rows = correctness(models, glue, squad, imdb, work / "runs", args.tiny, device)
            resume = kill_and_resume(models, glue, work, device, args.tiny)
            failures += sum(row[-1].startswith("NO") for row in rows) + resume.startswith("NO")
            lines += ["## Correctness", "", f"First {LOSS_STEPS} logged losses; tolerance against float32: "
                      f"{LOSS_TOLERANCE[0]:g} x |loss| + {LOSS_TOLERANCE[1]:g}.", ""]
            lines += markdown(("script", "precision", "s", "first losses", "verdict"), rows)
            lines += ["", f"Kill and resume (float32): {resume}", ""]
        if "speed" not in args.skip:
            measured = speed(args, device)
            lines += ["## Speed", "", "ex/s and tok/s at the median step; TFLOP/s: model FLOPs over the summed "
                      "step time; MFU against the two peaks (ours only); peak GB: CUDA max allocated, bf16 at "
                      "SST-2 lengths.", ""]
            lines += markdown(("row", "lengths", "pipeline", "precision", "ex/s", "tok/s", "TFLOP/s",
                               *(f"MFU {peak}" for peak in PEAKS), "peak GB", "ours/ref"), speed_rows(measured))
            lines += ["", "Targets:", ""]
            targets = speed_targets(measured)
            lines += markdown(("target", "measured", "met"), [(t, m, "yes" if ok else "NO") for t, m, ok in targets])
        lines += ["", f"wall time {time.perf_counter() - start:.0f} s"]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
