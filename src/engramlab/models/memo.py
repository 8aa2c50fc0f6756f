"""MEMO (Banino et al. 2020, "MEMO: a deep network for flexible combination of episodic memories").

Reference notes: ``../shared/reference/pondernet.md`` (PAI and MEMO). A MEMO hop is a
:class:`~engramlab.ponder.steps.Step`, so the halting wrappers of
``engramlab.ponder.halting`` (PonderNet, ACT, a fixed number of hops) decide how many hops a
query takes. What follows the paper:

- **facts kept separate**: every memory row (one stored pair) is its own slot, with its own
  **key and value embeddings** (two linear maps of the row);
- **multi-head attention over the slots**: the hop's query attends to the keys and
  reads the values;
- **recirculation**: the read-out of hop t, projected, is the query of hop t + 1; the
  first query embeds the input query (cue and candidates).

Every hop predicts the answer from its query state and the embedded input query, and emits a
halting logit from the same features; the wrapper turns these into PonderNet's halting
distribution (or ACT's). Deviations: the paper's halting network is trained with REINFORCE
and reads the hop's attention weights and a Bhattacharyya distance between successive ones;
here the halting logit is a linear read of the state, the same for every wrapper.

Inputs are packed into one tensor (the wrappers drop halted rows of one batch-first tensor):
:func:`pack` puts the memory rows and the query side by side, :meth:`MEMOStep.encode` splits
them again and embeds them once per query.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engramlab.ponder.steps import Step, StepOutput


def pack(memory: Tensor, query: Tensor) -> Tensor:
    """(B, rows, row_width) and (B, query_width) -> one (B, rows * row_width + query_width) tensor."""
    return torch.cat([memory.flatten(1), query.flatten(1)], dim=1)


class MEMOStep(Step):
    """``MEMOStep(row_width, item_dim, rows, candidates=2, hidden=128, heads=4)``: one hop.

    The input query is a cue followed by ``candidates`` items; the prediction scores each
    candidate by the dot product of its embedding with the hop's output (a pointer to the answer,
    since test items are never seen in training and cannot be classes).
    """

    def __init__(
        self, row_width: int, item_dim: int, rows: int, candidates: int = 2, hidden: int = 128, heads: int = 4
    ):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden = {hidden} must be a multiple of heads = {heads}")
        self.row_width, self.item_dim, self.rows, self.candidates = row_width, item_dim, rows, candidates
        self.hidden, self.heads = hidden, heads
        self.key = nn.Linear(row_width, hidden)  # separate key and value embeddings of every slot
        self.value = nn.Linear(row_width, hidden)
        self.embed_cue = nn.Linear(item_dim, hidden)
        self.embed_candidate = nn.Linear(item_dim, hidden)
        self.attend = nn.Linear(hidden, hidden)  # the hop's query, from the recirculated state
        self.recirculate = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.norm = nn.LayerNorm(hidden)
        self.output = nn.Linear(hidden, hidden)
        self.halt = nn.Linear(2 * hidden, 1)

    def encode(self, x: Tensor) -> Tensor:
        """Keys, values, the cue and the candidates, embedded once per input: (B, 2 rows + 1 + C, hidden)."""
        batch, memory_size = x.shape[0], self.rows * self.row_width
        memory = x[:, :memory_size].view(batch, self.rows, self.row_width)
        cue = x[:, memory_size : memory_size + self.item_dim]
        candidates = x[:, memory_size + self.item_dim :].view(batch, self.candidates, self.item_dim)
        parts = [self.key(memory), self.value(memory), self.embed_cue(cue)[:, None], self.embed_candidate(candidates)]
        return torch.cat(parts, dim=1)

    def initial_state(self, x_enc: Tensor) -> Tensor:
        return x_enc[:, 2 * self.rows]  # the embedded cue is the first query

    def attention(self, x_enc: Tensor, h: Tensor) -> Tensor:
        """(B, heads, rows): the hop's attention weights over the memory slots."""
        keys = x_enc[:, : self.rows].unflatten(-1, (self.heads, -1))  # (B, rows, heads, d)
        q = self.attend(h).unflatten(-1, (self.heads, -1))  # (B, heads, d)
        scores = torch.einsum("bhd,brhd->bhr", q, keys) / keys.shape[-1] ** 0.5
        return F.softmax(scores, dim=-1)

    def forward(self, x_enc: Tensor, h: Tensor) -> StepOutput:
        weights = self.attention(x_enc, h)
        values = x_enc[:, self.rows : 2 * self.rows].unflatten(-1, (self.heads, -1))
        read = torch.einsum("bhr,brhd->bhd", weights, values).flatten(1)  # (B, hidden)
        state = self.norm(h + self.recirculate(torch.cat([h, read], dim=-1)))  # the next hop's query
        candidates = x_enc[:, 2 * self.rows + 1 :]  # (B, C, hidden)
        logits = torch.einsum("bch,bh->bc", candidates, self.output(state)) / self.hidden**0.5
        halt = self.halt(torch.cat([state, x_enc[:, 2 * self.rows]], dim=-1)).squeeze(-1)
        return StepOutput(state, logits, halt)
