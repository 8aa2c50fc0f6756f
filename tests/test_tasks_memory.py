"""MQAR and passkey generators: layout, masks, generalisation knobs, seeding, config errors."""

import pytest
import torch

from engramlab.config import resolve
from engramlab.errors import ConfigError
from engramlab.experiments import get_experiment
from engramlab.tasks.mqar import MQARConfig, MQARTask
from engramlab.tasks.passkey import FIRST_KEY, MARKER, QUESTION, PasskeyConfig, PasskeyTask
from engramlab.tasks.sequence import SequenceBatch, masked_loss, masked_metrics


def test_mqar_layout_every_key_queried_once_with_its_value():
    cfg = MQARConfig(vocab=64, length=64, kv_pairs=6)
    batch = MQARTask(cfg).sample(32, torch.Generator().manual_seed(0))
    context = 2 * cfg.kv_pairs
    keys, values = batch.inputs[:, 0:context:2], batch.inputs[:, 1:context:2]
    assert ((keys >= 1) & (keys < 32)).all() and ((values >= 32) & (values < 64)).all()
    for row in range(32):
        assert len(set(keys[row].tolist())) == cfg.kv_pairs and len(set(values[row].tolist())) == cfg.kv_pairs
        positions = batch.mask[row].nonzero().squeeze(1)
        assert len(positions) == cfg.kv_pairs and (positions >= context).all() and (positions % 2 == 0).all()
        answer = dict(zip(keys[row].tolist(), values[row].tolist()))
        for p in positions.tolist():
            assert batch.targets[row, p].item() == answer[batch.inputs[row, p].item()]
        assert sorted(batch.inputs[row, positions].tolist()) == sorted(keys[row].tolist())


def test_mqar_power_law_puts_queries_near_the_context():
    cfg = MQARConfig(vocab=512, length=256, kv_pairs=4, power_a=0.01)
    batch = MQARTask(cfg).sample(500, torch.Generator().manual_seed(1))
    positions = batch.mask.nonzero()[:, 1].float()
    near = (positions < 8 + 64).float().mean()
    assert near > 0.5  # uniform gaps would put about a quarter there


def test_mqar_is_seeded_and_rejects_impossible_settings():
    task = MQARTask(MQARConfig(vocab=64, length=32, kv_pairs=4))
    a = task.sample(4, torch.Generator().manual_seed(3))
    b = task.sample(4, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="kv_pairs = 16 needs task.length >= 4"):
        MQARConfig(vocab=64, length=32, kv_pairs=16)


def test_passkey_layout_and_min_distance():
    cfg = PasskeyConfig(length=50, keys=10, filler=5, min_distance=20)
    batch = PasskeyTask(cfg).sample(200, torch.Generator().manual_seed(0))
    assert (batch.inputs[:, -1] == QUESTION).all()
    assert batch.mask[:, -1].all() and batch.mask.sum() == 200
    markers = (batch.inputs == MARKER).nonzero()
    assert len(markers) == 200  # exactly one statement per sequence, never overwritten by filler
    value_pos = markers[:, 1] + 1
    values = batch.inputs[markers[:, 0], value_pos]
    assert torch.equal(values, batch.targets[:, -1]) and ((values >= FIRST_KEY) & (values < FIRST_KEY + 10)).all()
    assert ((cfg.length - 1) - value_pos >= 20).all()  # at least min_distance before the question
    assert (value_pos < cfg.length - 1).all()


def test_passkey_depth_covers_the_last_window_in_training():
    batch = PasskeyTask(PasskeyConfig(length=128)).sample(1000, torch.Generator().manual_seed(0))
    depth = (batch.inputs == MARKER).nonzero()[:, 1]
    assert depth.min() < 10 and depth.max() > 120


def test_masked_loss_and_metrics_count_only_masked_positions():
    targets = torch.tensor([[1, 2, 3]])
    logits = torch.full((1, 3, 4), -10.0)
    logits[0, 0, 1] = logits[0, 1, 0] = logits[0, 2, 3] = 10.0  # right, wrong, right
    mask = torch.tensor([[True, False, True]])
    batch = SequenceBatch(torch.zeros(1, 3, dtype=torch.long), targets, mask)
    m = masked_metrics(logits[mask], batch)
    assert m["correct"].item() == 1.0 and m["solved"].item() == 1.0
    assert masked_loss(logits[mask], batch).item() < 1e-6
    bits = SequenceBatch(torch.zeros(1, 2, 2), torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]), torch.tensor([[True, True]]))
    m = masked_metrics(torch.tensor([[5.0, -5.0], [5.0, -5.0]]), bits)
    assert m["bit_errors"].item() == 1.0 and m["correct"].item() == 0.5 and m["solved"].item() == 0.0


def test_bad_evaluation_setting_is_one_clear_error_before_training():
    exp = get_experiment("memory-mqar")
    with pytest.raises(ConfigError, match=r"eval.settings.pairs64: task.kv_pairs = 64 needs task.length >= 4"):
        resolve(exp.Config, exp.presets["quick"], overrides=["task.length=128"])
    with pytest.raises(ConfigError, match="unknown memory kind 'tape'"):
        resolve(exp.Config, exp.presets["quick"], overrides=["methods=[tape]"])


def test_mqar_mix_draws_every_listed_shape_and_validates_each():
    task = MQARTask(MQARConfig(vocab=64, length=32, kv_pairs=8, mix=[(16, 2), (32, 8)]))
    generator = torch.Generator().manual_seed(0)
    shapes = {(b.inputs.shape[1], int(b.mask[0].sum())) for b in (task.sample(2, generator) for _ in range(20))}
    assert shapes == {(16, 2), (32, 8)}
    with pytest.raises(ValueError, match="kv_pairs = 8 needs task.length >= 4"):
        MQARConfig(vocab=64, length=32, kv_pairs=8, mix=[(16, 8)])
