"""A parity classifier: input features, a step module and a halting scheme.

``ParityModel(batch)`` returns the training loss (so the one training loop and DDP can drive it),
``ParityModel.predict(x)`` returns ``(parity, steps)`` for raw parity vectors.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engramlab.ponder.halting import HaltingMode
from engramlab.tasks.parity import ParityBatch

InputEncoding = Literal["raw", "onehot", "signs"]
FEATURES_PER_ELEMENT = {"raw": 1, "onehot": 3, "signs": 2}


def parity_features(x: Tensor, encoding: InputEncoding, sequence: bool) -> Tensor:
    """Per-element features of a (batch, n) vector with entries in {-1, 0, 1}.

    - ``raw``: the value itself (the papers' input);
    - ``onehot``: one-hot over {-1, 0, +1};
    - ``signs``: two indicators ``[x = +1, x = -1]`` (zeros are all-zero), i.e. ``x`` and ``|x|``
      up to a linear map. It makes the number of +1 entries a linear function of the input.

    Flattened to (batch, n · f) for vector steps, (batch, n, f) for sequence steps.
    """
    if encoding == "raw":
        features = x.unsqueeze(-1)
    elif encoding == "onehot":
        features = F.one_hot((x + 1).long(), 3).to(x.dtype)
    elif encoding == "signs":
        features = torch.stack([(x == 1).to(x.dtype), (x == -1).to(x.dtype)], dim=-1)
    else:
        raise ValueError(f"unknown input encoding {encoding!r} (allowed: raw, onehot, signs)")
    return features if sequence else features.flatten(1)


def binary_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits.squeeze(-1), target.to(logits.dtype), reduction="none")


class ParityModel(nn.Module):
    def __init__(self, halting: nn.Module, encoding: InputEncoding = "raw"):
        super().__init__()
        self.halting = halting
        self.encoding = encoding

    def features(self, x: Tensor) -> Tensor:
        return parity_features(x, self.encoding, self.halting.step.sequence_input)

    def forward(self, batch: ParityBatch) -> tuple[Tensor, dict[str, float]]:
        out = self.halting(self.features(batch.x))
        return self.halting.loss(out, batch.y, binary_cross_entropy)

    @torch.no_grad()
    def predict(
        self,
        x: Tensor,
        halting: HaltingMode = "sample",
        max_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Parity of each row of ``x`` (batch, n) and the number of steps it took, both (batch,) long."""
        logits, steps = self.halting.predict(
            self.features(x), halting=halting, max_steps=max_steps, generator=generator
        )
        return (logits.squeeze(-1) > 0).long(), steps
