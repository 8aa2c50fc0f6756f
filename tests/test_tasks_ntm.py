"""The NTM paper's copy and associative-recall tasks: layout, masks, targets, seeding, range overrides."""

import pytest
import torch

from engramlab.config import resolve
from engramlab.errors import ConfigError
from engramlab.tasks.copy import CopyConfig, CopyTask
from engramlab.tasks.recall import RecallConfig, RecallTask

# ---------------------------------------------------------------------------------------------
# copy


def copy_lengths(batch, bits):
    """Each sample's length, read off the position of its delimiter."""
    delimiter = batch.inputs[..., bits]
    assert torch.equal(delimiter.sum(1), torch.ones(len(delimiter)))  # exactly one delimiter
    return delimiter.argmax(1)


def test_copy_shapes_and_sizes():
    task = CopyTask(CopyConfig(bits=8, min_length=1, max_length=20))
    assert (task.input_size, task.output_size) == (9, 8)
    batch = task.sample(16, torch.Generator().manual_seed(0))
    assert batch.inputs.shape == (16, 41, 9) and batch.targets.shape == (16, 41, 8) and batch.mask.shape == (16, 41)
    assert batch.inputs.dtype == torch.float32 and batch.mask.dtype == torch.bool and not batch.is_tokens
    assert set(batch.inputs.unique().tolist()) <= {0.0, 1.0} and set(batch.targets.unique().tolist()) <= {0.0, 1.0}


def test_copy_mask_is_exactly_the_output_phase_and_targets_repeat_the_input():
    bits = 5
    task = CopyTask(CopyConfig(bits=bits, min_length=1, max_length=7))
    batch = task.sample(64, torch.Generator().manual_seed(1))
    lengths = copy_lengths(batch, bits)
    for i, n in enumerate(lengths.tolist()):
        expected_mask = torch.zeros(15, dtype=torch.bool)
        expected_mask[n + 1 : 2 * n + 1] = True
        assert torch.equal(batch.mask[i], expected_mask)
        assert torch.equal(batch.targets[i, n + 1 : 2 * n + 1], batch.inputs[i, :n, :bits])
        assert batch.targets[i, ~expected_mask].sum() == 0
        assert batch.inputs[i, n + 1 :].sum() == 0  # no input after the delimiter
        assert batch.inputs[i, :n, bits].sum() == 0  # the delimiter channel is silent during the sequence
    assert set(lengths.tolist()) == set(range(1, 8))  # every length is drawn


def test_copy_length_override_for_generalisation():
    task = CopyTask(CopyConfig(bits=8, max_length=20))
    batch = task.sample(4, torch.Generator().manual_seed(2), length=(40, 40))
    assert batch.inputs.shape == (4, 81, 9)
    assert (copy_lengths(batch, 8) == 40).all()
    assert (batch.mask.sum(1) == 40).all()
    with pytest.raises(ValueError, match="copy length"):
        task.sample(4, length=(5, 3))


def test_copy_same_seed_same_batch():
    task = CopyTask(CopyConfig())
    a, b, c = (task.sample(8, torch.Generator().manual_seed(s)) for s in (7, 7, 8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.inputs, c.inputs)


# ---------------------------------------------------------------------------------------------
# associative recall


def parse_recall(inputs, bits, item_length):
    """(items, query) of one sample, read off its delimiters with plain Python."""
    item_starts = (inputs[:, bits] == 1).nonzero().flatten().tolist()
    query_delims = (inputs[:, bits + 1] == 1).nonzero().flatten().tolist()
    assert len(query_delims) == 2 and query_delims[1] - query_delims[0] == item_length + 1
    items = [inputs[s + 1 : s + 1 + item_length, :bits] for s in item_starts]
    query = inputs[query_delims[0] + 1 : query_delims[1], :bits]
    return items, query, query_delims[1]


def test_recall_shapes_and_sizes():
    task = RecallTask(RecallConfig(bits=6, item_length=3, min_items=2, max_items=6))
    assert (task.input_size, task.output_size) == (8, 6)
    batch = task.sample(16, torch.Generator().manual_seed(0))
    steps = 6 * 4 + 2 * 3 + 2
    assert batch.inputs.shape == (16, steps, 8) and batch.targets.shape == (16, steps, 6)
    assert (batch.mask.sum(1) == 3).all()


def test_recall_target_is_the_item_after_the_query_and_the_mask_is_the_answer():
    bits, length = 6, 3
    task = RecallTask(RecallConfig(bits=bits, item_length=length, min_items=2, max_items=6))
    batch = task.sample(128, torch.Generator().manual_seed(3))
    counts, queried = [], []
    for i in range(len(batch.inputs)):
        items, query, query_end = parse_recall(batch.inputs[i], bits, length)
        assert query_end == len(items) * (length + 1) + length + 1  # the query follows the last item
        matches = [k for k, item in enumerate(items) if torch.equal(item, query)]
        assert matches and matches[0] < len(items) - 1  # the last item is never the query
        k = matches[0]
        expected_mask = torch.zeros(batch.mask.shape[1], dtype=torch.bool)
        expected_mask[query_end + 1 : query_end + 1 + length] = True
        assert torch.equal(batch.mask[i], expected_mask)
        assert torch.equal(batch.targets[i, expected_mask], items[k + 1])
        assert batch.targets[i, ~expected_mask].sum() == 0 and batch.inputs[i, query_end + 1 :].sum() == 0
        counts.append(len(items))
        queried.append(k)
    assert set(counts) == set(range(2, 7))
    assert set(queried) == set(range(0, 5))


def test_recall_items_override_and_seeding():
    task = RecallTask(RecallConfig())
    batch = task.sample(4, torch.Generator().manual_seed(4), items=(12, 12))
    assert batch.inputs.shape[1] == task.steps(12)
    assert (batch.inputs[..., 6].sum(1) == 12).all()  # twelve item delimiters
    a, b = (task.sample(8, torch.Generator().manual_seed(5)) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="recall items"):
        task.sample(4, items=(1, 3))


# ---------------------------------------------------------------------------------------------
# configs


@pytest.mark.parametrize(
    "cls, layer, message",
    [
        (CopyConfig, {"min_length": 5, "max_length": 3}, "task.min_length = 5 must be <= task.max_length = 3"),
        (RecallConfig, {"min_items": 5, "max_items": 3}, "task.min_items = 5 must be <= task.max_items = 3"),
        (RecallConfig, {"min_items": 1}, "min_items"),
        (CopyConfig, {"bits": 0}, "bits"),
    ],
)
def test_configs_refuse_bad_ranges_with_clear_messages(cls, layer, message):
    with pytest.raises(ConfigError, match=message):
        resolve(cls, layer)
