"""GLUE task registry and readers, on fixtures written in the formats of the real GLUE files."""

import json
import logging
import warnings

import datasets
import pytest

from utils.engine.errors import UserError
from utils.tasks.glue_data import (
    GLUE_DIAGNOSTIC,
    GLUE_TASKS,
    get_task,
    load_glue_diagnostic,
    load_glue_hub,
    load_glue_split,
    read_glue_diagnostic,
    read_glue_file,
    read_glue_tsv,
    submission_file_names,
    write_glue_submission,
)

MNLI_PARSES = ["( ( The cat ) sat )", "( The cat )", "(ROOT (S (NP The cat) (VP sat)))", "(ROOT (NP The cat))"]
MNLI_TRAIN_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                     "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
MRPC_HEADER = ["#1 ID", "#2 ID", "#1 String", "#2 String"]


def tsv(*rows, final_newline=True):
    """The text of a TSV file with these rows of fields."""
    return "\n".join("\t".join(str(field) for field in row) for row in rows) + ("\n" if final_newline else "")


def mnli_row(index, sentence1, sentence2, *labels):
    return [index, 1000 + index, f"{1000 + index}e", "fiction", *MNLI_PARSES, sentence1, sentence2, *labels]


def stsb_row(index, sentence1, sentence2, *score):
    return [index, "main-captions", "MSRvid", "2012test", f"{index:04d}", "none", "none", sentence1, sentence2, *score]


# task -> {file name: (file text, expected examples as (idx, text_a, text_b, label))}
GLUE_FILES = {
    "cola": {
        "train.tsv": (tsv(["gj04", 1, "", "Our friends won't buy this analysis."],
                          ["gj04", 0, "*", "They drank the pub."]),
                      [(0, "Our friends won't buy this analysis.", None, 1), (1, "They drank the pub.", None, 0)]),
        "dev.tsv": (tsv(["gj04", 1, "", "The sailors rode the breeze."], final_newline=False),
                    [(0, "The sailors rode the breeze.", None, 1)]),
        "test.tsv": (tsv(["index", "sentence"], [0, "Bill whistled past the house."], [1, "The car honked."]),
                     [(0, "Bill whistled past the house.", None, None), (1, "The car honked.", None, None)]),
    },
    "sst2": {
        "train.tsv": (tsv(["sentence", "label"], ["hide new secretions ", 0], ["a charming journey . ", 1]),
                      [(0, "hide new secretions ", None, 0), (1, "a charming journey . ", None, 1)]),
        "dev.tsv": (tsv(["sentence", "label"], ["unflinchingly bleak ", 0]), [(0, "unflinchingly bleak ", None, 0)]),
        "test.tsv": (tsv(["index", "sentence"], [0, "uneasy mishmash ."]), [(0, "uneasy mishmash .", None, None)]),
    },
    "mrpc": {
        "train.tsv": (tsv(["\ufeffQuality", *MRPC_HEADER],
                          [1, 702876, 702977, 'He called " the witness " .', 'Referring to " the witness " .'],
                          [0, 2108705, 2108831, "Yucaipa owned Dominick 's .", "Yucaipa bought Dominick 's ."]),
                      [(0, 'He called " the witness " .', 'Referring to " the witness " .', 1),
                       (1, "Yucaipa owned Dominick 's .", "Yucaipa bought Dominick 's .", 0)]),
        "dev.tsv": (tsv(["\ufeffQuality", *MRPC_HEADER], [0, 1, 2, "A b .", "C d ."]), [(0, "A b .", "C d .", 0)]),
        "test.tsv": (tsv(["index", *MRPC_HEADER], [0, 1089874, 1089925, "PCCW 's chief .", "The chief ."]),
                     [(0, "PCCW 's chief .", "The chief .", None)]),
    },
    "stsb": {
        "train.tsv": (tsv([*STSB_HEADER, "score"], stsb_row(0, "A plane is taking off.", "An air plane.", "5.000"),
                          stsb_row(1, "A man plays a flute.", "A man plays.", "3.800")),
                      [(0, "A plane is taking off.", "An air plane.", 5.0),
                       (1, "A man plays a flute.", "A man plays.", 3.8)]),
        "dev.tsv": (tsv([*STSB_HEADER, "score"], stsb_row(7, "A man dances.", "A man is dancing.", "4.750")),
                    [(7, "A man dances.", "A man is dancing.", 4.75)]),
        "test.tsv": (tsv(STSB_HEADER, stsb_row(0, "A girl is styling her hair.", "A girl brushes her hair.")),
                     [(0, "A girl is styling her hair.", "A girl brushes her hair.", None)]),
    },
    "qqp": {
        "train.tsv": (tsv(["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                          [133273, 213221, 213222, "How is life?", "Which level?", 0],
                          [402555, 536040, 536041, "Why?", "Why not?", 1]),
                      [(133273, "How is life?", "Which level?", 0), (402555, "Why?", "Why not?", 1)]),
        "dev.tsv": (tsv(["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], [5, 1, 2, "A?", "B?", 1]),
                    [(5, "A?", "B?", 1)]),
        "test.tsv": (tsv(["id", "question1", "question2"], [0, "Would you?", "Could you?"]),
                     [(0, "Would you?", "Could you?", None)]),
    },
    "mnli": {
        "train.tsv": (tsv([*MNLI_TRAIN_HEADER, "label1", "gold_label"],
                          mnli_row(0, 'He said "yes', "He agreed.", "neutral", "neutral"),
                          mnli_row(1, "It rains.", 'It is "dry".', "contradiction", "contradiction"),
                          mnli_row(2, "It rains.", "It is wet.", "neutral", "entailment")),
                      [(0, 'He said "yes', "He agreed.", 1), (1, "It rains.", 'It is "dry".', 2),
                       (2, "It rains.", "It is wet.", 0)]),
        "dev_matched.tsv": (tsv([*MNLI_TRAIN_HEADER, "label1", "label2", "label3", "label4", "label5", "gold_label"],
                                mnli_row(3, "A.", "B.", *["neutral"] * 5, "neutral")),
                            [(3, "A.", "B.", 1)]),
        "dev_mismatched.tsv": (tsv([*MNLI_TRAIN_HEADER, "label1", "label2", "label3", "label4", "label5",
                                    "gold_label"], mnli_row(4, "C.", "D.", *["entailment"] * 5, "contradiction")),
                               [(4, "C.", "D.", 2)]),
        "test_matched.tsv": (tsv(MNLI_TRAIN_HEADER, mnli_row(0, "E.", '"F.')), [(0, "E.", '"F.', None)]),
        "test_mismatched.tsv": (tsv(MNLI_TRAIN_HEADER, mnli_row(9, "G.", "H.")), [(9, "G.", "H.", None)]),
    },
    "qnli": {
        "train.tsv": (tsv(["index", "question", "sentence", "label"], [0, "What came?", "It came.", "entailment"],
                          [1, "Who?", "Nobody knows.", "not_entailment"]),
                      [(0, "What came?", "It came.", 0), (1, "Who?", "Nobody knows.", 1)]),
        "dev.tsv": (tsv(["index", "question", "sentence", "label"], [0, "Q?", "S.", "not_entailment"]),
                    [(0, "Q?", "S.", 1)]),
        "test.tsv": (tsv(["index", "question", "sentence"], [0, "Q?", 'A "quiescent" stance.']),
                     [(0, "Q?", 'A "quiescent" stance.', None)]),
    },
    "rte": {
        "train.tsv": (tsv(["index", "sentence1", "sentence2", "label"], [0, "No weapons found.", "Weapons found.",
                                                                           "not_entailment"],
                          [1, "Benedict is pope.", "Benedict leads.", "entailment"]),
                      [(0, "No weapons found.", "Weapons found.", 1), (1, "Benedict is pope.", "Benedict leads.", 0)]),
        "dev.tsv": (tsv(["index", "sentence1", "sentence2", "label"], [0, "A.", "B.", "entailment"],
                        final_newline=False),
                    [(0, "A.", "B.", 0)]),
        "test.tsv": (tsv(["index", "sentence1", "sentence2"], [0, "C.", "D."]), [(0, "C.", "D.", None)]),
    },
    "wnli": {
        "train.tsv": (tsv(["index", "sentence1", "sentence2", "label"], [0, "I stuck a pin.", "It had a hole.", 1],
                          [1, "John is short.", "Billy is short.", 0]),
                      [(0, "I stuck a pin.", "It had a hole.", 1), (1, "John is short.", "Billy is short.", 0)]),
        "dev.tsv": (tsv(["index", "sentence1", "sentence2", "label"], [0, "A.", "B.", 0]), [(0, "A.", "B.", 0)]),
        "test.tsv": (tsv(["index", "sentence1", "sentence2"], [0, "C.", "D."]), [(0, "C.", "D.", None)]),
    },
}
DIAGNOSTIC_TEXT = tsv(["index", "sentence1", "sentence2"], [0, "The cat sat.", "The cat did not sit."],
                      [1, 'A "quoted" cat.', "A cat."])
DIAGNOSTIC_EXAMPLES = [(0, "The cat sat.", "The cat did not sit.", None), (1, 'A "quoted" cat.', "A cat.", None)]


def as_tuples(examples):
    return [(example["idx"], example["text_a"], example["text_b"], example["label"]) for example in examples]


def split_of(file_name):
    return file_name.removesuffix(".tsv").replace("dev", "validation")


@pytest.fixture
def glue_dir(tmp_path):
    """A ``glue_data`` folder with every task's files and the diagnostic set."""
    for task_name, files in GLUE_FILES.items():
        folder = tmp_path / "glue_data" / GLUE_TASKS[task_name].dir_name
        folder.mkdir(parents=True)
        for file_name, (text, _) in files.items():
            (folder / file_name).write_text(text, encoding="utf-8")
    (tmp_path / "glue_data" / "diagnostic").mkdir()
    (tmp_path / "glue_data" / "diagnostic" / "diagnostic.tsv").write_text(DIAGNOSTIC_TEXT, encoding="utf-8")
    return tmp_path / "glue_data"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- registry

def test_registry_holds_the_nine_tasks_with_hub_label_orders():
    assert list(GLUE_TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    assert get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert get_task("wnli").label_names == ("not_entailment", "entailment")
    assert get_task("stsb").is_regression and get_task("stsb").num_labels == 1
    assert get_task("mnli").num_labels == 3 and not get_task("mnli").is_regression
    assert {name: task.main_metric for name, task in GLUE_TASKS.items()} == {
        "cola": "matthews_correlation", "sst2": "accuracy", "mrpc": "f1", "stsb": "pearson", "qqp": "f1",
        "mnli": "accuracy", "qnli": "accuracy", "rte": "accuracy", "wnli": "accuracy"}
    assert get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert get_task("mnli").test_splits == ("test_matched", "test_mismatched")
    assert get_task("rte").eval_splits == ("validation",) and get_task("rte").test_splits == ("test",)


@pytest.mark.parametrize("name, expected", [
    ("rte", "rte"), ("RTE", "rte"), ("Rte", "rte"), ("sst-2", "sst2"), ("SST-2", "sst2"), ("SST2", "sst2"),
    ("sts-b", "stsb"), ("STS-B", "stsb"), ("CoLA", "cola"), ("MNLI", "mnli"),
])
def test_get_task_accepts_any_case_and_legacy_names(name, expected):
    assert get_task(name).name == expected


def test_get_task_passes_a_task_through():
    assert get_task(GLUE_TASKS["qqp"]) is GLUE_TASKS["qqp"]


def test_unknown_task_lists_the_valid_names():
    valid_names = "cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli"
    with pytest.raises(UserError, match=f"unknown GLUE task 'squad'; valid names: {valid_names}"):
        get_task("squad")


# ---------------------------------------------------------------------------- classic TSV files

@pytest.mark.parametrize("task_name", list(GLUE_FILES))
def test_every_file_of_every_task_reads_in_hub_label_order(glue_dir, task_name):
    for file_name, (_, expected) in GLUE_FILES[task_name].items():
        assert as_tuples(read_glue_tsv(task_name, glue_dir, split_of(file_name))) == expected, file_name


def test_data_dir_may_be_the_task_folder(glue_dir):
    from_parent = read_glue_tsv("rte", glue_dir, "train")
    assert read_glue_tsv("RTE", glue_dir / "RTE", "train") == from_parent
    assert read_glue_tsv("rte", str(glue_dir / "RTE") + "/", "train") == from_parent


def test_diagnostic_set_from_glue_data_its_folder_or_a_task_folder(glue_dir):
    for data_dir in (glue_dir, glue_dir / "diagnostic", glue_dir / "MNLI"):
        assert as_tuples(read_glue_diagnostic(data_dir)) == DIAGNOSTIC_EXAMPLES
    assert as_tuples(load_glue_diagnostic(glue_dir)) == DIAGNOSTIC_EXAMPLES


def test_crlf_line_ends_and_blank_lines_are_tolerated(tmp_path):
    write(tmp_path / "dev.tsv", "sentence\tlabel\r\ngood .\t1\r\n\r\nbad .\t0\r\n\n")
    assert as_tuples(read_glue_tsv("sst2", tmp_path, "validation")) == [(0, "good .", None, 1), (2, "bad .", None, 0)]


def test_qqp_malformed_rows_are_skipped_with_one_counted_warning(tmp_path, caplog):
    rows = [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]]
    rows += [[i, 2 * i, 2 * i + 1, f"Question {i}?", f"Other {i}?", i % 2] for i in range(10)]
    rows[3] = [2, 4, 5, "How do I cut"]  # a question with a line break splits the row in two
    rows[4] = ["my hair?", 0]
    write(tmp_path / "train.tsv", tsv(*rows))
    with caplog.at_level(logging.WARNING, logger="utils.tasks.glue_data"):
        examples = read_glue_tsv("qqp", tmp_path, "train")
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "train.tsv" in message and "2 of 10 rows" in message and "line 4" in message
    assert caplog.records[0].exc_info is None and "\n" not in message, "one line, no Python source line"
    assert [example["idx"] for example in examples] == [0, 1, 4, 5, 6, 7, 8, 9]


def test_a_few_bad_labels_are_skipped_with_a_warning(tmp_path, caplog):
    write(tmp_path / "dev.tsv", tsv(["index", "sentence1", "sentence2", "label"],
                                    [0, "A.", "B.", "entailment"], [1, "C.", "D.", "entailed"], [2, "E.", "F.", 1]))
    with caplog.at_level(logging.WARNING, logger="utils.tasks.glue_data"):
        assert as_tuples(read_glue_tsv("rte", tmp_path, "validation")) == [(0, "A.", "B.", 0), (2, "E.", "F.", 1)]
    assert "label 'entailed' is not one of" in caplog.text


def test_an_stsb_score_off_the_0_to_5_scale_is_a_malformed_row(tmp_path, caplog):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
              "score"]
    rows = [[i, "main", "f", "2012", i, "none", "none", f"A {i}.", f"B {i}.", score]
            for i, score in enumerate(["0.000", "5.000", "1e39", "2.500", "-0.5"])]
    write(tmp_path / "train.tsv", tsv(header, *rows))
    with caplog.at_level(logging.WARNING, logger="utils.tasks.glue_data"):
        examples = read_glue_tsv("stsb", tmp_path, "train")
    assert [example["label"] for example in examples] == [0.0, 5.0, 2.5]
    assert "2 of 5 rows are malformed" in caplog.text and "outside STS-B's 0 .. 5 scale" in caplog.text


def test_mostly_garbage_file_names_file_and_first_bad_line(tmp_path):
    write(tmp_path / "train.tsv", "sentence\tlabel\nfine .\t1\nno tab here\nnor here\n")
    with pytest.raises(UserError, match=r"train\.tsv: 2 of 3 rows are malformed .*line 3: expected 2"):
        read_glue_tsv("sst2", tmp_path, "train")


def test_mostly_bad_labels_are_an_error(tmp_path):
    write(tmp_path / "train.tsv", tsv(["sentence", "label"], ["a", "positive!"], ["b", "2"], ["c", 1]))
    with pytest.raises(UserError, match=r"train\.tsv: 2 of 3 .*line 2: label 'positive!'"):
        read_glue_tsv("sst2", tmp_path, "train")


def test_bad_stsb_scores_are_reported(tmp_path):
    write(tmp_path / "dev.tsv", tsv([*STSB_HEADER, "score"], stsb_row(0, "A.", "B.", "high")))
    with pytest.raises(UserError, match="score 'high' is not a number"):
        read_glue_tsv("stsb", tmp_path, "validation")


def test_file_of_the_wrong_task_names_expected_and_found_columns(glue_dir):
    with pytest.raises(UserError, match="expects columns sentence1, sentence2, label.*found index, question"):
        read_glue_tsv("rte", glue_dir / "QNLI", "train")


def test_labelled_split_without_its_label_column_is_an_error(tmp_path):
    write(tmp_path / "train.tsv", tsv(["index", "sentence1", "sentence2"], [0, "A.", "B."]))
    with pytest.raises(UserError, match="missing label"):
        read_glue_tsv("wnli", tmp_path, "train")


@pytest.mark.parametrize("text, message", [("", "is empty"), ("sentence\tlabel\n", "has no data rows")])
def test_empty_files_are_errors(tmp_path, text, message):
    write(tmp_path / "train.tsv", text)
    with pytest.raises(UserError, match=message):
        read_glue_tsv("sst2", tmp_path, "train")


def test_file_that_is_not_utf8_is_an_error(tmp_path):
    (tmp_path / "train.tsv").write_bytes(b"sentence\tlabel\ncaf\xe9\t1\n")
    with pytest.raises(UserError, match="not UTF-8"):
        read_glue_tsv("sst2", tmp_path, "train")


def test_missing_data_dir_is_an_error(tmp_path):
    with pytest.raises(UserError, match="data directory not found: .*nowhere"):
        read_glue_tsv("rte", tmp_path / "nowhere", "train")


def test_missing_split_file_names_task_split_and_paths(glue_dir):
    (glue_dir / "RTE" / "test.tsv").unlink()
    with pytest.raises(UserError, match=r"test split of task rte: looked for .*RTE/test\.tsv"):
        read_glue_tsv("rte", glue_dir, "test")


def test_split_the_task_does_not_have_is_an_error(glue_dir):
    with pytest.raises(UserError, match="task mnli has no split 'validation'.*validation_matched"):
        read_glue_tsv("mnli", glue_dir, "validation")


def test_large_file_reads_every_row(tmp_path):
    header = [*MNLI_TRAIN_HEADER, "label1", "gold_label"]
    labels = ("entailment", "neutral", "contradiction")
    rows = [mnli_row(i, f"Premise number {i} says something.", f"Hypothesis {i}.", labels[i % 3],
                     labels[i % 3]) for i in range(20_000)]
    write(tmp_path / "train.tsv", tsv(header, *rows))
    examples = read_glue_tsv("mnli", tmp_path, "train")
    # row 19999 is "neutral" (19999 % 3 == 1), hub id 1
    assert len(examples) == 20_000 and examples[-1]["label"] == 1


# ---------------------------------------------------------------------------- csv and json files

def test_csv_with_hub_columns_and_label_names(tmp_path):
    path = write(tmp_path / "train.csv", 'premise,hypothesis,label\n"A, quoted ""cat"".",B.,contradiction\n'
                                         "C.,D.,entailment\n")
    assert as_tuples(read_glue_file("mnli", path)) == [(0, 'A, quoted "cat".', "B.", 2), (1, "C.", "D.", 0)]


def test_csv_without_hub_columns_uses_the_first_non_label_columns(tmp_path):
    path = write(tmp_path / "dev.csv", "label,first,second,extra\n1,A.,B.,x\n0,C.,D.,y\n")
    assert as_tuples(read_glue_file("RTE", path)) == [(0, "A.", "B.", 1), (1, "C.", "D.", 0)]


def test_json_list_with_class_ids_and_idx(tmp_path):
    records = [{"idx": 7, "sentence": "good", "label": 1}, {"idx": 9, "sentence": "bad", "label": 0}]
    path = write(tmp_path / "train.json", json.dumps(records))
    assert as_tuples(read_glue_file("sst2", path)) == [(7, "good", None, 1), (9, "bad", None, 0)]


def test_json_lines_with_label_names_and_scores(tmp_path):
    lines = [{"question1": "A?", "question2": "B?", "label": "duplicate"},
             {"question1": "C?", "question2": "D?", "label": "not_duplicate"}]
    path = write(tmp_path / "train.jsonl", "\n".join(json.dumps(line) for line in lines))
    assert as_tuples(read_glue_file("qqp", path)) == [(0, "A?", "B?", 1), (1, "C?", "D?", 0)]
    path = write(tmp_path / "stsb.json", json.dumps({"sentence1": "A.", "sentence2": "B.", "label": 3.2}) + "\n")
    assert as_tuples(read_glue_file("stsb", path)) == [(0, "A.", "B.", 3.2)]


def test_file_without_label_column_or_with_minus_one_is_unlabelled(tmp_path):
    path = write(tmp_path / "test.csv", "question,sentence\nQ?,S.\n")
    assert as_tuples(read_glue_file("qnli", path)) == [(0, "Q?", "S.", None)]
    path = write(tmp_path / "test.jsonl", json.dumps({"sentence": "s", "label": -1}))
    assert as_tuples(read_glue_file("cola", path)) == [(0, "s", None, None)]


def test_file_with_too_few_columns_names_expected_and_found(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\nA.,1\n")
    with pytest.raises(UserError, match="expects text columns sentence1, sentence2 .*found text, label"):
        read_glue_file("mrpc", path)


@pytest.mark.parametrize("label", ["maybe", "3", "1.5"])
def test_file_with_a_bad_label_names_the_row(tmp_path, label):
    path = write(tmp_path / "train.csv", f"sentence1,sentence2,label\nA.,B.,1\nC.,D.,{label}\n")
    with pytest.raises(UserError, match=f"train.csv: row 2: label '{label}' is not one of"):
        read_glue_file("wnli", path)


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="data file not found"):
        read_glue_file("rte", tmp_path / "missing.csv")
    with pytest.raises(UserError, match="expected .csv, .json or .jsonl"):
        read_glue_file("rte", write(tmp_path / "train.txt", "x"))
    with pytest.raises(UserError, match="line 2"):
        read_glue_file("sst2", write(tmp_path / "broken.jsonl", '{"sentence": "a"}\n{"sentence": \n'))
    with pytest.raises(UserError, match="has no rows"):
        read_glue_file("sst2", write(tmp_path / "empty.csv", "sentence,label\n"))


# ---------------------------------------------------------------------------- the hub

HUB_COLUMNS = {
    "cola": {"sentence": ["s0", "s1"]},
    "sst2": {"sentence": ["s0", "s1"]},
    "mrpc": {"sentence1": ["a0", "a1"], "sentence2": ["b0", "b1"]},
    "stsb": {"sentence1": ["a0", "a1"], "sentence2": ["b0", "b1"]},
    "qqp": {"question1": ["a0", "a1"], "question2": ["b0", "b1"]},
    "mnli": {"premise": ["a0", "a1"], "hypothesis": ["b0", "b1"]},
    "qnli": {"question": ["a0", "a1"], "sentence": ["b0", "b1"]},
    "rte": {"sentence1": ["a0", "a1"], "sentence2": ["b0", "b1"]},
    "wnli": {"sentence1": ["a0", "a1"], "sentence2": ["b0", "b1"]},
}


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace ``datasets.load_dataset`` by an in-memory hub; records the calls it gets."""
    calls = []

    def load_dataset(path, name, split, cache_dir=None, **kwargs):
        calls.append((path, name, split, cache_dir))
        columns = HUB_COLUMNS.get(name, {"premise": ["p"], "hypothesis": ["h"]})
        size = len(next(iter(columns.values())))
        test_label = -1.0 if name == "stsb" else -1
        labels = [test_label] * size if split.startswith("test") else [2.5, 1.0] if name == "stsb" else [1, 0]
        return datasets.Dataset.from_dict({**columns, "label": labels[:size], "idx": [10 + i for i in range(size)]})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


@pytest.mark.parametrize("task_name", list(HUB_COLUMNS))
def test_hub_examples_of_every_task(fake_hub, task_name):
    task = get_task(task_name)
    pair = len(task.hub_text_columns) == 2
    train_labels = [2.5, 1.0] if task.is_regression else [1, 0]
    expected_texts = [("a0", "b0"), ("a1", "b1")] if pair else [("s0", None), ("s1", None)]
    for split, labels in ((task.eval_splits[0], train_labels), (task.test_splits[-1], [None, None])):
        examples = load_glue_hub(task_name, split, cache_dir="cache")
        assert as_tuples(examples) == [(10 + i, *expected_texts[i], labels[i]) for i in range(2)]
    assert fake_hub[-1] == ("nyu-mll/glue", task_name, task.test_splits[-1], "cache")


def test_hub_diagnostic_set(fake_hub):
    assert as_tuples(load_glue_diagnostic()) == [(10, "p", "h", None)]
    assert fake_hub == [("nyu-mll/glue", "ax", "test", None)]


def test_an_unreachable_hub_reads_datasets_from_the_local_cache_only(monkeypatch):
    """When the hub does not answer, the hub dataset is asked of the local cache only, and the hub
    client's own offline setting stays as the user left it."""
    import huggingface_hub.constants

    from utils.engine import models

    seen = []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models, "probe_hub", lambda endpoint: "network is unreachable")
    monkeypatch.setattr(models.hub_reachable, "answer", None, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: seen.append(kwargs) or datasets.Dataset.from_dict(
        {"sentence1": ["a"], "sentence2": ["b"], "label": [1], "idx": [0]}))
    assert len(load_glue_hub("rte", "train")) == 1
    assert seen[0]["download_config"].local_files_only is True
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False


def test_hub_failure_is_a_user_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no internet")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match="could not load nyu-mll/glue.*--data_dir"):
        load_glue_hub("rte", "train")


def test_load_glue_split_prefers_file_then_data_dir_then_hub(glue_dir, tmp_path, fake_hub):
    data_file = write(tmp_path / "train.jsonl", json.dumps({"sentence1": "x", "sentence2": "y", "label": 0}))
    assert as_tuples(load_glue_split("rte", "train", data_dir=glue_dir, data_file=data_file)) == [(0, "x", "y", 0)]
    assert load_glue_split("rte", "train", data_dir=glue_dir) == read_glue_tsv("rte", glue_dir, "train")
    assert fake_hub == []
    assert as_tuples(load_glue_split(get_task("rte"), "train")) == [(10, "a0", "b0", 1), (11, "a1", "b1", 0)]


# ---------------------------------------------------------------------------- submission files

def test_submission_file_names():
    assert {name: submission_file_names(name) for name in GLUE_TASKS} == {
        "cola": {"test": "CoLA.tsv"}, "sst2": {"test": "SST-2.tsv"}, "mrpc": {"test": "MRPC.tsv"},
        "stsb": {"test": "STS-B.tsv"}, "qqp": {"test": "QQP.tsv"},
        "mnli": {"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
        "qnli": {"test": "QNLI.tsv"}, "rte": {"test": "RTE.tsv"}, "wnli": {"test": "WNLI.tsv"}}
    assert submission_file_names(GLUE_DIAGNOSTIC) == {"test": "AX.tsv"}


@pytest.mark.parametrize("task, predictions, expected", [
    ("cola", [1, 0], ["1", "0"]),
    ("sst2", [0, 1], ["0", "1"]),
    ("mrpc", [1, 1], ["1", "1"]),
    ("qqp", [0, 1], ["0", "1"]),
    ("wnli", [1, 0], ["1", "0"]),
    ("mnli", [2, 1], ["contradiction", "neutral"]),
    ("qnli", [0, 1], ["entailment", "not_entailment"]),
    ("rte", [1, 0], ["not_entailment", "entailment"]),
    ("stsb", [3.14159, 0.5], ["3.142", "0.500"]),
    (GLUE_DIAGNOSTIC, [0, 2], ["entailment", "contradiction"]),
])
def test_submission_rows_spell_predictions_as_the_server_expects(tmp_path, task, predictions, expected):
    path = tmp_path / "out" / "predictions.tsv"
    write_glue_submission(path, task, [4, 5], predictions)
    assert path.read_text(encoding="utf-8").split("\n") == ["index\tprediction", f"4\t{expected[0]}",
                                                            f"5\t{expected[1]}", ""]


def test_submission_rejects_bad_predictions(tmp_path):
    with pytest.raises(ValueError, match="not a class id"):
        write_glue_submission(tmp_path / "RTE.tsv", "rte", [0], [2])
    with pytest.raises(ValueError, match="1 indices but 2 predictions"):
        write_glue_submission(tmp_path / "RTE.tsv", "rte", [0], [0, 1])


def test_no_warning_for_clean_files(glue_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for task_name, files in GLUE_FILES.items():
            for file_name in files:
                read_glue_tsv(task_name, glue_dir, split_of(file_name))
