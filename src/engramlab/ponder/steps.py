"""Step modules for pondering: ``s(x, h) -> (h', ŷ, λ)`` (PonderNet, arXiv 2107.05407, §2, eq. 1).

A step module is any network that maps the input and its state to a new state, a prediction
``ŷₙ`` and the halting probability ``λₙ`` (the probability of halting at step ``n`` given that
it has not halted before). Every step below shares one contract, so PonderNet, ACT and the
fixed-depth baseline (``engramlab.ponder.halting``) can wrap any of them:

- ``encode(x)``: the part of the computation that depends on the input only, done **once** per
  input before the first step (for a recurrent cell: the input projection, which is the same at
  every ponder step);
- ``initial_state(x_enc)``: ``h₀``;
- ``forward(x_enc, h) -> StepOutput(state, y, halt_logit)`` with ``λₙ = sigmoid(halt_logit)``.
  Logits, not probabilities, are returned so that ``log λ`` and ``log(1 − λ)`` stay finite.

States and encoded inputs are tensors with the batch first, so a caller may drop halted samples.

Vector steps (one state vector per sample) also split ``forward`` into ``transition(x_enc, h) ->
h'`` and ``read(h')``, so that :func:`engramlab.ponder.halting.unroll` can run the recurrence
alone and apply the heads once to all the states. With ``fused = True`` the GRU and tanh-RNN
transitions run their element-wise parts in the compiled kernels of :mod:`engramlab.ponder.fused`
(the same function; tests/test_fused.py checks them against the code below).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

Init = Literal["pytorch", "truncated-normal", "orthogonal"]


class StepOutput(NamedTuple):
    state: Tensor  # h_{n+1}, batch first
    y: Tensor  # (batch, out_features) prediction logits ŷ_n
    halt_logit: Tensor  # (batch,) logit of λ_n

    @property
    def lam(self) -> Tensor:
        return torch.sigmoid(self.halt_logit)


class Step(nn.Module):
    """Base class of step modules. ``sequence_input``: inputs are (batch, length, features)."""

    sequence_input = False
    fusable = False  # has compiled kernels in engramlab.ponder.fused (VectorStep.use_fused)

    def encode(self, x: Tensor) -> Tensor:
        return x

    def initial_state(self, x_enc: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x_enc: Tensor, h: Tensor) -> StepOutput:
        raise NotImplementedError


class VectorStep(Step):
    """Shared parts of steps whose state is one vector per sample: the input projection (applied
    once per input), and the prediction and halting heads read from the state."""

    def __init__(self, in_features: int, hidden: int, input_width: int):
        super().__init__()
        self.hidden = hidden
        self.input = nn.Linear(in_features, input_width)
        self.kernels = None  # the compiled module of engramlab.ponder.fused, once use_fused() found it

    def use_fused(self) -> bool:
        """Run the transition with the compiled kernels from now on; False (and the PyTorch code
        kept) where they cannot be built."""
        if not self.fusable:
            raise ValueError(f"{type(self).__name__} has no fused kernels (the gru and rnn steps have)")
        from engramlab.ponder import fused

        self.kernels = fused.load()
        return self.kernels is not None

    @property
    def fused(self) -> bool:
        return self.kernels is not None

    @torch.no_grad()
    def initialise(self, scheme: Init) -> None:
        """Draw the weights again by ``scheme`` (from the global RNG, like PyTorch's own init):

        - ``pytorch``: leave PyTorch's ``nn.Linear`` default, U(±1/√fan_in) for weights and biases
          (weight std 1/√(3·fan_in)); nothing is drawn.
        - ``truncated-normal``: every weight N(0, 1/fan_in) cut at ±2 standard deviations, biases 0:
          the default ``Linear`` initialiser of DeepMind's Sonnet and Haiku. The tanh RNN's
          recurrent matrix then has a spectral radius near 0.88 instead of PyTorch's near 0.58.
        - ``orthogonal``: PyTorch's default, but each gate's block of the recurrent matrix
          orthogonal (Keras's default for recurrent kernels): all its singular values are 1.
        """
        if scheme == "pytorch":
            return
        if scheme == "truncated-normal":
            for layer in self.modules():
                if isinstance(layer, nn.Linear):
                    std = 1 / math.sqrt(layer.in_features)
                    nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
                    if layer.bias is not None:
                        layer.bias.zero_()
        elif scheme == "orthogonal":
            for block in self.recurrent.weight.split(self.hidden):
                nn.init.orthogonal_(block)
        else:
            raise ValueError(f"unknown init {scheme!r} (allowed: pytorch, truncated-normal, orthogonal)")

    def transition(self, x_enc: Tensor, h: Tensor) -> Tensor:
        raise NotImplementedError

    def fused_states(self, x_enc: Tensor, steps: int, h: Tensor) -> Tensor:
        """:meth:`states` in the compiled kernels (``h`` empty: zeros); steps with ``fusable`` define it."""
        raise NotImplementedError

    def forward(self, x_enc: Tensor, h: Tensor) -> StepOutput:
        return self.read(self.transition(x_enc, h))

    def states(self, x_enc: Tensor, steps: int, h: Tensor | None = None) -> Tensor:
        """The next ``steps`` states after ``h`` (default: ``initial_state``), every sample to the
        end: (steps, batch, hidden)."""
        if self.kernels is not None:  # the whole unroll in one compiled call; empty h: zeros, as initial_state
            return self.fused_states(x_enc, steps, x_enc.new_empty(0) if h is None else h)
        h, states = self.initial_state(x_enc) if h is None else h, []
        for _ in range(steps):
            h = self.transition(x_enc, h)
            states.append(h)
        return torch.stack(states)

    def add_heads(self, out_features: int) -> None:
        self.readout = nn.Linear(self.hidden, out_features)
        self.halt = nn.Linear(self.hidden, 1)

    def encode(self, x: Tensor) -> Tensor:
        return self.input(x)

    def initial_state(self, x_enc: Tensor) -> Tensor:
        return x_enc.new_zeros(x_enc.shape[0], self.hidden)

    def read(self, h: Tensor) -> StepOutput:
        return StepOutput(h, self.readout(h), self.halt(h).squeeze(-1))

    def __getstate__(self):  # a compiled module does not pickle (or deep-copy): the copy loads its own
        return {**self.__dict__, "kernels": None, "_wants_kernels": self.kernels is not None}

    def __setstate__(self, state):
        wants = state.pop("_wants_kernels", False)
        super().__setstate__(state)
        if wants:
            self.use_fused()


class GRUStep(VectorStep):
    """A GRU cell that re-reads the input at every step (the recurrent parity setup of ACT §3.1).

    Same equations as ``torch.nn.GRUCell``; the input projection ``W_x x`` is computed once in
    ``encode`` and reused at every ponder step instead of being recomputed ``N`` times.
    """

    fusable = True

    def __init__(self, in_features: int, hidden: int = 128, out_features: int = 1):
        super().__init__(in_features, hidden, 3 * hidden)
        self.recurrent = nn.Linear(hidden, 3 * hidden)
        self.add_heads(out_features)

    def transition(self, x_enc: Tensor, h: Tensor) -> Tensor:
        gates = self.recurrent(h)
        if self.kernels is not None:
            return self.kernels.gru_cell(x_enc, gates, h)  # the same equations, fused
        xr, xz, xn = x_enc.chunk(3, dim=-1)
        hr, hz, hn = gates.chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        candidate = torch.tanh(xn + r * hn)
        return candidate + z * (h - candidate)  # (1 - z) * candidate + z * h

    def fused_states(self, x_enc: Tensor, steps: int, h: Tensor) -> Tensor:
        return self.kernels.gru_unroll(x_enc, h, self.recurrent.weight, self.recurrent.bias, steps)


class RNNStep(VectorStep):
    """The plain tanh RNN of the PonderNet/ACT parity experiments: ``h' = tanh(W x + U h + b)``."""

    fusable = True

    def __init__(self, in_features: int, hidden: int = 128, out_features: int = 1):
        super().__init__(in_features, hidden, hidden)
        self.recurrent = nn.Linear(hidden, hidden, bias=False)
        self.add_heads(out_features)

    def transition(self, x_enc: Tensor, h: Tensor) -> Tensor:
        tanh = self.kernels.tanh if self.kernels is not None else torch.tanh
        return tanh(x_enc + self.recurrent(h))

    def fused_states(self, x_enc: Tensor, steps: int, h: Tensor) -> Tensor:
        return self.kernels.rnn_unroll(x_enc, h, self.recurrent.weight, steps)


class MLPStep(VectorStep):
    """A residual MLP applied to the state with the input injected at every step.

    ``h' = LayerNorm(h + MLP(h + W x))``; the post-norm keeps the state bounded however many
    times the step is applied.
    """

    def __init__(self, in_features: int, hidden: int = 128, out_features: int = 1, expansion: int = 2):
        super().__init__(in_features, hidden, hidden)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, expansion * hidden), nn.GELU(), nn.Linear(expansion * hidden, hidden)
        )
        self.norm = nn.LayerNorm(hidden)
        self.add_heads(out_features)

    def transition(self, x_enc: Tensor, h: Tensor) -> Tensor:
        return self.norm(h + self.mlp(h + x_enc))


class TransformerStep(Step):
    """One pre-norm transformer block over a sequence, applied repeatedly (Universal Transformer,
    Dehghani et al. 2019, with the input embedding re-injected at every step).

    Input: (batch, length, in_features). Prediction and halting read the mean over positions.
    """

    sequence_input = True

    def __init__(
        self,
        in_features: int,
        hidden: int = 64,
        out_features: int = 1,
        heads: int = 4,
        ff: int = 128,
        max_len: int = 512,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.input = nn.Linear(in_features, hidden)
        self.position = nn.Parameter(torch.randn(max_len, hidden) * 0.02)
        self.block = nn.TransformerEncoderLayer(hidden, heads, ff, dropout=dropout, batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.readout = nn.Linear(hidden, out_features)
        self.halt = nn.Linear(hidden, 1)

    def encode(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        if length > self.position.shape[0]:
            raise ValueError(f"sequence length {length} exceeds the step's max_len {self.position.shape[0]}")
        return self.input(x) + self.position[:length]

    def initial_state(self, x_enc: Tensor) -> Tensor:
        return torch.zeros_like(x_enc)

    def forward(self, x_enc: Tensor, h: Tensor) -> StepOutput:
        h = self.block(h + x_enc)
        pooled = self.norm(h).mean(dim=1)
        return StepOutput(h, self.readout(pooled), self.halt(pooled).squeeze(-1))


STEPS: dict[str, type[Step]] = {"gru": GRUStep, "rnn": RNNStep, "mlp": MLPStep, "transformer": TransformerStep}
