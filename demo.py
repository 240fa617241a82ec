"""One-to-one distillation at work, offline, on a CPU in about a minute.

    python demo.py [--output_dir demo_output]

A synthetic sentiment task in SST-2's file format whose label no single word decides: an
adjective's polarity, flipped by a negation ("the plot was not dull" is positive). For each of
five seeds, with tiny models of random weights and a small WordPiece vocabulary:

- a BERT teacher (2 layers, width 64) is fine-tuned with ``run_glue.py`` on 2048 training
  sentences;
- a DistilBERT student (1 layer, width 64) is trained alone on the first 256 of them with
  ``run_glue_w_distillation.py`` and the task loss only (weight 0.5, every distillation weight 0:
  the tables' ``task`` row), the baseline;
- the same student is distilled from the teacher with ``run_glue_w_distillation.py`` on the same
  256 sentences, with the paper's loss weights (its README's command: task loss 0.5,
  cross-correlation 0.005 with the sub-teacher mask, no logit KD).

Both students get the same command but for the cross-correlation's weight and the mask (epochs,
batch, learning rate, warm-up, seed, the task loss's weight all the same). With few labelled sentences the student alone barely learns the
negation; the teacher's hidden states carry it. The dev accuracies (512 sentences) of every seed
go to ``<output_dir>/summary.json`` and are printed with the mean gain of distillation and its
range over the seeds. The README's "Results: the tables in miniature" has the methods on a real
pretrained BERT and real GLUE data.
"""

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import run_glue
import run_glue_w_distillation
from utils.miniature.synthetic_glue import review_words, write_negation_sst2
from utils.miniature.tiny_models import make_tiny_bert, make_tiny_distilbert
from utils.tasks.predictions import EVAL_PREDICTIONS, paired_interval, read_eval_predictions

SEEDS = (1, 2, 3, 4, 5)
RUNS = ("teacher", "student_alone", "student_distilled")
# the one-to-one paper's README command's loss; the student alone has the task term alone
TASK_LOSS = ["--alpha_ce", "0", "--alpha_glue", "0.5", "--alpha_mse", "0", "--alpha_cos", "0"]
PAPER_LOSS = [*TASK_LOSS, "--alpha_corr", "0.005", "--do_mask", "True"]
ALONE_LOSS = [*TASK_LOSS, "--alpha_corr", "0", "--do_mask", "False"]


def run_seed(output_dir, glue_dir, seed, *, num_student_train, teacher_epochs, student_epochs, quiet):
    """The three runs of one seed in ``output_dir``; ``{run: dev accuracy}``."""
    models = Path(tempfile.mkdtemp(prefix="demo_models_"))
    words = review_words()
    teacher_init = make_tiny_bert(models / "bert", hidden_size=64, num_layers=2, seed=1 + 10 * seed,
                                  extra_words=words)
    student_init = make_tiny_distilbert(models / "distilbert", hidden_size=64, num_layers=1, seed=2 + 10 * seed,
                                        extra_words=words)
    common = ["--task_name", "sst2", "--data_dir", str(glue_dir / "SST-2"), "--max_seq_length", "128",
              "--learning_rate", "1e-3", "--warmup_ratio", "0.1", "--logging_steps", "50", "--save_steps", "0",
              "--report_to", "none", "--seed", str(seed)] + (["--disable_tqdm"] if quiet else [])
    student = [*common, "--max_train_samples", str(num_student_train), "--num_train_epochs", str(student_epochs),
               "--per_device_train_batch_size", "16"]
    try:
        run_glue.main(["--model_name_or_path", str(teacher_init), "--do_train", "--per_device_train_batch_size",
                       "32", "--num_train_epochs", str(teacher_epochs), "--output_dir", str(output_dir / "teacher"),
                       *common])
        for name, loss in (("student_alone", ALONE_LOSS), ("student_distilled", PAPER_LOSS)):
            run_glue_w_distillation.main(["--teacher_model_name_or_path", str(output_dir / "teacher"),
                                          "--student_model_name_or_path", str(student_init), "--output_dir",
                                          str(output_dir / name), *loss, *student])
    finally:
        shutil.rmtree(models)
    return {name: json.loads((output_dir / name / "eval_results.json").read_text())["accuracy"] for name in RUNS}


def run_demo(output_dir, seeds=SEEDS, num_teacher_train=2048, num_student_train=256, num_dev=512,
             teacher_epochs=10, student_epochs=20, quiet=True):
    """Every seed's runs under ``output_dir/seed<k>/``; writes and returns the summary
    ``{"seeds", "teacher", "alone", "distilled"}`` (dev accuracy per seed)."""
    output_dir = Path(output_dir)
    glue_dir = output_dir / "glue_data"
    write_negation_sst2(glue_dir, num_train=num_teacher_train, num_dev=num_dev)
    summary = {"seeds": list(seeds), "teacher": [], "alone": [], "distilled": []}
    for seed in seeds:
        folder = output_dir / f"seed{seed}"
        shutil.rmtree(folder, ignore_errors=True)
        accuracies = run_seed(folder, glue_dir, seed, num_student_train=num_student_train,
                              teacher_epochs=teacher_epochs, student_epochs=student_epochs, quiet=quiet)
        for key, name in (("teacher", "teacher"), ("alone", "student_alone"), ("distilled", "student_distilled")):
            summary[key].append(accuracies[name])
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def gain_intervals(output_dir, seeds):
    """Each seed's 95% paired bootstrap interval of the distilled student's accuracy minus the
    student alone's, on the same dev sentences (their ``eval_predictions.json``)."""
    intervals = []
    for seed in seeds:
        alone, distilled = (read_eval_predictions(Path(output_dir) / f"seed{seed}" / name / EVAL_PREDICTIONS)
                            for name in ("student_alone", "student_distilled"))
        intervals.append(paired_interval([distilled], [alone], "accuracy")[1:])
    return intervals


def report(summary, intervals=None):
    """The lines ``main`` prints: each seed's three accuracies and the gain (with its paired 95%
    interval where given), then the mean gain and its range."""
    lines = ["dev accuracy on the synthetic negation task (SST-2 format):",
             f"  {'seed':>4}  {'teacher':>8}  {'student alone':>13}  {'distilled':>9}  {'gain':>6}"
             + ("  (95% paired interval)" if intervals else "")]
    gains = [distilled - alone for alone, distilled in zip(summary["alone"], summary["distilled"])]
    for index, (seed, teacher, alone, distilled, gain) in enumerate(zip(
            summary["seeds"], summary["teacher"], summary["alone"], summary["distilled"], gains)):
        interval = f"  ({intervals[index][0]:+.3f}, {intervals[index][1]:+.3f})" if intervals else ""
        lines.append(f"  {seed:>4}  {teacher:>8.3f}  {alone:>13.3f}  {distilled:>9.3f}  {gain:>+6.3f}{interval}")
    lines.append(f"distillation (the paper's loss) minus the student alone: mean {statistics.fmean(gains):+.3f}, "
                 f"from {min(gains):+.3f} to {max(gains):+.3f} over {len(gains)} seeds")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="demo_output")
    args = parser.parse_args(argv)
    summary = run_demo(args.output_dir)
    print("\n" + "\n".join(report(summary, gain_intervals(args.output_dir, summary["seeds"]))))
    print(f"per seed: {args.output_dir}/seed<k>/" + "{" + ",".join(RUNS) + "}; "
          f"the accuracies: {args.output_dir}/summary.json")


if __name__ == "__main__":
    main()
