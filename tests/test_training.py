"""The batch plan of the training loop: coverage, determinism, data parallel split, length grouping."""

import random

import pytest

from utils.loop import epoch_batches


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
