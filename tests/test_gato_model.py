"""The Gato transformer: causal, cache-exact decoding, left padding that changes nothing, the
masked loss against a hand computation, and patches that enter the embedding."""

import pytest
import torch
import torch.nn.functional as F

from engramlab.models.gato import Gato, GatoConfig, rotary_angles, rotate
from engramlab.tasks import gato_tokens as tok


def tiny(**kw) -> Gato:
    torch.manual_seed(0)
    shape = dict(layers=2, width=32, heads=4, mlp=64, dropout=0.0, patch_groups=4) | kw
    return Gato(GatoConfig(**shape), patch=2).eval()


def sequence(length: int = 12, batch: int = 2):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, tok.SEPARATOR, (batch, length), generator=g)
    return ids, torch.randint(0, 8, (batch, length), generator=g)


def test_a_token_changes_no_earlier_prediction():
    model = tiny()
    ids, local = sequence()
    before, _ = model(ids, local)
    ids[:, 7] = (ids[:, 7] + 1) % tok.SEPARATOR
    after, _ = model(ids, local)
    torch.testing.assert_close(after[:, :7], before[:, :7])
    assert not torch.allclose(after[:, 7:], before[:, 7:])


@pytest.mark.parametrize("rotary", [False, True])
def test_decoding_with_the_cache_equals_one_full_pass(rotary):
    model = tiny(rotary=rotary)
    ids, local = sequence()
    full, _ = model(ids, local)
    logits, cache = model(ids[:, :5], local[:, :5])
    steps = [logits]
    for t in range(5, ids.shape[1]):
        logits, cache = model(ids[:, t : t + 1], local[:, t : t + 1], cache=cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rotary", [False, True])
def test_left_padding_masked_out_changes_no_prediction(rotary):
    """No global positions, or rotary ones (relative): a row shifted right behind masked padding
    predicts the same."""
    model = tiny(rotary=rotary)
    ids, local = sequence(batch=1)
    plain, _ = model(ids, local)
    padded_ids = torch.cat([torch.full((1, 3), tok.END), ids], dim=1)
    padded_local = torch.cat([torch.zeros(1, 3, dtype=torch.long), local], dim=1)
    key_mask = torch.cat([torch.zeros(1, 3, dtype=torch.bool), torch.ones_like(ids, dtype=torch.bool)], dim=1)
    padded, _ = model(padded_ids, padded_local, key_mask=key_mask)
    torch.testing.assert_close(padded[:, 3:], plain, atol=1e-5, rtol=1e-5)


def test_rotary_positions_tell_the_latest_token_from_an_older_one():
    """Without global positions, a one-layer model's last query sees the same set of keys and
    values whichever order two earlier tokens with the same local position come in; with rotary
    ones it does not.
    The rotation itself keeps a query-key product a function of the distance only."""
    ids, local = sequence(length=6, batch=1)
    swapped = ids.clone()
    swapped[0, [1, 3]] = ids[0, [3, 1]]
    local[0, 3] = local[0, 1]
    one_layer = dict(layers=1)
    plain = tiny(**one_layer)
    torch.testing.assert_close(plain(ids, local)[0][:, -1], plain(swapped, local)[0][:, -1])
    rotary = tiny(rotary=True, **one_layer)
    assert not torch.allclose(rotary(ids, local)[0][:, -1], rotary(swapped, local)[0][:, -1], atol=1e-5)
    q, k = torch.randn(2, 1, 1, 1, 8).unbind(0)
    products = [
        (rotate(q, rotary_angles(torch.tensor([i + 2]), 8)) * rotate(k, rotary_angles(torch.tensor([i]), 8))).sum()
        for i in (0, 5)
    ]
    torch.testing.assert_close(products[0], products[1])


def test_the_loss_counts_only_target_tokens():
    model = tiny()
    ids, local = sequence()
    target = torch.zeros_like(ids, dtype=torch.bool)
    target[0, 4], target[1, 9] = True, True
    logits, _ = model(ids[:, :-1], local[:, :-1])
    by_hand = (F.cross_entropy(logits[0, 3], ids[0, 4]) + F.cross_entropy(logits[1, 8], ids[1, 9])) / 2
    torch.testing.assert_close(model.loss(ids, local, target), by_hand)
    ids[0, 6] = (ids[0, 6] + 1) % tok.SEPARATOR  # after the first target, in a row whose target is earlier...
    ids[1, 10:] = 0  # ...and after the second one: neither changes the loss
    torch.testing.assert_close(model.loss(ids, local, target), by_hand)


def test_patches_enter_the_embedding_at_their_place_with_their_position():
    model = tiny()
    ids = torch.tensor([[tok.PATCH, tok.PATCH, 104, 105]])
    local = torch.tensor([[1, 2, 3, 4]])
    is_patch = ids == tok.PATCH
    intervals = tok.patch_intervals(2, 4, 2)
    pixels = torch.rand(2, 1, 2, 2)
    base, _ = model(ids, local, is_patch, pixels, intervals)
    other, _ = model(ids, local, is_patch, pixels.flip(0), intervals)
    assert not torch.allclose(base, other)
    eval_place = torch.round((intervals[..., 0] + intervals[..., 1] - 1).float() / 2).long()
    assert eval_place.tolist() == [[64, 32], [64, 96]]
    expected = model.patch_row(eval_place[:, 0]) + model.patch_col(eval_place[:, 1])
    torch.testing.assert_close(model.patch_positions(intervals), expected)
    model.train()
    sampled = torch.stack([model.patch_positions(intervals) for _ in range(20)])
    assert sampled.std(dim=0).max() > 0  # a position inside the interval, drawn each time
