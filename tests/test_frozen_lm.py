"""The small LM that Frozen and Flamingo keep frozen (engramlab.models.frozen)."""

from __future__ import annotations

import pytest
import torch

from engramlab.config import resolve
from engramlab.models.frozen import LanguageModel, LMConfig, fingerprint


@pytest.fixture
def lm():
    torch.manual_seed(0)
    return LanguageModel(LMConfig(layers=2, width=32, heads=4, mlp=64, context=16), vocab=50).eval()


def test_logits_shape_and_causality(lm):
    ids = torch.randint(50, (3, 10))
    logits = lm(ids)
    assert logits.shape == (3, 10, 50)
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 50  # the future changes ...
    torch.testing.assert_close(lm(changed)[:, :6], logits[:, :6])  # ... the past does not
    assert not torch.allclose(lm(changed)[:, 6:], logits[:, 6:])


def test_prefix_goes_first_and_the_hook_sees_every_block(lm):
    ids, prefix = torch.randint(50, (2, 5)), torch.randn(2, 3, 32)
    assert lm(ids, prefix=prefix).shape == (2, 8, 50)
    seen = []
    identity = lambda i, x: seen.append((i, x.shape)) or x
    torch.testing.assert_close(lm(ids, before_block=identity), lm(ids))  # an identity hook changes nothing
    assert seen == [(0, (2, 5, 32)), (1, (2, 5, 32))]
    with pytest.raises(ValueError, match="sequence of 19 positions; the model's context is 16"):
        lm(torch.randint(50, (1, 16)), prefix=prefix[:1])


def test_fingerprint_sees_any_change_and_nothing_else(lm):
    before = fingerprint(lm)
    assert fingerprint(lm) == before and len(before) == 64
    lm(torch.randint(50, (2, 4))).sum()  # a forward pass changes nothing
    assert fingerprint(lm) == before
    with torch.no_grad():
        lm.blocks[1].mlp[0].bias[3] += 1e-7
    assert fingerprint(lm) != before


def test_heads_must_divide_the_width():
    with pytest.raises(Exception, match=r"model.width \(30\) must be a multiple of model.heads \(4\)"):
        resolve(LMConfig, {"width": 30, "heads": 4})


def test_the_lm_learns_a_fixed_next_word_rule():
    """A tiny check that it learns: after word k comes word k + 1 (mod 20), from 150 updates."""
    torch.manual_seed(0)
    lm = LanguageModel(LMConfig(layers=1, width=32, heads=2, mlp=64, context=16), vocab=20)
    optimiser = torch.optim.Adam(lm.parameters(), 3e-3)
    for _ in range(150):
        start = torch.randint(20, (32, 1))
        ids = (start + torch.arange(9)) % 20
        loss = lm.loss(ids[:, :-1], ids[:, 1:])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    test = (torch.arange(20)[:, None] + torch.arange(8)) % 20
    assert (lm(test).argmax(-1) == (test + 1) % 20).float().mean() > 0.9
