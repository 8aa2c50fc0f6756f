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

Every hop predicts the answer from its query state (a pointer over the candidates) and emits a
halting logit; the wrapper turns these into PonderNet's halting distribution, MEMO's REINFORCE
policy (:class:`~engramlab.ponder.halting.Reinforce`) or ACT's. The halting unit reads the state,
the cue and the hop's sorted candidate scores. Deviations: MEMO's halting network read the
hop's attention weights and a Bhattacharyya distance between successive ones; the item
embeddings start aligned (:meth:`MEMOStep.start_aligned`), an initialisation of ours.

:class:`BabiMEMOStep` is the same hop on bAbI: story sentences as slots, answers as classes.

Inputs are packed into one tensor (the wrappers drop halted rows of one batch-first tensor):
:func:`pack` puts the memory rows and the query side by side, :meth:`MEMOStep.encode` splits
them again and embeds them once per query.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engramlab.models.babi_ut import FactEmbedding
from engramlab.ponder.steps import Step, StepOutput


def pack(memory: Tensor, query: Tensor) -> Tensor:
    """(B, rows, row_width) and (B, query_width) -> one (B, rows * row_width + query_width) tensor."""
    return torch.cat([memory.flatten(1), query.flatten(1)], dim=1)


def unpack(x: Tensor, rows: int, row_width: int, item_dim: int) -> tuple[Tensor, Tensor]:
    """The inverse of :func:`pack` for PAI: memory (B, rows, row_width) and the query items
    (B, 1 + candidates, item_dim), the cue first."""
    memory_size = rows * row_width
    return x[:, :memory_size].unflatten(1, (rows, row_width)), x[:, memory_size:].unflatten(1, (-1, item_dim))


class MEMOStep(Step):
    """``MEMOStep(row_width, item_dim, rows, candidates=2, hidden=128, heads=4, aligned_start=True)``: one hop.

    The input query is a cue followed by ``candidates`` items; the prediction scores each
    candidate by the dot product of its embedding with the hop's output (a pointer to the answer,
    since test items are never seen in training and cannot be classes).
    """

    def __init__(
        self,
        row_width: int,
        item_dim: int,
        rows: int,
        candidates: int = 2,
        hidden: int = 128,
        heads: int = 4,
        aligned_start: bool = True,
    ):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden = {hidden} must be a multiple of heads = {heads}")
        self.row_width, self.item_dim, self.rows = row_width, item_dim, rows
        self.hidden, self.heads = hidden, heads
        self.key = nn.Linear(row_width, hidden)  # separate key and value embeddings of every slot
        self.value = nn.Linear(row_width, hidden)
        self.embed_cue = nn.Linear(item_dim, hidden)
        self.embed_candidate = nn.Linear(item_dim, hidden)
        self.attend = nn.Linear(hidden, hidden)  # the hop's query, from the recirculated state
        self.recirculate = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.norm = nn.LayerNorm(hidden)
        self.output = nn.Linear(hidden, hidden)
        self.halt = nn.Linear(2 * hidden + candidates, 1)
        # a learned sharpness per head; a head sees hidden/heads of the item dimensions, so aligned
        # items score about 1/heads at the start: 4 x heads makes the first reads sharp
        self.log_scale = nn.Parameter(torch.full((heads,), math.log(4.0 * heads)))
        if aligned_start:
            self.start_aligned(row_width // item_dim)

    @torch.no_grad()
    def start_aligned(self, items_per_row: int) -> None:
        """Start every item embedding from one random map ``E`` with ``EᵀE ≈ I``.

        Keys, values, cue and candidates keep separate parameters (MEMO), but at the start an item
        matches itself: ``(E c)·(E a) ≈ c·a``, so the first hop already attends to the rows
        holding the cue and the read-out already points at its partner. The query and output maps
        start as the identity and the recirculation MLP's last layer at zero, so this alignment
        carries through the hops. ``aligned_start=False`` keeps PyTorch's default initialisation
        (the ablation in docs/memo-pai.md).
        """
        hidden, item_dim = self.hidden, self.item_dim
        shared = torch.randn(hidden, item_dim) / hidden**0.5
        for layer in (self.key, self.value):
            layer.weight.copy_(shared.repeat(1, items_per_row))
            layer.bias.zero_()
        for layer in (self.embed_cue, self.embed_candidate):
            layer.weight.copy_(shared)
            layer.bias.zero_()
        for layer in (self.attend, self.output):  # the hop's query and read-out maps start as the identity
            layer.weight.copy_(torch.eye(hidden))
            layer.bias.zero_()
        self.recirculate[-1].weight.zero_()
        self.recirculate[-1].bias.zero_()

    def encode(self, x: Tensor) -> Tensor:
        """Keys, values, the cue and the candidates, embedded once per input: (B, 2 rows + 1 + C, hidden)."""
        memory, items = unpack(x, self.rows, self.row_width, self.item_dim)
        cue, candidates = items[:, :1], items[:, 1:]
        parts = [self.key(memory), self.value(memory), self.embed_cue(cue), self.embed_candidate(candidates)]
        return torch.cat(parts, dim=1)

    def initial_state(self, x_enc: Tensor) -> Tensor:
        return x_enc[:, 2 * self.rows]  # the embedded cue is the first query

    def attention(self, x_enc: Tensor, h: Tensor) -> Tensor:
        """(B, heads, rows): the hop's attention weights over the memory slots."""
        keys = x_enc[:, : self.rows].unflatten(-1, (self.heads, -1))  # (B, rows, heads, d)
        q = self.attend(h).unflatten(-1, (self.heads, -1))  # (B, heads, d)
        scores = torch.einsum("bhd,brhd->bhr", q, keys) * self.log_scale.exp()[:, None]
        return F.softmax(scores, dim=-1)

    def forward(self, x_enc: Tensor, h: Tensor) -> StepOutput:
        weights = self.attention(x_enc, h)
        values = x_enc[:, self.rows : 2 * self.rows].unflatten(-1, (self.heads, -1))
        read = torch.einsum("bhr,brhd->bhd", weights, values).flatten(1)  # (B, hidden)
        state = self.norm(h + read + self.recirculate(torch.cat([h, read], dim=-1)))  # the next hop's query
        candidates = x_enc[:, 2 * self.rows + 1 :]  # (B, C, hidden)
        logits = torch.einsum("bch,bh->bc", candidates, self.output(state)) / self.hidden**0.5
        # halting reads the state, the cue and how clearly the hop separates the candidates, so
        # a hop can stop as soon as its answer is clear
        confidence = logits.sort(dim=-1, descending=True).values
        halt = self.halt(torch.cat([state, x_enc[:, 2 * self.rows], confidence], dim=-1)).squeeze(-1)
        return StepOutput(state, logits, halt)


class PAITransformerStep(Step):
    """``PAITransformerStep(row_width, item_dim, rows, candidates=2, hidden=128, heads=4, ff=256)``:
    the non-memory baseline, one Universal Transformer layer (Dehghani et al. 2019) over the same inputs.

    Every memory row, the cue and each candidate is one token (a linear embedding plus a learned
    embedding of its role); the shared layer is applied once per step with the embedded input
    re-injected, as in :class:`~engramlab.ponder.steps.TransformerStep`. There is no separate
    key/value memory and no recirculated query: the layer's self-attention mixes all tokens. Each
    candidate's logit reads its own token; halting reads the cue token. With
    :class:`~engramlab.ponder.halting.FixedDepth` this is the UT of the PonderNet paper's PAI table;
    with PonderNet halting it is PonderNet's own PAI model (App. D).
    """

    def __init__(
        self,
        row_width: int,
        item_dim: int,
        rows: int,
        candidates: int = 2,
        hidden: int = 128,
        heads: int = 4,
        ff: int = 256,
    ):
        super().__init__()
        self.item_dim, self.rows, self.row_width = item_dim, rows, row_width
        self.embed_row = nn.Linear(row_width, hidden)
        self.embed_item = nn.Linear(item_dim, hidden)
        self.role = nn.Parameter(torch.randn(2 + candidates, hidden) * 0.02)  # row, cue, candidate 1..C
        self.block = nn.TransformerEncoderLayer(hidden, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.readout = nn.Linear(hidden, 1)
        self.halt = nn.Linear(hidden, 1)

    def encode(self, x: Tensor) -> Tensor:
        memory, items = unpack(x, self.rows, self.row_width, self.item_dim)
        rows = self.embed_row(memory) + self.role[0]
        return torch.cat([rows, self.embed_item(items) + self.role[1:]], dim=1)

    def initial_state(self, x_enc: Tensor) -> Tensor:
        return torch.zeros_like(x_enc)

    def forward(self, x_enc: Tensor, h: Tensor) -> StepOutput:
        h = self.block(h + x_enc)
        out = self.norm(h)
        logits = self.readout(out[:, self.rows + 1 :]).squeeze(-1)  # (B, C)
        return StepOutput(h, logits, self.halt(out[:, self.rows]).squeeze(-1))


class BabiMEMOStep(Step):
    """One MEMO hop on bAbI: ``BabiMEMOStep(vocab_size, answers, max_words, memory_size, hidden, heads, centred)``.

    Every story sentence is its own memory slot (MEMO keeps facts separate), embedded as a fact
    (:class:`~engramlab.models.babi_ut.FactEmbedding`: weighted word embeddings plus the
    sentence's age) and then by **separate key and value maps**. The question's embedding is the
    first query; each hop attends to the keys with several heads, reads the values and
    **recirculates** (the read-out, combined with the query, is the next query), as the PAI step
    :class:`MEMOStep` does. The answer is a class over the answer words, predicted from the hop's
    query state; the halting logit reads the same state.

    Input: the packed story of :func:`~engramlab.models.babi_ut.pack_story` (B, 1 + M, W). The
    encoded input is one tensor (B, 1 + M, 2 hidden + 1) so that the halting wrappers can drop
    halted rows: row 0 holds the question, rows 1… the key, the value and an empty-slot flag.
    """

    sequence_input = True

    def __init__(
        self,
        vocab_size: int,
        answers: int,
        max_words: int,
        memory_size: int,
        hidden: int = 128,
        heads: int = 4,
        centred: bool = False,
    ):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden = {hidden} must be a multiple of heads = {heads}")
        self.hidden, self.heads = hidden, heads
        self.facts = FactEmbedding(vocab_size, max_words, memory_size, hidden, centred)
        self.key = nn.Linear(hidden, hidden)  # separate key and value embeddings of every slot
        self.value = nn.Linear(hidden, hidden)
        self.attend = nn.Linear(hidden, hidden)  # the hop's query, from the recirculated state
        self.recirculate = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.norm = nn.LayerNorm(hidden)
        self.answer = nn.Linear(hidden, answers)
        self.halt = nn.Linear(hidden, 1)

    def encode(self, x: Tensor) -> Tensor:
        facts, empty = self.facts(x)
        question, sentences = facts[:, :1], facts[:, 1:]
        slots = torch.cat([self.key(sentences), self.value(sentences), empty[:, 1:, None].to(facts.dtype)], dim=-1)
        question = F.pad(question, (0, self.hidden + 1))  # the question row has no value and is not a slot
        return torch.cat([question, slots], dim=1)

    def initial_state(self, x_enc: Tensor) -> Tensor:
        return x_enc[:, 0, : self.hidden]  # the embedded question is the first query

    def attention(self, x_enc: Tensor, h: Tensor) -> Tensor:
        """(B, heads, M): the hop's attention weights over the sentences; empty slots get none."""
        keys = x_enc[:, 1:, : self.hidden].unflatten(-1, (self.heads, -1))  # (B, M, heads, d / heads)
        empty = x_enc[:, 1:, -1].bool()
        q = self.attend(h).unflatten(-1, (self.heads, -1))
        scores = torch.einsum("bhd,bmhd->bhm", q, keys) / (self.hidden // self.heads) ** 0.5
        return scores.masked_fill(empty[:, None], torch.finfo(scores.dtype).min).softmax(dim=-1)

    def forward(self, x_enc: Tensor, h: Tensor) -> StepOutput:
        weights = self.attention(x_enc, h)
        values = x_enc[:, 1:, self.hidden : 2 * self.hidden].unflatten(-1, (self.heads, -1))
        read = torch.einsum("bhm,bmhd->bhd", weights, values).flatten(1)
        state = self.norm(h + read + self.recirculate(torch.cat([h, read], dim=-1)))
        return StepOutput(state, self.answer(state), self.halt(state).squeeze(-1))
