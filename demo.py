"""The whole one-to-one pipeline in one offline command, on a CPU in about a minute.

    python demo.py [--output_dir demo_output]

Makes a tiny BERT teacher and a tiny DistilBERT student (random weights, a small WordPiece
vocabulary) and writes a synthetic sentiment task in SST-2's file format whose label no single
word decides: an adjective's polarity, flipped by a negation ("the plot was not dull" is
positive). Then fine-tunes the teacher with run_glue.py, fine-tunes the student alone with
run_glue.py (the baseline), distils the student with the cross-correlation loss and its
sub-teacher (the paper's command) with run_glue_w_distillation.py, and prints the three dev
accuracies, whichever is higher. It shows the commands at work on models small enough for a
minute; the README's "Results: the tables in miniature" has the methods' numbers on a real pretrained
BERT and real GLUE data.
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import run_glue
import run_glue_w_distillation
from utils.miniature.synthetic_glue import review_words, write_negation_sst2
from utils.miniature.tiny_models import make_tiny_bert, make_tiny_distilbert

RUNS = ("teacher", "student_alone", "student_distilled")


def run_demo(output_dir, num_train=1024, num_dev=256, epochs=10, quiet=True):
    """Run the pipeline in ``output_dir``; return ``{run: dev metrics}`` for the runs of ``RUNS``."""
    output_dir = Path(output_dir)
    for name in RUNS:
        shutil.rmtree(output_dir / name, ignore_errors=True)
    glue_dir = output_dir / "glue_data"
    write_negation_sst2(glue_dir, num_train=num_train, num_dev=num_dev)
    models = Path(tempfile.mkdtemp(prefix="demo_models_"))
    words = review_words()
    teacher_init = make_tiny_bert(models / "bert", hidden_size=64, num_layers=2, seed=1, extra_words=words)
    student_init = make_tiny_distilbert(models / "distilbert", hidden_size=64, num_layers=1, seed=2,
                                        extra_words=words)
    common = ["--task_name", "sst2", "--data_dir", str(glue_dir / "SST-2"), "--max_seq_length", "128",
              "--num_train_epochs", str(epochs), "--learning_rate", "1e-3", "--warmup_ratio", "0.1", "--logging_steps", "50",
              "--save_steps", "0", "--report_to", "none"] + (["--disable_tqdm"] if quiet else [])
    try:
        run_glue.main(["--model_type", "bert", "--model_name_or_path", str(teacher_init), "--do_lower_case",
                       "--do_train", "--per_gpu_train_batch_size", "32", "--output_dir",
                       str(output_dir / "teacher"), *common])
        run_glue.main(["--model_name_or_path", str(student_init), "--do_train", "--per_device_train_batch_size",
                       "16", "--output_dir", str(output_dir / "student_alone"), *common])
        run_glue_w_distillation.main([
            "--teacher_model_name_or_path", str(output_dir / "teacher"), "--student_model_name_or_path",
            str(student_init), "--output_dir", str(output_dir / "student_distilled"), "--alpha_ce", "0",
            "--alpha_glue", "0.5", "--alpha_corr", "0.005", "--alpha_mse", "0", "--alpha_cos", "0", "--do_mask",
            "True", *common])
    finally:
        shutil.rmtree(models)
    return {name: json.loads((output_dir / name / "eval_results.json").read_text()) for name in RUNS}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="demo_output")
    args = parser.parse_args(argv)
    metrics = run_demo(args.output_dir, quiet=False)
    labels = {"teacher": "teacher (2 layers, width 64)", "student_alone": "student fine-tuned alone (1 layer)",
              "student_distilled": "student distilled, cross-correlation + sub-teacher (1 layer)"}
    print("\ndev accuracy on the synthetic negation task (SST-2 format):")
    for name in RUNS:
        print(f"  {labels[name]:<62} {metrics[name]['accuracy']:.3f}")
    print(f"the models and their eval_results.json are in {args.output_dir}/" + ", ".join(RUNS))
    print("real numbers (a pretrained BERT on GLUE): README, 'Results: the tables in miniature'")


if __name__ == "__main__":
    main()
