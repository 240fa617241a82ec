"""Tiny SQuAD v1.1 files (for the tests and the GPU check): a few articles in the official JSON
structure, several gold answers per dev question, and text with accents, CJK characters and runs of
spaces."""

import json
from pathlib import Path

PETS = "The cat sat on the mat. The dog sat in the house of a man. The woman is good and he is a great man."
STADIUM = ("The Riverside Hawks beat the Northfield Giants by three points to win their second league title. "
           "The final was held on March 9, 2019, at Lakeshore Arena in the old harbour district of Port Wexley, "
           "a city known for its bridges. Because it was the tenth final, the organisers painted the pitch silver "
           "and handed every spectator a small silver flag, so the match is remembered as the silver final.")
UNICODE = ("Zürich  is   the largest city of Switzerland.\tThe café Grüner serves naïve crêpes,  and   東京 is "
           "far away.\n\nIt opened in 1999.")

# (context, question, answer text, occurrence of the answer in the context, other gold answers)
QUESTIONS = [
    (PETS, "Where did the cat sit?", "on the mat", 0, ["the mat"]),
    (PETS, "Who sat in the house?", "The dog", 0, ["dog"]),
    (PETS, "Who is good?", "The woman", 0, ["woman"]),
    (STADIUM, "Who won the league title?", "The Riverside Hawks", 0, ["Riverside Hawks"]),
    (STADIUM, "When was the final held?", "March 9, 2019", 0, ["March 9"]),
    (STADIUM, "Where was the final held?", "Lakeshore Arena", 0, ["Port Wexley", "Lakeshore Arena in the old harbour"]),
    (STADIUM, "What colour was the pitch painted?", "silver", 0, ["silver"]),
    (STADIUM, "How is the match remembered?", "the silver final", 0, ["silver final"]),
    (UNICODE, "Which is the largest city of Switzerland?", "Zürich", 0, ["Zurich"]),
    (UNICODE, "Which café serves crêpes?", "café Grüner", 0, ["The café Grüner"]),
    (UNICODE, "What is far away?", "東京", 0, ["東京"]),
    (UNICODE, "What is Zürich?", "is   the largest city", 0, ["the largest city of Switzerland"]),
    (UNICODE, "When did it open?", "1999", 0, ["in 1999"]),
]


def answer_start(context, text, occurrence=0):
    start = -1
    for _ in range(occurrence + 1):
        start = context.index(text, start + 1)
    return start


def squad_dataset(*, gold="train", version="1.1"):
    """The fixture articles: ``gold="train"`` one answer per question, ``"dev"`` several,
    ``"none"`` none (a test-style file)."""
    articles = {}
    for number, (context, question, text, occurrence, others) in enumerate(QUESTIONS):
        answers = [{"text": text, "answer_start": answer_start(context, text, occurrence)}]
        if gold == "dev":
            answers += [{"text": other, "answer_start": context.find(other)} for other in others]
        qa = {"id": f"q{number:02d}", "question": question}
        if gold != "none":
            qa["answers"] = answers
        title = {PETS: "Pets", STADIUM: "League_final", UNICODE: "Cities"}[context]
        paragraphs = articles.setdefault(title, {})
        paragraphs.setdefault(context, []).append(qa)
    data = [{"title": title, "paragraphs": [{"context": context, "qas": qas} for context, qas in paragraphs.items()]}
            for title, paragraphs in articles.items()]
    return {"version": version, "data": data}


def write_json_file(path, value):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    return path


def write_squad_dir(directory):
    """``train.json`` and ``dev.json`` in ``directory`` (the seed command's names)."""
    write_json_file(Path(directory) / "train.json", squad_dataset(gold="train"))
    write_json_file(Path(directory) / "dev.json", squad_dataset(gold="dev"))
    return Path(directory)
