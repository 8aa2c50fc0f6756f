"""The small LM that Frozen and Flamingo keep frozen, Frozen's prefix and Flamingo's vision side
(engramlab.models.frozen)."""

from __future__ import annotations

import pytest
import torch

from engramlab.config import resolve
from engramlab.models.frozen import (
    Flamingo,
    GatedCrossAttention,
    LanguageModel,
    LMConfig,
    PerceiverResampler,
    VisualPrefix,
    fingerprint,
    latest_image_mask,
    quantize,
)


@pytest.fixture(params=["rotary", "learned"])
def lm(request):
    torch.manual_seed(0)
    cfg = LMConfig(layers=2, width=32, heads=4, mlp=64, context=16, positions=request.param)
    return LanguageModel(cfg, vocab=50).eval()


def test_logits_shape_and_causality(lm):
    ids = torch.randint(50, (3, 10))
    logits = lm(ids)
    assert logits.shape == (3, 10, 50)
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 50  # the future changes ...
    torch.testing.assert_close(lm(changed)[:, :6], logits[:, :6])  # ... the past does not
    assert not torch.allclose(lm(changed)[:, 6:], logits[:, 6:])


def test_injected_embeddings_replace_tokens_and_the_hook_sees_every_block(lm):
    ids = torch.randint(50, (2, 8))
    where, embeddings = torch.tensor([2, 3]), lm.tokens(ids[:, 2:4]).detach()
    torch.testing.assert_close(lm(ids, inject=(where, embeddings)), lm(ids))  # the tokens' own embeddings
    other = lm(ids, inject=(where, torch.randn(2, 2, 32)))
    torch.testing.assert_close(other[:, :2], lm(ids)[:, :2])  # positions before the slot are untouched
    assert not torch.allclose(other[:, 2:], lm(ids)[:, 2:])
    seen = []
    identity = lambda i, x: seen.append((i, x.shape)) or x
    torch.testing.assert_close(lm(ids, before_block=identity), lm(ids))
    assert seen == [(0, (2, 8, 32)), (1, (2, 8, 32))]


def test_a_learned_position_table_limits_the_context():
    lm = LanguageModel(LMConfig(layers=1, width=32, heads=4, mlp=64, context=16, positions="learned"), vocab=50)
    with pytest.raises(ValueError, match="sequence of 17 positions; the model's context is 16"):
        lm(torch.randint(50, (1, 17)))


def test_a_rotary_lm_has_no_position_table_and_no_length_limit():
    lm = LanguageModel(LMConfig(layers=1, width=32, heads=4, mlp=64, context=16), vocab=50)
    assert lm.positions is None and lm(torch.randint(50, (1, 40))).shape == (1, 40, 50)


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


# --- the vision sides ------------------------------------------------------------------------


def test_visual_prefix_shape_and_norm_matched_to_the_tokens():
    prefix = VisualPrefix(width=32, n=2, channels=4, features=16, token_rms=0.5)
    out = prefix(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 2, 32)
    # LayerNorm with gain 0.5 and zero bias: each embedding's RMS is 0.5
    torch.testing.assert_close(out.pow(2).mean(-1).sqrt(), torch.full((3, 2), 0.5), atol=1e-3, rtol=0)


def test_quantize_reads_each_embedding_as_its_nearest_word_and_passes_the_gradient_straight_through():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], requires_grad=True)  # three "words"
    prefix = torch.tensor([[[0.9, 0.1], [0.2, 1.5]]], requires_grad=True)  # nearest: word 1, then word 2
    words, commitment = quantize(prefix, codebook)
    assert torch.equal(words.detach(), torch.tensor([[[1.0, 0.0], [0.0, 2.0]]]))
    # VQ-VAE's commitment term by hand: mean of (0.1², 0.1², 0.2², 0.5²)
    torch.testing.assert_close(commitment, torch.tensor((0.01 + 0.01 + 0.04 + 0.25) / 4))
    (words * torch.tensor([1.0, 2.0])).sum().backward()
    assert torch.equal(prefix.grad, torch.tensor([[[1.0, 2.0], [1.0, 2.0]]]))  # straight through
    assert codebook.grad is None  # the frozen LM's embeddings get no gradient


def test_resampler_turns_any_number_of_features_into_its_latents():
    resampler = PerceiverResampler(width=32, latents=5, depth=2, heads=4)
    assert resampler(torch.randn(2, 49, 32)).shape == (2, 5, 32)
    assert resampler(torch.randn(2, 3, 32)).shape == (2, 5, 32)


def test_text_attends_only_to_the_latest_image():
    mask, seen = latest_image_mask(torch.tensor([1, 4]), length=6, latents=2)
    # positions 0: no image yet; 1-3: image 0 (keys 0, 1); 4-5: image 1 (keys 2, 3)
    expected = torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    assert mask[0].long().tolist() == expected.tolist()
    assert seen[0, :, 0].tolist() == [0, 1, 1, 1, 1, 1]


def test_gated_cross_attention_is_the_identity_at_init_and_not_after():
    block = GatedCrossAttention(width=32, heads=4)
    y, media = torch.randn(2, 6, 32), torch.randn(2, 4, 32)
    mask, seen = latest_image_mask(torch.tensor([1, 4]), 6, 2)
    assert torch.equal(block(y, media, mask, seen), y)  # tanh(0) = 0: exactly y
    with torch.no_grad():
        block.alpha.fill_(1.0)
    out = block(y, media, mask, seen)
    assert torch.equal(out[:, 0], y[:, 0])  # no image before position 0: nothing to attend
    assert not torch.allclose(out[:, 1:], y[:, 1:])
    changed = media.clone()
    changed[:, :2] += 1  # image 0 changes: positions 4-5 see only image 1
    torch.testing.assert_close(block(y, changed, mask, seen)[:, 4:], out[:, 4:])


def test_flamingo_equals_the_frozen_lm_at_initialisation(lm):
    flamingo = Flamingo(lm, channels=4, latents=3).eval()
    ids, slots, images = torch.randint(50, (2, 12)), torch.tensor([1, 6]), torch.rand(2, 2, 1, 28, 28)
    assert (flamingo(ids, slots, images) - lm(ids)).abs().max() < 1e-6
    assert all(block.alpha.item() == 0 and block.beta.item() == 0 for block in flamingo.xattn.values())
