"""Passkey retrieval across windows (after Mohtashami & Jaggi 2023, "Landmark attention", §4.2).

A long stretch of filler hides one "the pass key is N" statement at a random depth; the sequence
ends with a question token, and the target there is N. The model reads the sequence window by
window (``model.window``), so at lengths beyond one window the passkey is out of reach of a
windowed attention layer: it can only be answered from memory carried across windows (segment
recurrence, an episodic kNN store, a recurrent state).

Tokens: ``0`` the question, ``1`` the passkey marker, ``2 .. 2 + keys - 1`` the passkey values,
then ``filler`` filler tokens. The original task repeats one sentence as filler; here filler
tokens are drawn at random, so neither the content nor the period of the filler tells a model
where it is. The statement is the marker followed by the value; its depth is uniform over the
sequence, or over the part at least ``min_distance`` tokens before the question. In training
(``min_distance = 0``) it also falls inside the last window, where local attention can learn to
read it, which is what teaches the layer to write useful keys and values to memory; evaluation
puts it at least one window back (``min_distance = window``), out of reach without memory.
Generalisation without retraining: ``--set task.length=4096``.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from engramlab.config import Config
from engramlab.tasks.sequence import SequenceBatch

QUESTION, MARKER, FIRST_KEY = 0, 1, 2


class PasskeyConfig(Config):
    length: int = Field(256, ge=4, le=10_000_000, description="tokens per sequence, question included")
    keys: int = Field(64, ge=2, le=100_000, description="number of distinct passkeys (chance accuracy is 1/keys)")
    filler: int = Field(64, ge=1, le=100_000, description="number of distinct filler tokens")
    min_distance: int = Field(
        0, ge=0, description="the passkey value sits at least this many tokens before the question (e.g. a window)"
    )

    @model_validator(mode="after")
    def _check(self):
        if self.min_distance > self.length - 2:
            raise ValueError(
                f"task.min_distance = {self.min_distance} must be at most task.length - 2 = {self.length - 2}"
            )
        return self


class PasskeyTask:
    """``PasskeyTask(cfg).sample(batch_size, generator)`` -> :class:`SequenceBatch` of tokens."""

    tokens = True

    def __init__(self, cfg: PasskeyConfig):
        self.cfg = cfg
        self.input_size = FIRST_KEY + cfg.keys + cfg.filler
        self.output_size = self.input_size

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> SequenceBatch:
        c = self.cfg
        first_filler = FIRST_KEY + c.keys
        inputs = torch.randint(first_filler, first_filler + c.filler, (batch_size, c.length), generator=generator)
        passkey = torch.randint(FIRST_KEY, FIRST_KEY + c.keys, (batch_size, 1), generator=generator)
        # marker position: the value (one after it) stays at least min_distance before the question
        last_marker = min(c.length - 3, c.length - 2 - c.min_distance)
        depth = torch.randint(0, last_marker + 1, (batch_size, 1), generator=generator)
        inputs.scatter_(1, depth, MARKER)
        inputs.scatter_(1, depth + 1, passkey)
        inputs[:, -1] = QUESTION

        targets = torch.zeros(batch_size, c.length, dtype=torch.long)
        targets[:, -1:] = passkey
        mask = torch.zeros(batch_size, c.length, dtype=torch.bool)
        mask[:, -1] = True
        return SequenceBatch(inputs, targets, mask)
