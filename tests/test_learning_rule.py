"""The evolved learning rule's network: its LSTM is an LSTM, a population runs as one batch, and
each example is predicted before it is learned."""

import torch
from torch import nn

from engramlab.models.learning_rule import (
    Lifetime,
    RuleShape,
    initial_genome,
    lstm_step,
    online_logits,
    sigmoid_form,
    unpack,
)

SHAPE = RuleShape(inputs=6, outputs=3, message=3, synapse_hidden=4, neuron_hidden=5)


def genomes(count: int, seed: int = 0) -> torch.Tensor:
    start = initial_genome(SHAPE, torch.Generator().manual_seed(seed))
    return start + 0.3 * torch.randn(count, SHAPE.size, generator=torch.Generator().manual_seed(seed + 1))


def stream(length: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(length, SHAPE.inputs, generator=g)
    labels = torch.randint(SHAPE.outputs, (length,), generator=g)
    noise = torch.randn(SHAPE.inputs + 1, SHAPE.outputs, SHAPE.synapse_hidden // 2, generator=g)
    return images, labels, noise


def test_lstm_step_equals_torch_lstm_cell():
    cell = nn.LSTMCell(3, 4)
    x, h, c = torch.randn(5, 3), torch.randn(5, 4), torch.randn(5, 4)
    weights = torch.cat([cell.weight_ih, cell.weight_hh], 1).T[None]  # (1, I + H, 4H), same gate order
    bias = (cell.bias_ih + cell.bias_hh)[None]
    ours = lstm_step(x[None], h[None], c[None], *sigmoid_form(weights, bias))
    theirs = cell(x, (h, c))
    torch.testing.assert_close(ours[0][0], theirs[0])
    torch.testing.assert_close(ours[1][0], theirs[1])


def test_genome_layout_round_trips_and_starts_with_forget_bias_five():
    g = initial_genome(SHAPE, torch.Generator().manual_seed(0))
    assert g.shape == (SHAPE.size,)
    parts = unpack(SHAPE, g[None])
    assert torch.equal(torch.cat([p.flatten() for p in parts.values()]), g)
    h = SHAPE.synapse_hidden
    assert parts["synapse_bias"][0, h : 2 * h].eq(5).all() and parts["synapse_bias"][0, :h].eq(0).all()


def test_a_population_in_one_batch_equals_genomes_one_by_one():
    population = genomes(4)
    images, labels, noise = stream()
    together = online_logits(SHAPE, population, images, labels, noise)
    alone = torch.cat([online_logits(SHAPE, population[i : i + 1], images, labels, noise) for i in range(4)])
    assert together.shape == (4, len(images), SHAPE.outputs)
    torch.testing.assert_close(together, alone)


def test_each_example_is_predicted_before_it_is_learned():
    population = genomes(2)
    images, labels, noise = stream()
    changed = labels.clone()
    changed[4] = (labels[4] + 1) % SHAPE.outputs
    before = online_logits(SHAPE, population, images, labels, noise)
    after = online_logits(SHAPE, population, images, changed, noise)
    torch.testing.assert_close(before[:, :5], after[:, :5])  # prediction 4 does not see label 4
    assert not torch.allclose(before[:, 5:], after[:, 5:])  # what it learned from label 4 shows later


def test_the_error_reaches_the_synapses_in_the_learn_tick_only():
    """VSML's direct error path: in the learn tick the synapses read the neurons' backward message
    plus (softmax - one-hot) in its first number; in the predict tick, the message alone."""
    extra = []

    class Spy(Lifetime):
        def synapses(self, x, backward):
            extra.append(backward - self.backward)  # what the synapses read beyond the neurons' message
            super().synapses(x, backward)

    images, labels, noise = stream()
    life = Spy(SHAPE, genomes(2), noise)
    x, label = images[:1].expand(2, -1), labels[:1].expand(2)
    logits = life.predict(x)
    life.learn(x, logits, label)
    assert extra[0].abs().max() == 0
    error = logits.softmax(-1) - torch.nn.functional.one_hot(label, SHAPE.outputs)
    torch.testing.assert_close(extra[1][..., 0], error)
    assert extra[1][..., 1:].abs().max() == 0


def test_the_logit_is_the_synapses_forward_message_plus_the_neurons_output():
    images, labels, noise = stream()
    population = genomes(2)
    silent = population.clone()
    parts = unpack(SHAPE, silent)  # views into silent
    parts["neuron_forward"].zero_()
    life = Lifetime(SHAPE, silent, noise)
    logits = life.predict(images[:1].expand(2, -1))
    torch.testing.assert_close(logits, life.forward_in[..., 0])  # a silent neuron passes the synapses' sum on
