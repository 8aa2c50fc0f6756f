"""Path integrators whose hidden units may become grid cells.

:class:`PathIntegratorLSTM` is Banino et al. 2018's supervised network (Nature 557:429, Fig. 1a and
Methods, "Supervised learning"): an LSTM of 128 units reads the ego-motion input (speed and the
sine and cosine of the angular velocity) and its initial state is a linear function of the place-
and head-direction-cell activity at the start; a linear layer of 512 units without bias (the
"bottleneck", dropout 0.5, where the grid-like units appear) feeds softmax read-outs of 256 place
cells and 12 head-direction cells, trained by cross-entropy against the cells' activity.

:class:`PathIntegratorRNN` is Sorscher et al.'s recipe (NeurIPS 2019; Neuron 2023): a vanilla RNN
without biases, non-negative (ReLU) by default, reading the allocentric displacement per step, its initial state
a linear function of the place-cell activity, read out linearly to place cells (difference of
softmaxes in their recipe), with weight decay on the recurrent weights only.

Both return ``(place_logits, hd_logits or None, units)``: the logits at every step (B, T, ·) and
the activity of the units that are scored for gridness (B, T, U).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PathIntegratorLSTM(nn.Module):
    """Banino et al. 2018 (Methods): LSTM -> linear bottleneck (no bias, dropout) -> place and
    head-direction logits; the LSTM's hidden and cell states start as linear maps of the
    ensembles' activity at the start position and heading ("state_init", "cell_init")."""

    def __init__(self, place: int, hd: int, lstm: int = 128, bottleneck: int = 512, dropout: float = 0.5):
        super().__init__()
        self.init_hidden = nn.Linear(place + hd, lstm)
        self.init_cell = nn.Linear(place + hd, lstm)
        self.lstm = nn.LSTM(3, lstm, batch_first=True)
        self.bottleneck = nn.Linear(lstm, bottleneck, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.place_logits = nn.Linear(bottleneck, place)
        self.hd_logits = nn.Linear(bottleneck, hd)

    def forward(self, velocity: Tensor, start_place: Tensor, start_hd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """velocity (B, T, 3); the ensembles' activity at the start (B, place), (B, hd)."""
        start = torch.cat([start_place, start_hd], -1)
        state = (self.init_hidden(start)[None], self.init_cell(start)[None])
        out, _ = self.lstm(velocity, state)
        units = self.bottleneck(out)
        dropped = self.dropout(units)
        return self.place_logits(dropped), self.hd_logits(dropped), units

    def decay_weights(self) -> list[Tensor]:
        """The weights under the paper's L2 penalty (1e-5): the bottleneck and the read-outs."""
        return [self.bottleneck.weight, self.place_logits.weight, self.hd_logits.weight]


class PathIntegratorRNN(nn.Module):
    """Sorscher et al. 2019/2023: ``g_t = f(W_hh g_{t-1} + W_ih v_t)``, ``g_0 = W_enc p_0``,
    place logits ``W_dec g_t``; all without biases; ``f`` ReLU (non-negative, which selects
    hexagons in their analysis) or tanh."""

    def __init__(self, place: int, units: int = 512, nonnegative: bool = True):
        super().__init__()
        self.encoder = nn.Linear(place, units, bias=False)
        self.rnn = nn.RNN(2, units, nonlinearity="relu" if nonnegative else "tanh", bias=False, batch_first=True)
        self.decoder = nn.Linear(units, place, bias=False)

    def forward(self, velocity: Tensor, start_place: Tensor, start_hd: Tensor | None = None):
        """velocity (B, T, 2): the allocentric displacement of each step (m); start_place (B, place)."""
        units, _ = self.rnn(velocity, self.encoder(start_place)[None])
        return self.decoder(units), None, units

    def decay_weights(self) -> list[Tensor]:
        """Sorscher's weight decay falls on the recurrent weights only."""
        return [self.rnn.weight_hh_l0]
