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
    mix: list[tuple[int, int]] | None = Field(
        None,
        description="draw each batch's (length, kv_pairs) at random from this list, as Zoology trains on several "
        "lengths at once; null: always (length, kv_pairs)",
    )

    @model_validator(mode="after")
    def _check(self):
        for length, pairs in [(self.length, self.kv_pairs), *(self.mix or [])]:
            if length % 2:
                raise ValueError(f"task.length = {length} must be even")
            if 4 * pairs > length:
                raise ValueError(f"task.kv_pairs = {pairs} needs task.length >= 4 * kv_pairs = {4 * pairs}")
            if pairs > self.vocab // 2 - 1:
                raise ValueError(f"task.kv_pairs = {pairs} needs task.vocab >= {2 * pairs + 2}")
        return self


class MQARTask:
    """``MQARTask(cfg).sample(batch_size, generator)`` -> :class:`SequenceBatch` of tokens."""

    tokens = True

    def __init__(self, cfg: MQARConfig):
        self.cfg = cfg
        self.input_size = self.output_size = cfg.vocab

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> SequenceBatch:
        if not self.cfg.mix:
            return self.sample_shape(batch_size, self.cfg.length, self.cfg.kv_pairs, generator)
        choice = int(torch.randint(0, len(self.cfg.mix), (1,), generator=generator))
        return self.sample_shape(batch_size, *self.cfg.mix[choice], generator)

    def sample_shape(
        self, batch_size: int, length: int, pairs: int, generator: torch.Generator | None = None
    ) -> SequenceBatch:
        c = self.cfg
        half = c.vocab // 2
        # distinct keys in [1, half) and distinct values in [half, vocab): first columns of random permutations
        keys = 1 + torch.rand(batch_size, half - 1, generator=generator).argsort(1)[:, :pairs]
        values = half + torch.rand(batch_size, c.vocab - half, generator=generator).argsort(1)[:, :pairs]

        inputs = torch.randint(0, c.vocab, (batch_size, length), generator=generator)
        targets = torch.zeros(batch_size, length, dtype=torch.long)
        mask = torch.zeros(batch_size, length, dtype=torch.bool)
        context = 2 * pairs
        inputs[:, 0:context:2], inputs[:, 1:context:2] = keys, values

        # query gaps: distinct even offsets after the context, p(gap) ∝ gap^(a-1) (Zoology's power law)
        space = (length - context) // 2
        gap_p = c.power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (c.power_a - 1)
        gaps = torch.multinomial(gap_p.expand(batch_size, space), pairs, replacement=False, generator=generator)
        query_positions = context + 2 * gaps
        # each key is queried once, in a random order
        order = torch.rand(batch_size, pairs, generator=generator).argsort(1)
        inputs.scatter_(1, query_positions, keys.gather(1, order))
        targets.scatter_(1, query_positions, values.gather(1, order))
        mask.scatter_(1, query_positions, True)
        return SequenceBatch(inputs, targets, mask)
