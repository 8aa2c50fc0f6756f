"""Paired associative inference, PAI (Banino et al. 2020, MEMO, §3; PonderNet, App. D).

Items come in sequences of ``length`` (A–B–C for length 3). One memory holds every adjacent pair
of ``sequences`` sequences (A₁B₁, B₁C₁, …: ``sequences × (length − 1)`` rows, each the two item
vectors side by side, in random order). A query is (cue, match, lure):

- **direct**: one stored pair, cue at position p and match at p + 1 (A–B, B–C, …);
- **indirect** (inference): the whole chain, cue at position 0 and match at the last position
  (A–C for length 3), which no single row holds.

The lure sits at the match's position in another sequence of the same memory; match and lure
come in random order after the cue. Batches are half direct, half indirect (MEMO §3).

Substitute for the paper's ImageNet embeddings (documented deviation): items are fixed random
unit vectors (``item_dim``) from a seeded table whose first ``train_items`` rows are the training
pool and the next ``test_items`` rows the test pool. The pools are disjoint, so no item identity
can be learned: a model succeeds only by reading the memory. For the same reason the target is
which of the two candidates is the match (0 or 1; chance 50 %), not the item's class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator

from engramlab.config import Config


class PAIConfig(Config):
    length: int = Field(3, ge=3, le=8, description="items per sequence (A-B-C is 3; MEMO also uses 4 and 5)")
    sequences: int = Field(16, ge=2, le=1024, description="sequences per memory (paper: 16)")
    item_dim: int = Field(64, ge=2, le=4096, description="dimension of the random item vectors")
    train_items: int = Field(20_000, ge=2, description="items in the training pool")
    test_items: int = Field(5_000, ge=2, description="items in the test pool, disjoint from the training pool")
    item_seed: int = Field(1234, description="seed of the item table (the same for every run)")
    split: Literal["train", "test"] = Field("train", description="which item pool the sequences are drawn from")
    indirect_fraction: float = Field(0.5, ge=0.0, le=1.0, description="share of indirect (inference) queries")

    @model_validator(mode="after")
    def _check(self):
        needed = self.sequences * self.length
        pool = self.train_items if self.split == "train" else self.test_items
        if needed > pool:
            raise ValueError(
                f"task.{self.split}_items = {pool} is too small: one memory needs sequences x length = {needed} items"
            )
        return self


@dataclass
class PAIBatch:
    memory: torch.Tensor  # (B, rows, 2 * item_dim): adjacent pairs, shuffled
    query: torch.Tensor  # (B, 3, item_dim): cue, then the two candidates
    target: torch.Tensor  # (B,): 0 or 1, the candidate that is the match
    cue_position: torch.Tensor  # (B,): position of the cue in its sequence (0 = A)
    match_position: torch.Tensor  # (B,): position of the match (match - cue = 1: direct)

    @property
    def indirect(self) -> torch.Tensor:
        return self.match_position - self.cue_position > 1


class PAITask:
    """``PAITask(cfg).sample(batch_size, generator)`` -> :class:`PAIBatch`, every tensor op batched."""

    def __init__(self, cfg: PAIConfig):
        self.cfg = cfg
        table = torch.randn(
            cfg.train_items + cfg.test_items, cfg.item_dim, generator=torch.Generator().manual_seed(cfg.item_seed)
        )
        self.items = torch.nn.functional.normalize(table, dim=-1)
        self.pool = slice(0, cfg.train_items) if cfg.split == "train" else slice(cfg.train_items, None)
        self.rows = cfg.sequences * (cfg.length - 1)

    def draw_sequences(self, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
        """(B, sequences, length) item ids, all distinct within a memory, from this split's pool."""
        c = self.cfg
        pool = self.items[self.pool]
        # the top-k of uniform noise is a uniform draw without replacement
        ids = torch.rand(batch_size, len(pool), generator=generator).topk(c.sequences * c.length, dim=1).indices
        return (ids + (self.pool.start or 0)).view(batch_size, c.sequences, c.length)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> PAIBatch:
        c = self.cfg
        ids = self.draw_sequences(batch_size, generator)  # (B, N, L)
        batch = torch.arange(batch_size)

        pairs = torch.stack([ids[:, :, :-1], ids[:, :, 1:]], dim=-1).reshape(batch_size, self.rows, 2)
        order = torch.rand(batch_size, self.rows, generator=generator).argsort(dim=1)
        pairs = pairs[batch[:, None], order]
        memory = self.items[pairs].flatten(2)  # (B, rows, 2 * item_dim)

        indirect = torch.rand(batch_size, generator=generator) < c.indirect_fraction
        direct_cue = torch.randint(0, c.length - 1, (batch_size,), generator=generator)
        cue_position = torch.where(indirect, 0, direct_cue)
        match_position = torch.where(indirect, c.length - 1, direct_cue + 1)
        sequence = torch.randint(0, c.sequences, (batch_size,), generator=generator)
        other = (sequence + torch.randint(1, c.sequences, (batch_size,), generator=generator)) % c.sequences
        cue = ids[batch, sequence, cue_position]
        match = ids[batch, sequence, match_position]
        lure = ids[batch, other, match_position]

        target = torch.randint(0, 2, (batch_size,), generator=generator)
        first = torch.where(target == 0, match, lure)
        second = torch.where(target == 0, lure, match)
        query = self.items[torch.stack([cue, first, second], dim=1)]
        return PAIBatch(memory, query, target, cue_position, match_position)
