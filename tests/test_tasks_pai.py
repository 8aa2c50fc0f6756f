"""Paired associative inference: the generator's invariants (MEMO §3)."""

import pytest
import torch

from engramlab.config import resolve
from engramlab.errors import ConfigError
from engramlab.tasks.pai import PAIConfig, PAITask


def item_ids(task: PAITask, vectors: torch.Tensor) -> torch.Tensor:
    """The table rows the vectors are (the random unit vectors are far apart, so the best match is exact)."""
    return (vectors @ task.items.T).argmax(-1)


def position_in_sequence(item: int, predecessor: dict[int, int]) -> int:
    steps = 0
    while item in predecessor:
        item, steps = predecessor[item], steps + 1
    return steps


def sample(length=3, split="train", batch=256, seed=0, **extra):
    task = PAITask(PAIConfig(length=length, split=split, train_items=500, test_items=300, **extra))
    return task, task.sample(batch, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("length", [3, 4, 5])
def test_memory_holds_every_adjacent_pair_and_queries_follow_the_rules(length):
    task, b = sample(length)
    d = task.cfg.item_dim
    assert b.memory.shape == (256, 16 * (length - 1), 2 * d) and b.query.shape == (256, 3, d)
    left, right = item_ids(task, b.memory[..., :d]), item_ids(task, b.memory[..., d:])
    cue, first, second = item_ids(task, b.query).unbind(-1)
    match = torch.where(b.target == 0, first, second)
    lure = torch.where(b.target == 0, second, first)
    for i in range(256):
        rows = set(zip(left[i].tolist(), right[i].tolist()))
        successor = dict(rows)
        assert len(successor) == len(rows) == 16 * (length - 1)  # items distinct within a memory
        steps = int(b.match_position[i] - b.cue_position[i])
        reached = int(cue[i])
        for _ in range(steps):  # follow the chain from the cue
            reached = successor[reached]
        assert reached == match[i]
        assert (int(cue[i]), int(match[i])) in rows if steps == 1 else (int(cue[i]), int(match[i])) not in rows
        # the lure: another sequence, the match's position (same number of steps from a sequence start)
        predecessor = {v: k for k, v in rows}
        lure_depth, match_depth = (position_in_sequence(int(x[i]), predecessor) for x in (lure, match))
        assert lure[i] != match[i] and lure_depth == match_depth == int(b.match_position[i])
    assert ((b.match_position - b.cue_position) == length - 1).eq(b.indirect).all()
    assert b.indirect[b.cue_position == 0].any() and (b.cue_position[b.indirect] == 0).all()


def test_train_and_test_pools_share_no_item():
    train_task, train = sample(split="train", batch=64)
    test_task, test = sample(split="test", batch=64)
    train_items = set(item_ids(train_task, train.memory[..., :64]).flatten().tolist())
    test_items = set(item_ids(test_task, test.memory[..., :64]).flatten().tolist())
    assert max(train_items) < 500 <= min(test_items)
    assert torch.equal(train_task.items, test_task.items)  # one table, two disjoint slices


def test_batches_are_balanced_and_seeded():
    _, b = sample(batch=4000)
    assert abs(b.indirect.float().mean() - 0.5) < 0.03
    assert abs(b.target.float().mean() - 0.5) < 0.03
    _, again = sample(batch=4000)
    assert torch.equal(b.memory, again.memory) and torch.equal(b.target, again.target)


def test_a_pool_too_small_for_one_memory_is_a_clear_error():
    with pytest.raises(ConfigError, match="test_items = 20 is too small"):
        resolve(PAIConfig, {"split": "test", "test_items": 20})
