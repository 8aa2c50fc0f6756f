"""The copy task (Graves, Wayne & Danihelka 2014, "Neural Turing Machines", arXiv 1410.5401, §4.1).

A sequence of random binary vectors (paper: 8 bits, length uniform in 1..20) is followed by a
delimiter flag on an extra input channel; then the input is zero and the model must output the
whole sequence again. The cost is counted in bits per sequence. Generalisation (§4.1, Figs. 4-6):
train on lengths up to 20, test on 30, 50, 120 with ``sample(..., length=(120, 120))``.

Layout of one sample of length ``L`` (``bits + 1`` input channels, ``bits`` output channels)::

    time      0 .. L-1     L          L+1 .. 2L         2L+1 .. end
    input     the bits     delimiter  zeros             zeros (padding)
    target    0            0          the bits again    0
    mask      False        False      True              False

A batch mixes lengths: every sample is padded to ``2 * max_length + 1`` steps (``max_length`` of
the range drawn from) and the mask marks exactly its own output phase. Batches are generated with
tensor operations from a ``torch.Generator``: the same generator state gives the same batch.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from engramlab.config import Config
from engramlab.tasks.sequence import SequenceBatch


class CopyConfig(Config):
    bits: int = Field(8, ge=1, le=1024, description="bits per vector (paper: 8)")
    min_length: int = Field(1, ge=1, description="shortest sequence to copy (paper: 1)")
    max_length: int = Field(20, ge=1, le=100_000, description="longest sequence to copy in training (paper: 20)")

    @model_validator(mode="after")
    def _check_lengths(self):
        if self.min_length > self.max_length:
            raise ValueError(f"task.min_length = {self.min_length} must be <= task.max_length = {self.max_length}")
        return self


def check_range(name: str, lo_hi: tuple[int, int], minimum: int) -> tuple[int, int]:
    lo, hi = lo_hi
    if not minimum <= lo <= hi:
        raise ValueError(f"{name} = {list(lo_hi)} must satisfy {minimum} <= low <= high")
    return lo, hi


class CopyTask:
    """``CopyTask(cfg).sample(batch_size, generator, length=None)`` -> :class:`SequenceBatch` of bits."""

    tokens = False  # bit vectors in and out

    def __init__(self, cfg: CopyConfig):
        self.cfg = cfg

    @property
    def input_size(self) -> int:
        return self.cfg.bits + 1  # the bits and the delimiter channel

    @property
    def output_size(self) -> int:
        return self.cfg.bits

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, length: tuple[int, int] | None = None
    ) -> SequenceBatch:
        """A batch with lengths uniform over ``length`` (inclusive; default the config's range)."""
        lo, hi = check_range("copy length", length or (self.cfg.min_length, self.cfg.max_length), minimum=1)
        bits = self.cfg.bits
        steps = 2 * hi + 1
        lengths = torch.randint(lo, hi + 1, (batch_size, 1), generator=generator)  # (B, 1)
        sequence = torch.randint(0, 2, (batch_size, hi, bits), generator=generator).float()

        t = torch.arange(steps).unsqueeze(0)  # (1, T)
        input_phase = t < lengths
        output_phase = (t > lengths) & (t <= 2 * lengths)

        inputs = torch.zeros(batch_size, steps, bits + 1)
        inputs[:, :hi, :bits] = sequence * input_phase[:, :hi, None]
        inputs[:, :, bits] = (t == lengths).float()

        # at output step t the target is element t - L - 1 of the sequence
        source = (t - lengths - 1).clamp(0, hi - 1)
        targets = sequence.gather(1, source.unsqueeze(-1).expand(-1, -1, bits)) * output_phase.unsqueeze(-1)
        return SequenceBatch(inputs, targets, output_phase)
