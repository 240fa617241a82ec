"""Golden runs: a fixed tiny run of each of the seven scripts gives the training losses at every
logged step, the dev results and the final weights recorded in ``tests/golden_runs.json``
(``tests/golden.py`` holds the runs, the record's tolerances and the measurement behind them).

They were recorded before the scripts' per-batch steps moved into ``utils/`` (the LGTM runs anew,
with options that make them informative), so that a change of layout that alters a loss, a random
draw, an update order or a schedule is caught; float noise between machines is not
(``tests.golden.TOLERANCES``: ten times the largest distance measured across thread counts,
instruction sets and the GPU machine's torch and transformers). After a deliberate change of
behaviour, record them again:

    GOLDEN_RECORD=1 python -m pytest tests/test_golden.py
"""

import json
import os

import pytest

import utils.engine.loop
from tests.golden import RECORD_FILE, RUN_NAMES, golden_commands, mismatches, record_runs, run_golden

RECORD = os.environ.get("GOLDEN_RECORD") == "1"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """Every golden run, one after the other: ``(inputs, root, {name: summary})``."""
    root = tmp_path_factory.mktemp("golden")
    inputs, results = record_runs(root)
    if RECORD:
        RECORD_FILE.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return inputs, root, results


@pytest.mark.parametrize("name", RUN_NAMES)
def test_run_matches_its_golden_record(name, golden):
    record = json.loads(RECORD_FILE.read_text())
    assert len(golden[2][name]["losses"]) >= 2, "each run logs several steps"
    assert mismatches(golden[2][name], record[name], name) == []


def reversed_batches(epoch_batches):
    def batches(*args, **kwargs):
        return list(reversed(epoch_batches(*args, **kwargs)))
    return batches


CHANGES = {  # a real change of behaviour, as small as one can make it: (run, argv edit, patch)
    "another seed": ("run_glue", {"--seed": "8"}, None),
    "another batch order": ("run_glue", {}, reversed_batches),
    "a loss weight of 0.11 for 0.1": ("run_glue_w_distillation", {"--alpha_mse": "0.11"}, None),
    "another seed (LGTM)": ("run_lgtm_glue lgtm", {"--seed": "8"}, None),
}


def changed_run(golden, tmp_path, monkeypatch, name, edits, patch):
    """The golden run ``name`` again into ``tmp_path``, its options edited, ``patch`` applied to the
    loop's batch plans; its summary."""
    inputs, root, _ = golden
    main, argv, where = golden_commands(inputs, root)[name]
    out = argv.index("--output_dir") + 1
    argv = [*argv[:out], str(tmp_path / "out"), *argv[out + 1:]]
    for option, value in edits.items():
        argv[len(argv) - 1 - argv[::-1].index(option) + 1] = value
    where = {key: tmp_path / "out" / path.relative_to(where["out"]) if key != "out" else tmp_path / "out"
             for key, path in where.items()}
    if patch is not None:
        monkeypatch.setattr(utils.engine.loop, "epoch_batches", patch(utils.engine.loop.epoch_batches))
    return run_golden(name, main, argv, where)


@pytest.mark.parametrize("change", CHANGES)
def test_the_record_catches_a_real_change(change, golden, tmp_path, monkeypatch):
    """The tolerances let float noise through, not behaviour: each change fails the comparison."""
    name, edits, patch = CHANGES[change]
    changed = changed_run(golden, tmp_path, monkeypatch, name, edits, patch)
    failures = mismatches(changed, json.loads(RECORD_FILE.read_text())[name], name)
    assert any(".losses" in line for line in failures), failures


def test_the_same_run_again_matches_the_record(golden, tmp_path, monkeypatch):
    """The control of the test above: the run repeated unchanged, into another folder, matches."""
    unchanged = changed_run(golden, tmp_path, monkeypatch, "run_glue_w_distillation", {}, None)
    assert mismatches(unchanged, json.loads(RECORD_FILE.read_text())["run_glue_w_distillation"], "control") == []
