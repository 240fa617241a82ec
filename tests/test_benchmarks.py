"""The benchmark scripts run end to end on tiny shapes and print their tables (their figures
are measured by running them, never asserted here)."""

import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from benchmarks import lgtm_step, run_all
from benchmarks.flops import batch_flops, forward_flops

TINY = ["--hidden", "32", "--teacher_layers", "1", "--student_layers", "1"]


def test_run_all_prints_every_row_and_target(glue_dir, capsys):
    run_all.main(["--sst2_dir", str(glue_dir / "SST-2"), "--batch_size", "4", "--steps", "1", "--warmup", "0",
                  "--heads", "2", "--vocab_size", "200", "--pool_chunks", "1", "--no_memory", "--peak_tflops", "1",
                  *TINY])
    table = capsys.readouterr().out
    for row in run_all.ROWS:  # examples/s, tokens/s, ms/step, TFLOP/s, MFU (ours only)
        assert re.search(rf"^{re.escape(row)} +ours( +[\d.e-]+){{4}} +\d+\.\d%", table, re.MULTILINE), row
        assert re.search(rf"^{re.escape(row)} +reference( +[\d.e-]+){{4}} +n/a", table, re.MULTILINE), row
    assert re.search(r"^LGTM training +ours +\d+\.\d", table, re.MULTILINE)
    assert re.search(r"model FLOPs utilisation \(ours\) +\d+\.\d%", table)
    for target in ("one-to-one distillation: ours / reference examples/s", "loss terms share",
                   "LGTM step, quiz = x / ProKT step (ours", "LGTM training: ours / released"):
        assert re.search(rf"{re.escape(target)}.* (yes|NO)$", table, re.MULTILINE), target


@pytest.mark.long
def test_lgtm_step_prints_each_method(capsys):
    lgtm_step.main(["--hidden", "64", "--teacher_layers", "1", "--student_layers", "1", "--vocab_size", "100", "--batch_size", "4", "--seq_length", "16", "--repeats", "1",
                    "--warmup", "0", "--threads", "1"])
    table = capsys.readouterr().out
    for method in lgtm_step.METHODS:
        assert re.search(rf"^{re.escape(method)} +\d+\.\d+ +\d+\.\d+", table, re.MULTILINE), method
    assert re.search(r"^LGTM / ProKT +\d+\.\d+", table, re.MULTILINE)


def test_run_all_needs_the_sst2_folder(capsys):
    with pytest.raises(SystemExit) as stop:
        run_all.main([])
    assert stop.value.code == 2 and "--sst2_dir" in capsys.readouterr().err


@pytest.mark.parametrize("make", ["bert", "distilbert"])
@pytest.mark.parametrize("shape", [(3, 7), (2, 16)])
def test_forward_flops_match_the_counted_matrix_products(make, shape):
    """benchmarks/flops.py against torch's FLOP counter on a real forward (eager attention, whose
    matrix products the counter sees), and a forward and backward at three times that."""
    if make == "bert":
        model = BertForSequenceClassification(BertConfig(
            vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            num_labels=3, attn_implementation="eager"))
    else:
        model = DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=50, dim=32, n_layers=3, n_heads=4, hidden_dim=48, num_labels=3, attn_implementation="eager"))
    batch = {"input_ids": torch.randint(1, 50, shape), "attention_mask": torch.ones(shape, dtype=torch.long)}
    with FlopCounterMode(display=False) as counter:
        logits = model(**batch).logits
    assert counter.get_total_flops() == forward_flops(model.config, *shape)
    with FlopCounterMode(display=False) as counter:
        model(**batch).logits.sum().backward()
    assert counter.get_total_flops() == batch_flops(model, batch, 3) and logits.shape == (shape[0], 3)
