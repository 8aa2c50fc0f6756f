"""The parity task (Graves 2016, "Adaptive Computation Time", §3.1; PonderNet, arXiv 2107.05407, §3.1).

A vector of size ``n`` has a random number ``k`` of its elements set to +1 or -1 at random and the
rest 0. The target is 1 if the number of +1 entries is odd, else 0.

- Interpolation (PonderNet §3.1): n = 64, k drawn from [1, 64] for training and evaluation.
- Extrapolation (PonderNet §3.1): n = 96, train with k in [1, 48], evaluate with k in [49, 96].

Batches are generated with tensor operations from a ``torch.Generator`` (no per-sample Python), so
the same generator state gives the same batch, and changing ``k`` is a change of argument.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from pydantic import Field, model_validator

from engramlab.config import Config


class ParityConfig(Config):
    n: int = Field(64, ge=1, le=100_000, description="vector size (paper: 64 interpolation, 96 extrapolation)")
    train_k: tuple[int, int] = Field(
        (1, 64), description="inclusive range of the number of non-zero elements in training vectors"
    )
    test_k: tuple[int, int] | None = Field(
        None,
        description="inclusive k range evaluated beyond train_k (extrapolation, paper: [49, 96]); null: none",
    )

    @model_validator(mode="after")
    def _check_ranges(self):
        for name in ("train_k", "test_k"):
            lo_hi = getattr(self, name)
            if lo_hi is not None and not 1 <= lo_hi[0] <= lo_hi[1] <= self.n:
                raise ValueError(f"task.{name} = {list(lo_hi)} must satisfy 1 <= low <= high <= task.n ({self.n})")
        return self


class ParityBatch(NamedTuple):
    x: torch.Tensor  # (batch, n) float, entries in {-1, 0, 1}
    y: torch.Tensor  # (batch,) long, 1 if the number of +1 entries is odd
    k: torch.Tensor  # (batch,) long, number of non-zero entries


def parity_batch(n: int, k: torch.Tensor, generator: torch.Generator | None = None) -> ParityBatch:
    """Vectors of size ``n`` with exactly ``k[i]`` non-zero (±1) entries in row ``i``."""
    k = k.long()
    batch = k.shape[0]
    keys = torch.rand(batch, n, generator=generator)
    # the k positions with the smallest random keys form a uniform random k-subset of each row
    kth_smallest = keys.sort(dim=1).values.gather(1, (k - 1).clamp(min=0).unsqueeze(1))
    mask = (keys <= kth_smallest) & (k > 0).unsqueeze(1)
    signs = torch.randint(0, 2, (batch, n), generator=generator) * 2 - 1
    x = (mask * signs).float()
    y = (x == 1).sum(dim=1).remainder(2)
    return ParityBatch(x, y, k)


class ParityTask:
    """Draws parity batches; ``k`` is uniform over the requested inclusive range."""

    def __init__(self, cfg: ParityConfig):
        self.cfg = cfg

    @property
    def n(self) -> int:
        return self.cfg.n

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, k_range: tuple[int, int] | None = None
    ) -> ParityBatch:
        lo, hi = k_range or self.cfg.train_k
        k = torch.randint(lo, hi + 1, (batch_size,), generator=generator)
        return parity_batch(self.n, k, generator)

    def sample_each_k(self, ks: list[int], per_k: int, generator: torch.Generator | None = None) -> ParityBatch:
        """``per_k`` vectors for every k in ``ks`` (for accuracy-vs-k evaluation)."""
        k = torch.tensor(ks, dtype=torch.long).repeat_interleave(per_k)
        return parity_batch(self.n, k, generator)

    def eval_ks(self) -> list[int]:
        """Every k the evaluation covers: the training range, then the test range if any."""
        ks = list(range(self.cfg.train_k[0], self.cfg.train_k[1] + 1))
        if self.cfg.test_k is not None:
            ks += [k for k in range(self.cfg.test_k[0], self.cfg.test_k[1] + 1) if k not in ks]
        return ks
