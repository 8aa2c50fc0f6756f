"""The NTM memory: addressing functions by hand, read/write, the Memory contract, stability, learning copy."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engramlab.memory import build_memory
from engramlab.memory.ntm import (
    NTM,
    address,
    circular_shift,
    content_weights,
    interpolate,
    read_memory,
    sharpen,
    write_memory,
)
from engramlab.tasks.copy import CopyConfig, CopyTask
from engramlab.tasks.sequence import masked_loss, masked_metrics


def random_distribution(*shape, generator):
    return torch.softmax(3 * torch.randn(*shape, generator=generator), dim=-1)


def assert_distribution(w):
    assert torch.isfinite(w).all()
    assert (w >= 0).all()
    assert torch.allclose(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-5)


def test_every_addressing_step_returns_distributions_over_slots():
    g = torch.Generator().manual_seed(0)
    batch, heads, slots, width = 5, 3, 12, 7
    memory = torch.randn(batch, slots, width, generator=g)
    keys = torch.randn(batch, heads, width, generator=g)
    beta = F.softplus(3 * torch.randn(batch, heads, generator=g))
    gate = torch.rand(batch, heads, generator=g)
    shift = random_distribution(batch, heads, 3, generator=g)
    gamma = 1 + F.softplus(3 * torch.randn(batch, heads, generator=g))
    w_prev = random_distribution(batch, heads, slots, generator=g)

    w_content = content_weights(keys, beta, memory)
    w_gated = interpolate(w_content, w_prev, gate)
    w_shifted = circular_shift(w_gated, shift)
    for w in (w_content, w_gated, w_shifted, sharpen(w_shifted, gamma)):
        assert w.shape == (batch, heads, slots)
        assert_distribution(w)
    assert torch.allclose(address(memory, w_prev, keys, beta, gate, shift, gamma), sharpen(w_shifted, gamma))


def test_shift_wraps_around_the_memory_ends():
    slots = 6
    last = F.one_hot(torch.tensor([[slots - 1]]), slots).float()  # (1, 1, N): all weight on the last slot
    first = F.one_hot(torch.tensor([[0]]), slots).float()
    plus_one = torch.tensor([[[0.0, 0.0, 1.0]]])  # offsets -1, 0, +1
    minus_one = torch.tensor([[[1.0, 0.0, 0.0]]])
    assert torch.equal(circular_shift(last, plus_one), first)
    assert torch.equal(circular_shift(first, minus_one), last)


def test_shift_by_hand_and_against_rolled_copies():
    w = torch.tensor([[[0.5, 0.5, 0.0, 0.0, 0.0]]])
    s = torch.tensor([[[0.2, 0.3, 0.5]]])  # P(-1), P(0), P(+1)
    # w~(i) = Σ_k s(k) w(i - k): slot 4 receives the -1 shift of slot 0, slot 2 the +1 shift of slot 1
    expected = torch.tensor([[[0.25, 0.4, 0.25, 0.0, 0.1]]])
    assert torch.allclose(circular_shift(w, s), expected)

    g = torch.Generator().manual_seed(1)
    w = random_distribution(2, 3, 9, generator=g)
    s = random_distribution(2, 3, 5, generator=g)  # offsets -2..2
    rolled = sum(s[..., k + 2 : k + 3] * torch.roll(w, k, dims=-1) for k in range(-2, 3))
    assert torch.allclose(circular_shift(w, s), rolled, atol=1e-6)


def test_sharpening_with_gamma_one_is_the_identity_and_large_gamma_picks_the_max():
    g = torch.Generator().manual_seed(2)
    w = random_distribution(4, 2, 10, generator=g)
    assert torch.allclose(sharpen(w, torch.ones(4, 2)), w, atol=1e-6)
    peaked = sharpen(w, torch.full((4, 2), 200.0))
    assert torch.equal(peaked.argmax(-1), w.argmax(-1))
    assert (peaked.max(-1).values > 0.99).all()


def test_sharpening_exact_zeros_has_finite_gradients():
    w = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]], requires_grad=True)
    gamma = torch.tensor([[30.0]], requires_grad=True)
    out = sharpen(w, gamma)
    (out * torch.arange(4.0)).sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(w.grad).all() and torch.isfinite(gamma.grad).all()


def test_content_addressing_with_large_beta_picks_the_most_similar_slot():
    g = torch.Generator().manual_seed(3)
    memory = torch.randn(2, 16, 10, generator=g)
    target = torch.tensor([3, 11])
    keys = 5.0 * memory[torch.arange(2), target].unsqueeze(1)  # scaled: cosine ignores the scale
    keys = keys + 0.05 * torch.randn(keys.shape, generator=g)
    w = content_weights(keys, torch.full((2, 1), 100.0), memory)
    assert torch.equal(w.argmax(-1).squeeze(1), target)
    assert (w.max(-1).values > 0.99).all()
    # β = 0 ignores the content: uniform weighting
    assert torch.allclose(content_weights(keys, torch.zeros(2, 1), memory), torch.full((2, 1, 16), 1 / 16))


def test_write_then_read_one_hot_returns_the_written_vector():
    g = torch.Generator().manual_seed(4)
    memory = torch.randn(3, 8, 5, generator=g)
    w = F.one_hot(torch.tensor([[2], [0], [7]]), 8).float()  # (B, 1, N)
    v = torch.randn(3, 1, 5, generator=g)
    written = write_memory(memory, w, erase=torch.ones(3, 1, 5), add=v)
    assert torch.allclose(read_memory(written, w), v)
    untouched = w.squeeze(1) == 0
    assert torch.equal(written[untouched], memory[untouched])  # other slots keep their content


def test_two_write_heads_multiply_erasures_and_sum_additions():
    memory = torch.full((1, 2, 1), 4.0)
    w = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])  # head 0 on slot 0, head 1 spread
    erase = torch.tensor([[[0.5], [1.0]]])
    add = torch.tensor([[[1.0], [2.0]]])
    # slot 0: 4 (1 - 0.5)(1 - 0.5) + 1 + 1 = 3; slot 1: 4 (1 - 0.5) + 1 = 3
    assert torch.allclose(write_memory(memory, w, erase, add), torch.tensor([[[3.0], [3.0]]]))


@pytest.mark.parametrize("controller", ["lstm", "ff"])
def test_output_shapes_and_state(controller):
    ntm = NTM(12, slots=10, slot_width=6, read_heads=2, write_heads=3, controller=controller, controller_size=16)
    y, state = ntm(torch.randn(4, 7, 12))
    assert y.shape == (4, 7, 12)
    assert state["memory"].shape == (4, 10, 6)
    assert state["read_w"].shape == (4, 2, 10) and state["write_w"].shape == (4, 3, 10)
    assert state["reads"].shape == (4, 2, 6)
    assert ("h" in state) == (controller == "lstm")
    assert_distribution(state["read_w"])
    assert_distribution(state["write_w"])


def test_build_memory_makes_an_ntm_with_options():
    ntm = build_memory("ntm", 8, slots=16, slot_width=4, controller="ff", controller_size=8)
    assert isinstance(ntm, NTM) and ntm(torch.randn(2, 3, 8))[0].shape == (2, 3, 8)


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="controller"):
        NTM(8, controller="gru")
    with pytest.raises(ValueError, match="shift_range"):
        NTM(8, slots=4, shift_range=2)


def small_ntm(**kw):
    torch.manual_seed(0)
    options = dict(slots=12, slot_width=6, read_heads=2, write_heads=2, controller_size=16)
    return NTM(10, **(options | kw))


@pytest.mark.parametrize("controller", ["lstm", "ff"])
def test_causal_later_inputs_do_not_change_earlier_outputs(controller):
    ntm, tau = small_ntm(controller=controller), 5
    x = torch.randn(3, 12, 10)
    changed = x.clone()
    changed[:, tau + 1 :] = torch.randn(3, 12 - tau - 1, 10)
    y, _ = ntm(x)
    y_changed, _ = ntm(changed)
    assert torch.equal(y[:, : tau + 1], y_changed[:, : tau + 1])
    assert not torch.allclose(y[:, tau + 1 :], y_changed[:, tau + 1 :])


def test_two_halves_with_the_state_carried_equal_one_call():
    ntm = small_ntm()
    x = torch.randn(3, 14, 10)
    y_full, state_full = ntm(x)
    y_first, state = ntm(x[:, :6])
    y_second, state = ntm(x[:, 6:], state)
    assert torch.allclose(torch.cat([y_first, y_second], 1), y_full, atol=1e-6)
    for key in state_full:
        assert torch.allclose(state[key], state_full[key], atol=1e-6)


def test_reset_restores_the_empty_memory_for_finished_sequences_only():
    ntm = small_ntm()
    x = torch.randn(2, 9, 10)
    _, state = ntm(x[:, :5])
    state = ntm.reset(state, torch.tensor([True, False]))
    fresh = ntm.initial_state(2)
    for key in state:
        assert torch.equal(state[key][0], fresh[key][0])
    y_after_reset, _ = ntm(x[:, 5:], state)
    y_new_sequence, _ = ntm(x[:1, 5:])
    assert torch.allclose(y_after_reset[:1], y_new_sequence, atol=1e-6)


def test_gradients_stay_finite_over_200_steps():
    ntm = small_ntm(slots=32)
    x = 4 * torch.randn(2, 200, 10)  # large inputs push the gates and sharpening to extremes
    y, state = ntm(x)
    (y.pow(2).mean() + state["memory"].sum()).backward()
    assert torch.isfinite(y).all()
    for name, p in ntm.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in ntm.parameters())


class CopyModel(nn.Module):
    def __init__(self, input_size, output_size, d_model, **ntm_options):
        super().__init__()
        self.embed = nn.Linear(input_size, d_model)
        self.ntm = NTM(d_model, **ntm_options)
        self.head = nn.Linear(d_model, output_size)

    def forward(self, x):
        return self.head(self.ntm(self.embed(x))[0])


@pytest.mark.slow
def test_an_ntm_model_learns_to_copy_short_sequences():
    torch.manual_seed(0)
    task = CopyTask(CopyConfig(bits=4, min_length=1, max_length=3))
    model = CopyModel(task.input_size, task.output_size, 32, slots=16, slot_width=8, controller_size=32)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(400):  # about 10 s on one CPU thread
        batch = task.sample(32, generator)
        loss = masked_loss(model(batch.inputs)[batch.mask], batch)
        optimiser.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()

    with torch.no_grad():
        batch = task.sample(512, torch.Generator().manual_seed(123))
        bit_errors = masked_metrics(model(batch.inputs)[batch.mask], batch)["bit_errors"]
    output_bits = batch.mask.sum() * task.output_size
    bit_accuracy = 1 - bit_errors.sum() / output_bits
    chance_errors = 0.5 * output_bits / len(bit_errors)  # a coin flip per bit: 4 bits per sequence on average
    assert bit_accuracy > 0.9, f"bit accuracy {bit_accuracy:.3f} (chance 0.5)"
    assert bit_errors.mean() < chance_errors / 4
