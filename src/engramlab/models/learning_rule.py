"""A learning rule that is evolved, not designed: one tiny LSTM shared by every synapse and one by
every neuron, each cell with its own state, learning within a lifetime without backpropagation.

Agüera y Arcas' talk describes the idea; the closest published system is VSML (Kirsch &
Schmidhuber 2021, "Meta Learning Backpropagation And Improving It", arXiv 2012.14905), whose
design we follow where the talk is silent:

- a layer of ``A`` input neurons and ``B`` output neurons; synapse (a, b) is an LSTM cell
  (hidden ``H``) whose input is the forward message of neuron a and the backward message of
  neuron b (VSML §3, Eq. 4: messages of ``m`` numbers, the first carrying the value);
- the forward message reaching neuron b is the mean over a of a linear read-out of the synapses'
  hidden states (VSML Eq. 5: averaged over inputs);
- unlike VSML, where a neuron only sums, each output neuron is itself a cell of a second shared
  LSTM (the talk: "every neuron and every synapse"): it reads the mean forward message and the
  error signal, and adds its output to VSML's two direct paths. The logit is the first number
  of the mean forward message plus the first number of the neuron's output message. The
  backward message its synapses read is the neuron's backward message with, in the learn tick
  only, the error signal added to its first number (VSML §3.2: the error enters the output
  layer's backward message). With these paths one synapse LSTM alone can hold a learning rule;
  without them every error passed through the neuron's LSTM and every prediction through its
  memory, and the two had to evolve together before anything was learned;
- per example, two micro-ticks (VSML §3: two ticks per example): *predict* (synapses read the
  example, the neurons read the result with no error, the prediction is taken), then *learn*
  (the neurons read the error, softmax minus one-hot, entering at the output as in VSML §3.2,
  and the synapses read the example again with the neurons' new backward messages);
- the genome is the two LSTMs' weights and the read-outs, a few thousand numbers; the state of
  every cell is private to it and starts each lifetime with half of each synapse's cell state
  drawn at random (VSML App. A: it breaks the symmetry between synapses) and the forget gates'
  bias at +5 in the initial genome (VSML App. A: remember by default).

Every genome of a population is run in one batched call: the genome is a ``(P, D)`` tensor and
every state carries the population in its first dimension; the example stream and the initial
noise are shared by the population (common random numbers, which also lower the variance of
the strategy's comparisons).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class RuleShape:
    inputs: int  # pixels; a constant bias input is added
    outputs: int  # classes
    message: int = 4  # numbers per message (VSML: 8)
    synapse_hidden: int = 8  # VSML: 16
    neuron_hidden: int = 16

    @property
    def parts(self) -> dict[str, tuple[int, ...]]:
        """The genome's named pieces, in the order they are laid out in the flat vector."""
        m, h, n = self.message, self.synapse_hidden, self.neuron_hidden
        return {
            "synapse_weights": (2 * m + h, 4 * h),  # [forward in, backward in, hidden] -> gates
            "synapse_bias": (4 * h,),
            "synapse_out": (h, m),  # hidden -> forward message
            "neuron_weights": (m + 1 + n, 4 * n),  # [mean forward message, error, hidden] -> gates
            "neuron_bias": (4 * n,),
            "neuron_forward": (n, m),  # hidden -> output message (its first number: the logit)
            "neuron_backward": (n, m),  # hidden -> backward message to the neuron's synapses
        }

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.parts.values())


def initial_genome(shape: RuleShape, generator: torch.Generator) -> Tensor:
    """Where evolution starts: weights uniform in ±1/sqrt(fan-in), forget-gate biases +5."""
    pieces = []
    for name, size in shape.parts.items():
        if name.endswith("bias"):
            hidden = size[0] // 4
            bias = torch.zeros(size)
            bias[hidden : 2 * hidden] = 5.0  # gate order: input, forget, cell, output
            pieces.append(bias)
        else:
            bound = 1 / math.sqrt(size[0])
            pieces.append((torch.rand(size, generator=generator) * 2 - 1) * bound)
    return torch.cat([p.flatten() for p in pieces])


def unpack(shape: RuleShape, genomes: Tensor) -> dict[str, Tensor]:
    """(P, D) genomes -> {part: (P, *part shape)}."""
    out, start = {}, 0
    for name, size in shape.parts.items():
        n = math.prod(size)
        out[name] = genomes[:, start : start + n].reshape(len(genomes), *size)
        start += n
    return out


def sigmoid_form(weights: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """An LSTM's gate weights with the cell gate's doubled: then every gate is a sigmoid of its
    pre-activation, since tanh(x) = 2 σ(2x) − 1, and one sigmoid over the whole contiguous gate
    tensor replaces three sigmoids and a tanh over strided slices (a faster step on a CPU)."""
    hidden = bias.shape[-1] // 4
    scale = torch.ones(4 * hidden, dtype=bias.dtype, device=bias.device)
    scale[2 * hidden : 3 * hidden] = 2.0
    return weights * scale, bias * scale


def lstm_step(inputs: Tensor, h: Tensor, c: Tensor, weights: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM step for ``(P, N, ·)`` cells, each genome p with its own gate weights ``(P, I + H, 4H)``
    and biases ``(P, 4H)`` in :func:`sigmoid_form`; gate order: input, forget, cell, output."""
    gates = torch.sigmoid(torch.baddbmm(bias[:, None], torch.cat([inputs, h], -1), weights))
    i, f, g, o = gates.chunk(4, -1)
    c = torch.addcmul(f * c, i, 2 * g - 1)
    return o * torch.tanh(c), c


class Lifetime:
    """The state of ``P`` networks, one per genome, learning from one stream of examples."""

    def __init__(self, shape: RuleShape, genomes: Tensor, noise: Tensor):
        """``noise`` (A + 1, B, H // 2), or one per genome (P, A + 1, B, H // 2): the random half of
        every synapse's initial cell state."""
        self.shape, self.g = shape, unpack(shape, genomes)
        for cell in ("synapse", "neuron"):
            self.g[f"{cell}_weights"], self.g[f"{cell}_bias"] = sigmoid_form(
                self.g[f"{cell}_weights"], self.g[f"{cell}_bias"]
            )
        p, a, b = len(genomes), shape.inputs + 1, shape.outputs
        h, n = shape.synapse_hidden, shape.neuron_hidden
        self.syn_h = genomes.new_zeros(p, a * b, h)
        self.syn_c = genomes.new_zeros(p, a * b, h)
        self.syn_c[..., : h // 2] = noise.reshape(-1, a * b, h // 2)
        self.neu_h, self.neu_c = genomes.new_zeros(p, b, n), genomes.new_zeros(p, b, n)
        self.backward = genomes.new_zeros(p, b, shape.message)  # what each neuron tells its synapses
        self.forward_in = genomes.new_zeros(p, b, shape.message)

    def input_messages(self, x: Tensor) -> Tensor:
        """(P, A) pixels -> (P, (A + 1) B, m) forward messages as each synapse sees them: the
        value first (a constant 1 for the bias input), then zeros."""
        a, b, m = self.shape.inputs + 1, self.shape.outputs, self.shape.message
        values = torch.cat([x, x.new_ones(len(x), 1)], -1)
        message = F.pad(values[..., None], (0, m - 1))  # (P, A + 1, m)
        return message[:, :, None, :].expand(-1, a, b, m).reshape(len(x), a * b, m)

    def synapses(self, x: Tensor, backward: Tensor) -> None:
        """Every synapse reads its input neuron's forward message and its output neuron's
        ``backward`` message (P, B, m)."""
        a, b = self.shape.inputs + 1, self.shape.outputs
        backward = backward[:, None].expand(-1, a, -1, -1).reshape(len(self.syn_h), a * b, -1)
        inputs = torch.cat([self.input_messages(x), backward], -1)
        self.syn_h, self.syn_c = lstm_step(
            inputs, self.syn_h, self.syn_c, self.g["synapse_weights"], self.g["synapse_bias"]
        )
        out = torch.bmm(self.syn_h, self.g["synapse_out"])  # (P, A B, m)
        self.forward_in = out.reshape(len(out), a, b, -1).mean(1)

    def neurons(self, error: Tensor) -> Tensor:
        """Neurons read the mean forward message and the error (P, B); return the logits (P, B)."""
        inputs = torch.cat([self.forward_in, error[..., None]], -1)
        self.neu_h, self.neu_c = lstm_step(
            inputs, self.neu_h, self.neu_c, self.g["neuron_weights"], self.g["neuron_bias"]
        )
        self.backward = torch.bmm(self.neu_h, self.g["neuron_backward"])
        return self.forward_in[..., 0] + torch.bmm(self.neu_h, self.g["neuron_forward"])[..., 0]

    def predict(self, x: Tensor) -> Tensor:
        self.synapses(x, self.backward)
        return self.neurons(torch.zeros_like(self.forward_in[..., 0]))

    def learn(self, x: Tensor, logits: Tensor, label: Tensor) -> None:
        error = logits.softmax(-1) - F.one_hot(label, self.shape.outputs).to(logits.dtype)
        self.neurons(error)
        # the direct error path (VSML §3.2), in the learn tick only: a synapse then tells the ticks
        # apart, and never pairs an example with the error of the one before
        self.synapses(x, self.backward + F.pad(error[..., None], (0, self.shape.message - 1)))


def online_logits(shape: RuleShape, genomes: Tensor, images: Tensor, labels: Tensor, noise: Tensor) -> Tensor:
    """Each example predicted before it is learned: (P, D) genomes and a stream shared by all of
    them, (T, A) images and (T,) labels, or one stream each, (P, T, A) and (P, T) -> (P, T, B)
    logits, the t-th from the state after examples 0..t-1."""
    p = len(genomes)
    images, labels = images.expand(p, *images.shape[-2:]), labels.expand(p, labels.shape[-1])
    life = Lifetime(shape, genomes, noise)
    logits = []
    for t in range(images.shape[1]):
        out = life.predict(images[:, t])
        logits.append(out)
        life.learn(images[:, t], out, labels[:, t])
    return torch.stack(logits, 1)


class LearningRule(nn.Module):
    """Holds one genome (the strategy's mean) as its only parameter; :func:`online_logits` runs it."""

    def __init__(self, shape: RuleShape, seed: int = 0):
        super().__init__()
        self.shape = shape
        self.genome = nn.Parameter(initial_genome(shape, torch.Generator().manual_seed(seed)))
