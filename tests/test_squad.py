"""SQuAD v1.1 pieces: the official scores, the JSON reader, windows over long contexts, answers
from start/end logits, the span loss."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModelForQuestionAnswering, BertTokenizer

from tests.conftest import run_main
from utils.engine.errors import UserError
from utils.engine.features import PadCollator
from utils.miniature.synthetic_squad import QUESTIONS, STADIUM, squad_dataset, write_json_file
from utils.miniature.tiny_models import make_tiny_bert, tiny_vocab
from utils.tasks import squad_metrics
from utils.tasks.squad import (
    Window,
    best_answers,
    encode_windows,
    evaluation_windows,
    max_context_flags,
    span_logits,
    span_loss,
    training_features,
)
from utils.tasks.squad_data import load_squad_split, read_squad_file, squad_file, training_examples
from utils.tasks.squad_metrics import exact_match, gold_answers, normalize_answer, squad_scores, token_f1

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
SMALL_WINDOWS = {"max_seq_length": 64, "doc_stride": 16, "max_query_length": 16}


@pytest.fixture(scope="module")
def tokenizer():
    """The tiny models' uncased WordPiece vocabulary (any ASCII text) plus two CJK characters."""
    vocab = list(dict.fromkeys(tiny_vocab() + ["東", "京"]))
    return BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    path = write_json_file(tmp_path_factory.mktemp("squad") / "train.json", squad_dataset(gold="train"))
    return training_examples(read_squad_file(path), path)


# --------------------------------------------------------------------------- official scores


@pytest.mark.parametrize("text, normalised", [
    ("The  Quick, brown   FOX!", "quick brown fox"),
    ("An apple a day", "apple day"),
    ("theatre anthem", "theatre anthem"),  # articles only as whole words
    ("U.S.-based", "usbased"),
    ("\u2018golden\u2019 anniversary", "\u2018golden\u2019 anniversary"),  # only ASCII punctuation goes
    ("  a\tthe\n an ", ""),
])
def test_normalisation_follows_the_official_rules(text, normalised):
    assert normalize_answer(text) == normalised


def test_exact_match_and_f1_on_hand_worked_cases():
    assert exact_match("The Denver Broncos!", "denver broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0
    # prediction tokens [cat, sat], gold [cat, sat, on, mat]: P = 1, R = 1/2, F1 = 2/3
    assert token_f1("the cat sat", "cat sat on the mat") == pytest.approx(2 / 3)
    # shared tokens counted with multiplicity: x x y / x y y share one x and one y: P = R = 2/3
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert token_f1("Denver", "Carolina") == 0.0
    # as in the official script: two empty texts match exactly but share no token
    assert exact_match("", "the") == 1.0 and token_f1("", "the") == 0.0


def test_scores_are_percentages_best_over_gold_answers_and_missing_questions_score_zero():
    golds = {"q1": ["on the mat", "the mat"], "q2": ["good woman"], "q3": ["1999"]}
    predictions = {"q1": "The mat.", "q2": "good man", "unknown": "ignored"}
    # q1: exact on the second gold; q2: [good, man] / [good, woman]: F1 1/2; q3: missing, 0
    assert squad_scores(predictions, golds) == pytest.approx({"exact_match": 100 / 3, "f1": 100 * 1.5 / 3})


def test_gold_answers_as_predictions_score_100(tmp_path):
    for gold in ("train", "dev"):
        golds = gold_answers(read_squad_file(write_json_file(tmp_path / f"{gold}.json", squad_dataset(gold=gold))))
        assert len(golds) == len(QUESTIONS)
        for pick in (0, -1):
            predictions = {question_id: answers[pick] for question_id, answers in golds.items()}
            assert squad_scores(predictions, golds) == {"exact_match": 100.0, "f1": 100.0}


def test_standalone_scorer_prints_the_official_json(tmp_path):
    dev = write_json_file(tmp_path / "dev.json", squad_dataset(gold="dev"))
    golds = gold_answers(read_squad_file(dev))
    predictions = {question_id: answers[0] for question_id, answers in golds.items()}
    predictions["q00"] = "the mat on"
    write_json_file(tmp_path / "predictions.json", predictions)
    done = subprocess.run([sys.executable, "-m", "utils.tasks.squad_metrics", str(dev), str(tmp_path / "predictions.json")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    # q00: normalised "mat on" against "on mat": not exact, F1 1; all others exact
    expected = {"exact_match": 100 * 12 / 13, "f1": 100.0}
    assert json.loads(done.stdout) == pytest.approx(expected)
    assert list(json.loads(done.stdout)) == ["exact_match", "f1"]


def test_standalone_scorer_scores_missing_predictions_as_wrong_and_says_how_many(tmp_path, capsys):
    dev = write_json_file(tmp_path / "dev.json", squad_dataset(gold="dev"))
    predictions = {question_id: answers[0] for question_id, answers in gold_answers(read_squad_file(dev)).items()}
    for question_id in ("q01", "q05", "q07"):
        del predictions[question_id]
    write_json_file(tmp_path / "predictions.json", predictions)
    assert run_main(squad_metrics.main, [str(dev), str(tmp_path / "predictions.json")]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"warning: 3 of 13 questions have no prediction in {tmp_path / 'predictions.json'}; they score 0"]
    assert json.loads(captured.out) == pytest.approx({"exact_match": 1000 / 13, "f1": 1000 / 13})


@pytest.mark.parametrize("predictions, message", [
    (None, "predictions file not found"),
    (["a", "b"], "expected a JSON object mapping question ids to answer texts"),
    ({"q00": 3}, "the prediction for id 'q00' is int, expected a text"),
])
def test_standalone_scorer_refuses_bad_predictions_in_one_line(predictions, message, tmp_path, capsys):
    dev = write_json_file(tmp_path / "dev.json", squad_dataset(gold="dev"))
    if predictions is not None:
        write_json_file(tmp_path / "predictions.json", predictions)
    assert run_main(squad_metrics.main, [str(dev), str(tmp_path / "predictions.json")]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_standalone_scorer_refuses_a_file_without_gold_answers(tmp_path, capsys):
    test_file = write_json_file(tmp_path / "test.json", squad_dataset(gold="none"))
    write_json_file(tmp_path / "predictions.json", {})
    assert run_main(squad_metrics.main, [str(test_file), str(tmp_path / "predictions.json")]) == 2
    assert "has no gold answers to score against" in capsys.readouterr().err


# --------------------------------------------------------------------------- reading files


def test_reader_keeps_file_order_ids_contexts_and_all_gold_answers(tmp_path):
    examples = read_squad_file(write_json_file(tmp_path / "dev.json", squad_dataset(gold="dev")))
    assert [example["id"] for example in examples] == [f"q{n:02d}" for n in range(len(QUESTIONS))]
    assert [example["question"] for example in examples] == [question[1] for question in QUESTIONS]
    assert examples[3]["context"] == STADIUM and examples[3]["title"] == "League_final"
    assert [answer["text"] for answer in examples[5]["answers"]] == [
        "Lakeshore Arena", "Port Wexley", "Lakeshore Arena in the old harbour"]


def broken(change):
    dataset = squad_dataset(gold="train")
    change(dataset)
    return dataset


@pytest.mark.parametrize("content, message", [
    ([1, 2], "is not a SQuAD v1.1 file: expected a JSON object with a 'data' list of articles"),
    ({"version": "1.1", "articles": []}, "expected a JSON object with a 'data' list"),
    (broken(lambda d: d["data"][0].pop("paragraphs")), "data[0] has no 'paragraphs'"),
    (broken(lambda d: d["data"][0]["paragraphs"][0].pop("context")), "data[0].paragraphs[0] has no 'context'"),
    (broken(lambda d: d["data"][0]["paragraphs"][0]["qas"][1].pop("question")),
     "data[0].paragraphs[0].qas[1] has no 'question'"),
    (broken(lambda d: d["data"][1]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start="12")),
     "data[1].paragraphs[0].qas[0].answers[0].answer_start is str, expected int"),
    (broken(lambda d: d.update(version="v2.0")), "is SQuAD v2.0; only SQuAD v1.1 is supported"),
    (broken(lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(is_impossible=True)),
     "data[0].paragraphs[0].qas[0] is an unanswerable (SQuAD v2.0) question"),
    (broken(lambda d: d["data"][0]["paragraphs"][0]["qas"][1].update(id="q00")), "question id 'q00' appears more"),
    ({"version": "1.1", "data": []}, "has no questions"),
])
def test_files_that_are_not_squad_v1_1_are_refused_with_the_place(content, message, tmp_path):
    path = write_json_file(tmp_path / "bad.json", content)
    with pytest.raises(UserError) as error:
        read_squad_file(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_missing_and_invalid_files_are_refused(tmp_path):
    with pytest.raises(UserError, match="SQuAD file not found"):
        read_squad_file(tmp_path / "nowhere.json")
    (tmp_path / "broken.json").write_text('{"data": [')
    with pytest.raises(UserError, match="not valid JSON"):
        read_squad_file(tmp_path / "broken.json")


def test_file_names_resolve_like_the_released_script(tmp_path):
    assert squad_file("data", "train.json", "train") == Path("data/train.json")
    assert squad_file("data", None, "validation") == Path("data/dev-v1.1.json")
    assert squad_file("data", str(tmp_path / "dev.json"), "validation") == tmp_path / "dev.json"
    assert squad_file(None, "dev.json", "validation") == Path("dev.json")
    assert squad_file(None, None, "train") is None


def test_without_a_file_the_hub_is_read(monkeypatch):
    requested = []

    def fake_load_dataset(path, split, cache_dir=None, **kwargs):
        requested.append((path, split))
        return datasets.Dataset.from_list([{
            "id": "h1", "title": "T", "context": "The cat sat on the mat.", "question": "Where?",
            "answers": {"text": ["on the mat"], "answer_start": [12]}}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = load_squad_split("train")
    assert requested == [("rajpurkar/squad", "train")]
    assert examples == [{"id": "h1", "title": "T", "context": "The cat sat on the mat.", "question": "Where?",
                         "answers": [{"text": "on the mat", "answer_start": 12}]}]


def test_misplaced_answers_are_counted_skipped_and_reported_in_one_warning(tmp_path, caplog):
    dataset = squad_dataset(gold="train")
    qas = dataset["data"][1]["paragraphs"][0]["qas"]
    qas[0]["answers"][0]["answer_start"] += 3
    qas[2]["answers"][0]["answer_start"] = 10_000
    dataset["data"][0]["paragraphs"][0]["qas"][1]["answers"] = []
    path = write_json_file(tmp_path / "train.json", dataset)
    with caplog.at_level(logging.WARNING):
        usable = training_examples(read_squad_file(path), path)
    assert len(usable) == len(QUESTIONS) - 3
    assert [record.getMessage() for record in caplog.records] == [
        f"{path}: 2 of 13 training questions have an answer_start that does not point at the answer text and 1 "
        "have no answer; skipped them (first: id q03)"]
    with pytest.raises(UserError, match="nothing left to train on"):
        training_examples([dict(usable[0], answers=[])], path)


def test_answer_spans_leave_out_surrounding_white_space():
    example = {"id": "w", "context": "It opened in  1999 .", "answers": [{"text": "  1999 ", "answer_start": 12}]}
    assert training_examples([example], "x")[0]["answer_span"] == (14, 18)


# --------------------------------------------------------------------------- windows


def decoded(tokenizer, ids):
    """Normalised text of token ids, white space removed (WordPiece decoding spaces CJK characters)."""
    return "".join(normalize_answer(tokenizer.decode(ids)).split())


def normalised(tokenizer, text):
    return "".join(normalize_answer(tokenizer.backend_tokenizer.normalizer.normalize_str(text)).split())


def test_every_training_window_holding_the_answer_points_at_it(tokenizer, examples):
    features = training_features(tokenizer, examples, **SMALL_WINDOWS)
    windows = encode_windows(tokenizer, examples, **SMALL_WINDOWS)
    assert len(features) == len(windows)
    windows_per_example = np.bincount([window.example_index for window in windows])
    assert windows_per_example.max() >= 10, "the long context needs many windows"
    answered = set()
    crossing = 0
    for feature, window in zip(features, windows):
        assert len(feature["input_ids"]) <= SMALL_WINDOWS["max_seq_length"]
        assert feature["input_ids"] == window.input_ids
        example = examples[window.example_index]
        answer_start, answer_end = example["answer_span"]
        start, end = feature["start_positions"], feature["end_positions"]
        context_offsets = [offset for offset, sequence in zip(window.offsets, window.sequence_ids) if sequence == 1]
        holds_answer = context_offsets[0][0] <= answer_start and answer_end <= context_offsets[-1][1]
        if not holds_answer:
            assert (start, end) == (0, 0)
            crossing += context_offsets[0][0] < answer_end and answer_start < context_offsets[-1][1]
            continue
        answered.add(window.example_index)
        assert window.sequence_ids[start] == window.sequence_ids[end] == 1 and start <= end
        assert example["context"][window.offsets[start][0]:window.offsets[end][1]] == \
            example["context"][answer_start:answer_end]
        assert decoded(tokenizer, feature["input_ids"][start:end + 1]) == \
            normalised(tokenizer, example["answers"][0]["text"])
    assert answered == set(range(len(examples))), "every answer is whole in some window"
    assert crossing > 0, "some windows cut an answer at their boundary"


def test_windows_start_every_doc_stride_tokens_and_cover_the_context(tokenizer, examples):
    windows = [window for window in encode_windows(tokenizer, examples, **SMALL_WINDOWS) if window.example_index == 3]
    context_offsets = tokenizer(examples[3]["context"], add_special_tokens=False,
                                return_offsets_mapping=True)["offset_mapping"]
    covered = []
    for number, window in enumerate(windows):
        own = [offset for offset, sequence in zip(window.offsets, window.sequence_ids) if sequence == 1]
        start = number * SMALL_WINDOWS["doc_stride"]
        assert own == context_offsets[start:start + len(own)]
        covered += range(start, start + len(own))
    assert sorted(set(covered)) == list(range(len(context_offsets)))
    assert len(windows) > 1 and all(window.step == SMALL_WINDOWS["doc_stride"] for window in windows)


def test_long_questions_are_cut_to_max_query_length(tokenizer):
    example = {"id": "long", "question": "   " + "why " * 40 + "?", "context": "The cat sat on the mat."}
    [window] = encode_windows(tokenizer, [example], **SMALL_WINDOWS)
    assert window.sequence_ids.count(0) == SMALL_WINDOWS["max_query_length"]
    assert window.input_ids[1] == tokenizer.convert_tokens_to_ids("w"), "leading white space of a question is dropped"


def test_a_question_leaving_no_room_for_the_context_is_refused(tokenizer, examples):
    with pytest.raises(UserError, match="leaves no room for the context"):
        encode_windows(tokenizer, examples, max_seq_length=20, doc_stride=4, max_query_length=18)


def test_max_context_on_hand_worked_windows():
    # parts of 10, 10 and 6 tokens starting every 4 tokens: positions 0-9, 4-13, 8-13.
    # Score min(left, right) + 0.01 * length: position 6 -> 3.1 in the first, 2.1 in the second part;
    # position 7 -> 2.1 and 3.1; position 12 -> 1.1 in the second, 1.06 in the third.
    first, second, third = max_context_flags([10, 10, 6], 4)
    assert first.tolist() == [True] * 7 + [False] * 3
    assert second.tolist() == [False] * 3 + [True] * 7
    assert third.tolist() == [False] * 6
    # parts of 5 starting every 2: position 3 scores 1.05 in both, the tie goes to the first part
    first, second = max_context_flags([5, 5], 2)
    assert first.tolist() == [True, True, True, True, False]
    assert second.tolist() == [False, False, True, True, True]


def test_evaluation_windows_give_each_context_token_one_max_context_window(tokenizer, examples):
    features, windows = evaluation_windows(tokenizer, examples, **SMALL_WINDOWS)
    assert len(features) == len(windows) and set(features[0]) == {"input_ids", "token_type_ids"}
    for example_index, example in enumerate(examples):
        starts = np.concatenate([window.char_starts[window.max_context] for window in windows
                                 if window.example_index == example_index])
        all_starts = {int(start) for window in windows if window.example_index == example_index
                      for start in window.char_starts[window.char_starts >= 0]}
        assert sorted(starts.tolist()) == sorted(all_starts)


# --------------------------------------------------------------------------- answers


def hand_made_windows():
    """Context "aa bb cc dd ee" in two windows [CLS] q [SEP] aa bb cc [SEP] and [CLS] q [SEP] cc dd ee [SEP];
    cc has its maximum context in the second."""
    outside = [-1, -1, -1]
    return [
        Window(0, np.array(outside + [0, 3, 6, -1]), np.array(outside + [2, 5, 8, -1]),
               np.array([False] * 3 + [True, True, False, False])),
        Window(0, np.array(outside + [6, 9, 12, -1]), np.array(outside + [8, 11, 14, -1]),
               np.array([False] * 3 + [True, True, True, False])),
    ]


# start logits: a question token (10) and cc in the first window (9) cannot start an answer
HAND_START_LOGITS = np.array([[0, 10, 0, 1, 2, 9, 0], [0, 0, 0, 2, 4, 0, 0]], dtype=np.float32)
# end logits: [CLS] (10) cannot end an answer
HAND_END_LOGITS = np.array([[10, 0, 0, 0, 1, 3, 0], [0, 0, 0, 1, 3, 2.5, 0]], dtype=np.float32)


def test_best_answer_is_searched_over_all_windows_of_a_question():
    example = [{"id": "q", "context": "aa bb cc dd ee"}]
    predictions, nbest = best_answers(example, hand_made_windows(), HAND_START_LOGITS, HAND_END_LOGITS)
    # candidates: first window aa 1, aa bb 2, aa bb cc 4, bb 3, bb cc 5; second: cc 3, cc dd 5,
    # cc dd ee 4.5, dd 7, dd ee 6.5, ee 2.5 (ties keep the earlier window)
    assert predictions == {"q": "dd"}
    assert [entry["text"] for entry in nbest["q"]] == [
        "dd", "dd ee", "bb cc", "cc dd", "cc dd ee", "aa bb cc", "bb", "cc", "ee", "aa bb", "aa"]
    assert nbest["q"][0] == pytest.approx({"text": "dd", "start_logit": 4.0, "end_logit": 3.0,
                                           "probability": nbest["q"][0]["probability"]})
    probabilities = [entry["probability"] for entry in nbest["q"]]
    assert sum(probabilities) == pytest.approx(1.0)
    assert probabilities[0] / probabilities[1] == pytest.approx(np.exp(0.5))


def test_answer_length_and_candidate_count_limits():
    example = [{"id": "q", "context": "aa bb cc dd ee"}]
    _, nbest = best_answers(example, hand_made_windows(), HAND_START_LOGITS, HAND_END_LOGITS, max_answer_length=1)
    assert [entry["text"] for entry in nbest["q"]] == ["dd", "bb", "cc", "ee", "aa"]
    # two start and two end candidates per window; two answers kept
    _, nbest = best_answers(example, hand_made_windows(), HAND_START_LOGITS, HAND_END_LOGITS, n_best_size=2)
    assert [entry["text"] for entry in nbest["q"]] == ["dd", "dd ee"]


def test_the_same_text_from_two_windows_is_listed_once():
    windows = hand_made_windows()
    windows[0].max_context[5] = True  # cc may now start an answer in both windows
    _, nbest = best_answers([{"id": "q", "context": "aa bb cc dd ee"}], windows, HAND_START_LOGITS,
                            HAND_END_LOGITS, max_answer_length=1)
    texts = [entry["text"] for entry in nbest["q"]]
    assert texts[0] == "cc" and texts.count("cc") == 1 and nbest["q"][0]["start_logit"] == 9.0


def test_a_question_without_candidates_gets_the_empty_answer():
    window = Window(0, np.array([-1, -1, 0, -1]), np.array([-1, -1, 2, -1]), np.zeros(4, dtype=bool))
    predictions, nbest = best_answers([{"id": "q", "context": "aa"}], [window], np.zeros((1, 4)), np.zeros((1, 4)))
    assert predictions == {"q": ""} and nbest["q"] == [{"text": "", "probability": 1.0, "start_logit": 0.0,
                                                        "end_logit": 0.0}]


def test_answers_map_back_to_the_original_context_characters(tokenizer, examples):
    """Logits that point at each gold answer's tokens in one of its windows (padded to the longest
    window, as evaluation gives them) give back the answer text exactly, unicode and runs of white
    space included."""
    features, windows = evaluation_windows(tokenizer, examples, **SMALL_WINDOWS)
    labelled = training_features(tokenizer, examples, **SMALL_WINDOWS)
    width = max(len(feature["input_ids"]) for feature in features)
    start_logits = np.full((len(windows), width), -np.inf, dtype=np.float32)
    end_logits = start_logits.copy()
    for index, (window, label) in enumerate(zip(windows, labelled)):
        size = len(window.char_starts)
        start_logits[index, :size] = end_logits[index, :size] = 0.0
        if label["start_positions"] and window.max_context[label["start_positions"]]:
            start_logits[index, label["start_positions"]] = end_logits[index, label["end_positions"]] = 5.0
    predictions, _ = best_answers(examples, windows, start_logits, end_logits)
    expected = {example["id"]: example["context"][slice(*example["answer_span"])] for example in examples}
    assert predictions == expected
    assert predictions["q11"] == "is   the largest city" and predictions["q10"] == "東京"
    assert squad_scores(predictions, gold_answers(examples)) == {"exact_match": 100.0, "f1": 100.0}


# --------------------------------------------------------------------------- loss


def test_span_loss_ignores_padding_unless_the_released_padding_is_asked(tokenizer, examples, tmp_path):
    model = AutoModelForQuestionAnswering.from_pretrained(make_tiny_bert(tmp_path / "bert", classifier=False)).eval()
    features = training_features(tokenizer, examples[:4], **SMALL_WINDOWS)
    losses = {}
    for pad_to_max_length in (False, True):
        batch = PadCollator({"": tokenizer.pad_token_id}, 96, pad_to_max_length)(features)
        assert batch["start_positions"].dtype == torch.long and batch["end_positions"].shape == (len(features),)
        with torch.no_grad():
            outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            token_type_ids=batch["token_type_ids"])
        for released in (False, True):
            losses[pad_to_max_length, released] = span_loss(*span_logits(outputs, batch, released), batch)
    assert losses[False, False] == pytest.approx(losses[True, False].item(), abs=1e-5)
    assert losses[True, True] > losses[True, False], "96 positions of softmax instead of the window's tokens"
