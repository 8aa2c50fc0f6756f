"""Associative recall (Graves, Wayne & Danihelka 2014, "Neural Turing Machines", arXiv 1410.5401, §4.3).

An *item* is a short sequence of random binary vectors (paper: three 6-bit vectors). The model
sees 2-6 items, each marked by a delimiter, then a query: one of the items, bracketed by a second
kind of delimiter; it must output the item that followed the query in the list (the last item is
never queried, so there always is a next one). Generalisation (§4.3, Fig. 11): train with up to
6 items, test with more using ``sample(..., items=(12, 12))``.

Layout of one sample with ``n`` items of ``L`` vectors (``bits + 2`` input channels, ``bits``
output channels; ``d`` the item delimiter channel ``bits``, ``q`` the query delimiter ``bits + 1``)::

    d item_1  d item_2  ...  d item_n   q query q   [L output steps]   padding
    target: item_{k+1} (the item after the queried item_k) during the output steps; mask there only

Every sample is padded to the length of the largest item count of the range drawn from. Items
are random, so two items of one sequence coincide with probability about n² / 2^(L·bits) (tiny
for the paper's 18-bit items); such a query is ambiguous and is not filtered out. Batches are
generated with tensor operations from a ``torch.Generator``: the same state gives the same batch.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import Tensor

from engramlab.config import Config
from engramlab.tasks.copy import check_range
from engramlab.tasks.sequence import SequenceBatch


class RecallConfig(Config):
    bits: int = Field(6, ge=1, le=1024, description="bits per vector (paper: 6)")
    item_length: int = Field(3, ge=1, le=1000, description="vectors per item (paper: 3)")
    min_items: int = Field(2, ge=2, description="fewest items per sequence, at least 2 (paper: 2)")
    max_items: int = Field(6, ge=2, le=10_000, description="most items per sequence in training (paper: 6)")

    @model_validator(mode="after")
    def _check_items(self):
        if self.min_items > self.max_items:
            raise ValueError(f"task.min_items = {self.min_items} must be <= task.max_items = {self.max_items}")
        return self


class RecallTask:
    """``RecallTask(cfg).sample(batch_size, generator, items=None)`` -> :class:`SequenceBatch` of bits."""

    tokens = False  # bit vectors in and out

    def __init__(self, cfg: RecallConfig):
        self.cfg = cfg

    @property
    def input_size(self) -> int:
        return self.cfg.bits + 2  # the bits, the item delimiter and the query delimiter

    @property
    def output_size(self) -> int:
        return self.cfg.bits

    def steps(self, items: int) -> int:
        """Sequence length for ``items`` items: the items with their delimiters, the query, the answer."""
        return items * (self.cfg.item_length + 1) + 2 * self.cfg.item_length + 2

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, items: tuple[int, int] | None = None
    ) -> SequenceBatch:
        """A batch with item counts uniform over ``items`` (inclusive; default the config's range)."""
        lo, hi = check_range("recall items", items or (self.cfg.min_items, self.cfg.max_items), minimum=2)
        bits, length = self.cfg.bits, self.cfg.item_length
        block = length + 1  # a delimiter, then the item
        steps = self.steps(hi)

        n = torch.randint(lo, hi + 1, (batch_size, 1), generator=generator)  # (B, 1)
        vectors = torch.randint(0, 2, (batch_size, hi * length, bits), generator=generator).float()  # items, flat
        query = (torch.rand(batch_size, 1, generator=generator) * (n - 1)).long()  # uniform in 0 .. n-2

        t = torch.arange(steps).unsqueeze(0)  # (1, T)
        after = t - n * block  # time since the end of the item list
        in_items = after < 0
        item_delimiter = in_items & (t % block == 0)
        item_vector = in_items & ~item_delimiter
        query_delimiter = (after == 0) | (after == length + 1)
        query_vector = (after >= 1) & (after <= length)
        output_phase = (after >= length + 2) & (after < 2 * length + 2)

        # which flat vector each step shows (inputs) or asks for (targets); clamped where unused
        shown = torch.where(item_vector, (t // block) * length + t % block - 1, query * length + after - 1)
        shown_mask = item_vector | query_vector
        wanted = (query + 1) * length + after - length - 2

        inputs = torch.zeros(batch_size, steps, bits + 2)
        inputs[..., :bits] = gather_vectors(vectors, shown) * shown_mask.unsqueeze(-1)
        inputs[..., bits] = item_delimiter.float()
        inputs[..., bits + 1] = query_delimiter.float()
        targets = gather_vectors(vectors, wanted) * output_phase.unsqueeze(-1)
        return SequenceBatch(inputs, targets, output_phase)


def gather_vectors(vectors: Tensor, index: Tensor) -> Tensor:
    """vectors (B, K, bits), index (B, T) -> (B, T, bits); out-of-range indices are clamped (masked later)."""
    index = index.clamp(0, vectors.shape[1] - 1)
    return vectors.gather(1, index.unsqueeze(-1).expand(-1, -1, vectors.shape[-1]))
