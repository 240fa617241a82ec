"""The whole one-to-one pipeline in one offline command, on a CPU in about a minute.

    python -m utils.demo [--output_dir demo_output]

Makes a tiny BERT teacher and a tiny DistilBERT student (random weights, a small WordPiece
vocabulary), writes a synthetic SST-2 task in the GLUE file format, fine-tunes the teacher
with run_glue.py, distils the student with the cross-correlation loss and its sub-teacher
(the paper's command) with run_glue_w_distillation.py, and prints both dev accuracies.
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import run_glue
import run_glue_w_distillation
from utils.synthetic_glue import write_synthetic_task
from utils.tiny_models import make_tiny_bert, make_tiny_distilbert


def run_demo(output_dir, num_train=512, num_dev=128, epochs=3, quiet=True):
    """Run the pipeline in ``output_dir``; return ``{"teacher": metrics, "student": metrics}``."""
    output_dir = Path(output_dir)
    shutil.rmtree(output_dir / "teacher", ignore_errors=True)
    shutil.rmtree(output_dir / "student", ignore_errors=True)
    glue_dir = output_dir / "glue_data"
    write_synthetic_task(glue_dir, "sst2", num_train=num_train, num_dev=num_dev, num_test=16)
    models = Path(tempfile.mkdtemp(prefix="demo_models_"))
    teacher_init = make_tiny_bert(models / "bert", hidden_size=64, num_layers=2, seed=1)
    student_init = make_tiny_distilbert(models / "distilbert", hidden_size=64, num_layers=1, seed=2)
    common = ["--task_name", "sst2", "--data_dir", str(glue_dir / "SST-2"), "--max_seq_length", "128",
              "--num_train_epochs", str(epochs), "--learning_rate", "1e-3", "--logging_steps", "20",
              "--save_steps", "0", "--report_to", "none"] + (["--disable_tqdm"] if quiet else [])
    run_glue.main(["--model_type", "bert", "--model_name_or_path", str(teacher_init), "--do_lower_case",
                   "--do_train", "--per_gpu_train_batch_size", "32", "--output_dir", str(output_dir / "teacher"),
                   *common])
    run_glue_w_distillation.main([
        "--teacher_model_name_or_path", str(output_dir / "teacher"), "--student_model_name_or_path",
        str(student_init), "--output_dir", str(output_dir / "student"), "--alpha_ce", "0", "--alpha_glue", "0.5",
        "--alpha_corr", "0.005", "--alpha_mse", "0", "--alpha_cos", "0", "--do_mask", "True", *common])
    shutil.rmtree(models)
    return {name: json.loads((output_dir / name / "eval_results.json").read_text()) for name in ("teacher", "student")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="demo_output")
    args = parser.parse_args(argv)
    metrics = run_demo(args.output_dir, quiet=False)
    print(f"\nsynthetic SST-2 dev accuracy: teacher {metrics['teacher']['accuracy']:.3f}, "
          f"student distilled with the correlation loss {metrics['student']['accuracy']:.3f}")
    print(f"the models and their eval_results.json are in {args.output_dir}/teacher and {args.output_dir}/student")


if __name__ == "__main__":
    main()
