"""SQuAD v1.1 readers: the official JSON files and the hub's ``rajpurkar/squad``.

Every reader returns examples as plain dicts

    {"id": str, "title": str, "context": str, "question": str,
     "answers": [{"text": str, "answer_start": int}, ...]}

in file order. ``answers`` is empty for a question without gold answers (a test-style file).
Training uses the first answer of each question; evaluation scores against all of them.
"""

import logging
from pathlib import Path

from utils.engine.errors import UserError
from utils.tasks.glue_data import decode_json, read_text

logger = logging.getLogger(__name__)

HUB_DATASET = "rajpurkar/squad"
DEFAULT_FILES = {"train": "train-v1.1.json", "validation": "dev-v1.1.json"}


def read_squad_file(path):
    """Examples of a SQuAD v1.1 JSON file (``data`` -> ``paragraphs`` -> ``context``, ``qas`` ->
    ``id``, ``question``, ``answers`` -> ``text``, ``answer_start``).

    A missing file, a file of another structure and a SQuAD v2.0 file (its questions may have
    no answer, ``is_impossible``) are refused with a UserError naming the first problem.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"SQuAD file not found: {path}")
    dataset = decode_json(path, read_text(path), line_number=None)
    where = f"{path} is not a SQuAD v1.1 file"
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise UserError(f"{where}: expected a JSON object with a 'data' list of articles")
    version = str(dataset.get("version", "1.1")).lstrip("v")
    if version.startswith("2"):
        raise UserError(f"{path} is SQuAD v{version}; only SQuAD v1.1 is supported (v2.0 adds unanswerable "
                        "questions, which the one-to-one paper's experiments do not use)")
    examples = []
    for article_number, article in enumerate(dataset["data"]):
        article_at = f"data[{article_number}]"
        title = _field(article, "title", str, article_at, where, default="")
        for paragraph_number, paragraph in enumerate(_field(article, "paragraphs", list, article_at, where)):
            paragraph_at = f"{article_at}.paragraphs[{paragraph_number}]"
            context = _field(paragraph, "context", str, paragraph_at, where)
            for qa_number, qa in enumerate(_field(paragraph, "qas", list, paragraph_at, where)):
                qa_at = f"{paragraph_at}.qas[{qa_number}]"
                examples.append(_example(qa, title, context, qa_at, path, where))
    return check_examples(examples, path)


def _field(record, key, kind, at, where, default=None):
    """``record[key]``, which must be a ``kind``; a UserError naming its place otherwise."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: {at} is not a JSON object")
    if key not in record:
        if default is not None:
            return default
        raise UserError(f"{where}: {at} has no {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise UserError(f"{where}: {at}.{key} is {type(value).__name__}, expected {expected}")
    return value


def _example(qa, title, context, at, path, where):
    if isinstance(qa, dict) and qa.get("is_impossible"):
        raise UserError(f"{path}: {at} is an unanswerable (SQuAD v2.0) question; only SQuAD v1.1 is supported")
    question_id = _field(qa, "id", (str, int), at, where)
    answers = []
    for answer_number, answer in enumerate(_field(qa, "answers", list, at, where, default=[])):
        answer_at = f"{at}.answers[{answer_number}]"
        answers.append({"text": _field(answer, "text", str, answer_at, where),
                        "answer_start": _field(answer, "answer_start", int, answer_at, where)})
    return {"id": str(question_id), "title": title, "context": context,
            "question": _field(qa, "question", str, at, where), "answers": answers}


def check_examples(examples, source):
    """Refuse a source without questions or with a question id used twice."""
    if not examples:
        raise UserError(f"{source} has no questions")
    seen = set()
    for example in examples:
        if example["id"] in seen:
            raise UserError(f"{source}: question id {example['id']!r} appears more than once")
        seen.add(example["id"])
    return examples


def load_squad_hub(split, cache_dir=None):
    """Examples of the hub's ``rajpurkar/squad`` (``train`` or ``validation``)."""
    from utils.engine.models import hub_dataset  # transformers: not for the readers of local files

    try:
        dataset = hub_dataset(HUB_DATASET, split=split, cache_dir=cache_dir)
    except (ConnectionError, FileNotFoundError) as error:
        raise UserError(f"could not load {HUB_DATASET} ({split}) from the hub: {error}; for local data pass "
                        "--data_dir or --train_file/--predict_file") from None
    examples = [{"id": str(row["id"]), "title": row.get("title", ""), "context": row["context"],
                 "question": row["question"],
                 "answers": [{"text": text, "answer_start": start} for text, start
                             in zip(row["answers"]["text"], row["answers"]["answer_start"])]}
                for row in dataset.to_list()]
    return check_examples(examples, f"{HUB_DATASET} {split}")


def squad_file(data_dir, file_name, split):
    """The file of a split: ``data_dir/file_name`` (``file_name`` alone without ``data_dir``; the
    official file name in ``data_dir`` without ``file_name``), or None for the hub."""
    if data_dir:
        return Path(data_dir) / (file_name or DEFAULT_FILES[split])
    return Path(file_name) if file_name else None


def load_squad_split(split, path=None, cache_dir=None):
    """Examples of ``train`` or ``validation``: from the file ``path``, else from the hub."""
    return read_squad_file(path) if path is not None else load_squad_hub(split, cache_dir)


def answer_span(example):
    """Character span ``(start, end)`` of the first answer in the context, white space at its
    ends left out; None when the question has no answer or ``answer_start`` does not point at
    the answer text."""
    if not example["answers"]:
        return None
    answer = example["answers"][0]
    start, end = answer["answer_start"], answer["answer_start"] + len(answer["text"])
    context = example["context"]
    if start < 0 or context[start:end] != answer["text"]:
        return None
    while start < end and context[start].isspace():
        start += 1
    while end > start and context[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def training_examples(examples, source):
    """The examples that can be trained on, each with its ``answer_span``.

    Questions without an answer, or whose ``answer_start`` does not point at the answer text,
    are skipped with one warning that counts them; none left is a UserError.
    """
    usable, unanswered, misplaced = [], [], []
    for example in examples:
        span = answer_span(example)
        if span is not None:
            usable.append(dict(example, answer_span=span))
        else:
            (misplaced if example["answers"] else unanswered).append(example["id"])
    if unanswered or misplaced:
        first = (misplaced or unanswered)[0]
        message = (f"{source}: {len(misplaced)} of {len(examples)} training questions have an answer_start that "
                   f"does not point at the answer text and {len(unanswered)} have no answer")
        if not usable:
            raise UserError(f"{message}: nothing left to train on (first: id {first})")
        logger.warning("%s; skipped them (first: id %s)", message, first)
    return usable
