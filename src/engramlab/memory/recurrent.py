"""Working memory: the state of a recurrent network, rewritten at every step.

The baseline of the talks' taxonomy ("a whiteboard that is rewritten"): an LSTM (Hochreiter &
Schmidhuber 1997) or GRU (Cho et al. 2014) whose only memory is its state vector. ``nn.LSTM`` /
``nn.GRU`` run the whole window in one fused call; the state returned is ``(h, c)`` (LSTM) or
``h`` (GRU), batch first, so :meth:`Memory.reset` zeroes finished sequences.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

from torch import Tensor, nn

from engramlab.memory.base import Memory, MemoryKind


class Recurrent(Memory):
    """``Recurrent(d_model, cell="lstm"|"gru")``: one recurrent layer of width ``d_model``."""

    def __init__(self, d_model: int, cell: Literal["lstm", "gru"] = "lstm"):
        super().__init__()
        self.d_model, self.cell = d_model, cell
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(d_model, d_model, batch_first=True)

    def forward(self, x: Tensor, state=None):
        # nn.LSTM/GRU keep the state as (layers, batch, d); the interface keeps batch first
        if state is not None:
            state = tuple(s.transpose(0, 1).contiguous() for s in state)
            state = state if self.cell == "lstm" else state[0]
        y, state = self.rnn(x, state)
        state = state if self.cell == "lstm" else (state,)
        return y, tuple(s.transpose(0, 1) for s in state)


LSTM_KIND = MemoryKind("lstm", partial(Recurrent, cell="lstm"), color="tab:orange")
GRU_KIND = MemoryKind("gru", partial(Recurrent, cell="gru"), color="tab:brown")
MEMORY_KINDS = (LSTM_KIND, GRU_KIND)  # what this module adds to engramlab.memory.MEMORY_KINDS
