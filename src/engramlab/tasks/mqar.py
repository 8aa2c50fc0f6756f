"""Multi-query associative recall, MQAR (Arora et al. 2023, "Zoology", arXiv 2312.04927, §3 and App.).

A sequence starts with ``kv_pairs`` key–value pairs (keys from the lower half of the vocabulary,
values from the upper half, all distinct within a sequence); then every key appears once more
as a query, at a distance from the context drawn from a power law (queries tend to come soon);
the target at a query position is the key's value. All other positions are filler (random
tokens from the whole vocabulary, Zoology's ``random_non_queries=True``) and do not count.

Zoology's published sweep: vocabulary 8,192, (length, pairs) ∈ {(64, 4), (128, 8), (256, 16)},
power-law exponent 0.01. Generalisation without retraining: ``--set task.kv_pairs=32``.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from engramlab.config import Config
from engramlab.tasks.sequence import SequenceBatch


class MQARConfig(Config):
    vocab: int = Field(8192, ge=8, le=1_000_000, description="vocabulary size (Zoology: 8192)")
    length: int = Field(256, ge=8, le=1_000_000, description="sequence length, even (Zoology: 64, 128, 256)")
    kv_pairs: int = Field(16, ge=1, description="key-value pairs per sequence (Zoology: 4, 8, 16)")
    power_a: float = Field(0.01, gt=0, le=1, description="power-law exponent of the query gaps (Zoology: 0.01)")

    @model_validator(mode="after")
    def _check(self):
        if self.length % 2:
            raise ValueError(f"task.length = {self.length} must be even")
        if 4 * self.kv_pairs > self.length:
            raise ValueError(f"task.kv_pairs = {self.kv_pairs} needs task.length >= 4 * kv_pairs = {4 * self.kv_pairs}")
        if self.kv_pairs > self.vocab // 2 - 1:
            raise ValueError(f"task.kv_pairs = {self.kv_pairs} needs task.vocab >= {2 * self.kv_pairs + 2}")
        return self


class MQARTask:
    """``MQARTask(cfg).sample(batch_size, generator)`` -> :class:`SequenceBatch` of tokens."""

    tokens = True

    def __init__(self, cfg: MQARConfig):
        self.cfg = cfg
        self.input_size = self.output_size = cfg.vocab

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> SequenceBatch:
        c = self.cfg
        pairs, half = c.kv_pairs, c.vocab // 2
        # distinct keys in [1, half) and distinct values in [half, vocab): first columns of random permutations
        keys = 1 + torch.rand(batch_size, half - 1, generator=generator).argsort(1)[:, :pairs]
        values = half + torch.rand(batch_size, c.vocab - half, generator=generator).argsort(1)[:, :pairs]

        inputs = torch.randint(0, c.vocab, (batch_size, c.length), generator=generator)
        targets = torch.zeros(batch_size, c.length, dtype=torch.long)
        mask = torch.zeros(batch_size, c.length, dtype=torch.bool)
        context = 2 * pairs
        inputs[:, 0:context:2], inputs[:, 1:context:2] = keys, values

        # query gaps: distinct even offsets after the context, p(gap) ∝ gap^(a-1) (Zoology's power law)
        space = (c.length - context) // 2
        gap_p = c.power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (c.power_a - 1)
        gaps = torch.multinomial(gap_p.expand(batch_size, space), pairs, replacement=False, generator=generator)
        query_positions = context + 2 * gaps
        # each key is queried once, in a random order
        order = torch.rand(batch_size, pairs, generator=generator).argsort(1)
        inputs.scatter_(1, query_positions, keys.gather(1, order))
        targets.scatter_(1, query_positions, values.gather(1, order))
        mask.scatter_(1, query_positions, True)
        return SequenceBatch(inputs, targets, mask)
