"""The training loop: its batch plan (coverage, determinism, data parallel split, length grouping) and
the contract of its micro_batch_hook."""

import random

import pytest

from utils.engine.loop import epoch_batches


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("grouped", [False, True])
def test_every_example_once_per_epoch(world_size, grouped):
    lengths = [random.Random(i).randint(1, 500) for i in range(1001)] if grouped else None
    seen = []
    plans = [epoch_batches(1001, 8, seed=3, epoch=1, world_size=world_size, rank=rank, lengths=lengths)
             for rank in range(world_size)]
    assert len({len(plan) for plan in plans}) == 1, "every process takes the same number of steps"
    for plan in plans:
        assert all(batch for batch in plan)
        seen += [i for batch in plan for i in batch]
    assert sorted(seen) == list(range(1001))


def test_order_depends_on_seed_and_epoch_only():
    first = epoch_batches(100, 8, seed=1, epoch=0)
    assert first == epoch_batches(100, 8, seed=1, epoch=0)
    assert first != epoch_batches(100, 8, seed=1, epoch=1)
    assert epoch_batches(100, 8, seed=1, epoch=0, shuffle=False)[0] == list(range(8))


def test_small_last_batch_is_topped_up_for_every_process():
    plans = [epoch_batches(9, 4, seed=0, epoch=0, world_size=4, rank=rank) for rank in range(4)]
    assert all(len(plan) == 1 for plan in plans)  # 9 examples, global batch 16: one step
    plans = [epoch_batches(17, 4, seed=0, epoch=0, world_size=4, rank=rank) for rank in range(4)]
    assert all(len(plan) == 2 and plan[1] for plan in plans)  # the 17th example alone is topped up


def test_length_grouping_cuts_padding():
    rng = random.Random(0)
    lengths = [rng.randint(5, 400) for _ in range(4000)]

    def padded_tokens(plan):
        return sum(max(lengths[i] for i in batch) * len(batch) for batch in plan)

    random_plan = epoch_batches(4000, 16, seed=0, epoch=0)
    grouped_plan = epoch_batches(4000, 16, seed=0, epoch=0, lengths=lengths)
    assert padded_tokens(grouped_plan) < 0.7 * padded_tokens(random_plan)
    assert grouped_plan != epoch_batches(4000, 16, seed=0, epoch=1, lengths=lengths)


@pytest.mark.parametrize("accumulation, examples", [(1, 40), (3, 40), (2, 48)])
def test_the_micro_batch_hook_runs_once_per_micro_batch_under_the_loop_autocast(accumulation, examples, tmp_path):
    """``micro_batch_hook`` (the ProKT/LGTM teacher update) sees every micro-batch before
    ``compute_loss``, under the run's autocast; ``planned_hook_calls`` counts those calls when
    every accumulation is full, and bounds them otherwise."""
    import math

    import torch

    from utils.engine.cli import ArgumentParser, add_training_args, resolved_options
    from utils.engine.loop import planned_hook_calls, planned_steps, train
    from utils.engine.runtime import Runtime

    parser = ArgumentParser()
    add_training_args(parser, batch_size=8, learning_rate=1e-2, epochs=2.0)
    args = resolved_options(parser.parse_args(
        ["--output_dir", str(tmp_path), "--report_to", "none", "--disable_tqdm", "--save_steps", "0",
         "--gradient_accumulation_steps", str(accumulation)]))
    runtime = Runtime(device=torch.device("cpu"), amp_dtype=torch.bfloat16)
    features = [{"x": torch.full((3,), float(i)), "y": torch.tensor(float(i % 2))} for i in range(examples)]
    model = torch.nn.Linear(3, 1)
    events = []

    def hook(batch):
        events.append(("hook", batch["x"][:, 0].tolist(), torch.is_autocast_enabled("cpu")))

    def compute_loss(wrapped, batch):
        events.append(("loss", batch["x"][:, 0].tolist(), torch.is_autocast_enabled("cpu")))
        return torch.nn.functional.mse_loss(wrapped(batch["x"]).squeeze(-1).float(), batch["y"]), {}

    collate = lambda rows: {key: torch.stack([row[key] for row in rows]) for key in rows[0]}  # noqa: E731
    result = train(args, runtime, model=model, train_dataset=features, collate_fn=collate, compute_loss=compute_loss,
                   micro_batch_hook=hook)
    hooks, losses = events[0::2], events[1::2]
    assert [kind for kind, _, _ in hooks] == ["hook"] * len(hooks) and len(hooks) == len(losses)
    assert [rows for _, rows, _ in hooks] == [rows for _, rows, _ in losses], "the hook sees each micro-batch first"
    assert all(autocast for _, _, autocast in events)
    batches_per_epoch = math.ceil(examples / 8)
    micro_batches = 2 * batches_per_epoch
    assert len(hooks) == micro_batches
    assert result.global_step == planned_steps(examples, args, runtime)[1]
    planned = planned_hook_calls(examples, args, runtime)
    assert planned == micro_batches if batches_per_epoch % accumulation == 0 else planned > micro_batches
