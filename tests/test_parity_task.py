import pytest
import torch

from engramlab.config import resolve
from engramlab.errors import ConfigError
from engramlab.tasks.parity import ParityConfig, ParityTask, parity_batch


def make_task(**kw):
    return ParityTask(ParityConfig(**kw))


def test_vectors_have_exactly_k_nonzero_signs_and_the_right_label():
    task = make_task(n=24, train_k=(3, 11))
    batch = task.sample(4096, torch.Generator().manual_seed(0))
    nonzero = (batch.x != 0).sum(1)
    assert torch.equal(nonzero, batch.k)
    assert batch.k.min() == 3 and batch.k.max() == 11
    assert set(batch.x.unique().tolist()) <= {-1.0, 0.0, 1.0}
    plus = (batch.x == 1).sum(1)
    assert torch.equal(batch.y, plus % 2)
    assert batch.x.dtype == torch.float32 and batch.y.dtype == torch.long


def test_every_k_in_the_range_is_drawn_and_labels_are_balanced_per_k():
    task = make_task(n=16, train_k=(1, 16))
    batch = task.sample(40_000, torch.Generator().manual_seed(1))
    for k in range(1, 17):
        rows = batch.k == k
        assert rows.sum() > 1800  # uniform: about 2500 each
        assert abs(batch.y[rows].float().mean().item() - 0.5) < 0.05


def test_nonzero_positions_are_spread_over_the_vector():
    batch = make_task(n=10, train_k=(1, 1)).sample(20_000, torch.Generator().manual_seed(2))
    position_freq = (batch.x != 0).float().mean(0)
    assert torch.allclose(position_freq, torch.full((10,), 0.1), atol=0.01)


def test_same_seed_same_batch_different_seed_different_batch():
    task = make_task(n=32, train_k=(1, 32))
    a = task.sample(64, torch.Generator().manual_seed(7))
    b = task.sample(64, torch.Generator().manual_seed(7))
    c = task.sample(64, torch.Generator().manual_seed(8))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_sample_each_k_and_eval_ks_cover_train_then_test_range():
    task = make_task(n=12, train_k=(1, 6), test_k=(7, 12))
    assert task.eval_ks() == list(range(1, 13))
    batch = task.sample_each_k([2, 9], per_k=5, generator=torch.Generator().manual_seed(0))
    assert batch.k.tolist() == [2] * 5 + [9] * 5
    assert (batch.x != 0).sum(1).tolist() == batch.k.tolist()


def test_k_range_is_an_argument_so_extrapolation_needs_no_new_code():
    task = make_task(n=20, train_k=(1, 10), test_k=(11, 20))
    batch = task.sample(500, torch.Generator().manual_seed(0), k_range=(15, 20))
    assert batch.k.min() >= 15 and batch.k.max() <= 20


def test_parity_batch_handles_k_equal_n():
    batch = parity_batch(5, torch.tensor([5, 5]), torch.Generator().manual_seed(0))
    assert (batch.x != 0).all()


@pytest.mark.parametrize("bad", [{"train_k": [0, 5]}, {"train_k": [5, 3]}, {"test_k": [10, 99]}])
def test_bad_k_ranges_are_rejected_with_the_key_named(bad):
    with pytest.raises(ConfigError) as err:
        resolve(ParityConfig, {"n": 32}, bad)
    assert ("train_k" in str(err.value)) or ("test_k" in str(err.value))
