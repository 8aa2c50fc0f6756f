"""What a sequence task hands to a model: inputs, targets and a loss mask.

Every sequence task (copy, associative recall, MQAR, passkey, ...) returns a
:class:`SequenceBatch`. Two flavours share it:

- **tokens**: ``inputs`` (batch, time) long ids, ``targets`` (batch, time) long ids: one
  classification per position, cross-entropy;
- **bits**: ``inputs`` (batch, time, in_bits) float, ``targets`` (batch, time, out_bits) float in
  {0, 1}: independent bits per position, binary cross-entropy (the NTM tasks).

``mask`` (batch, time) bool marks the positions whose targets count in the loss and in the
metrics; everything else is ignored. Tasks generate batches with tensor operations from a
``torch.Generator``: the same generator state gives the same batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class SequenceBatch(NamedTuple):
    inputs: Tensor  # (B, T) long, or (B, T, in_bits) float
    targets: Tensor  # (B, T) long, or (B, T, out_bits) float in {0, 1}
    mask: Tensor  # (B, T) bool: positions that count

    @property
    def is_tokens(self) -> bool:
        return not self.targets.is_floating_point()


def masked_metrics(logits: Tensor, batch: SequenceBatch) -> dict[str, Tensor]:
    """Per-sequence metrics from the logits of the masked positions only, as (batch,) tensors.

    ``logits``: (positions, classes) for tokens or (positions, bits) for bits, one row per True
    entry of ``batch.mask`` in row-major order (``x[batch.mask]``).

    - ``correct``: fraction of masked positions predicted exactly (all bits right, or the right id);
    - ``solved``: 1 if every masked position of the sequence is right;
    - ``bit_errors`` (bits only): number of wrong bits in the sequence, the NTM paper's cost.
    """
    mask, targets = batch.mask, batch.targets[batch.mask]
    out = {}
    if batch.is_tokens:
        right_at_mask = logits.argmax(-1) == targets
    else:
        wrong_bits = ((logits > 0).float() != targets).sum(-1)
        right_at_mask = wrong_bits == 0
        out["bit_errors"] = per_sequence_sum(wrong_bits.float(), mask)
    out["correct"] = per_sequence_sum(right_at_mask.float(), mask) / mask.sum(1).clamp(min=1)
    out["solved"] = (per_sequence_sum((~right_at_mask).float(), mask) == 0).float()
    return out


def per_sequence_sum(values_at_mask: Tensor, mask: Tensor) -> Tensor:
    """Sum, per sequence, of values given at the masked positions (row-major order)."""
    full = values_at_mask.new_zeros(mask.shape)
    full[mask] = values_at_mask
    return full.sum(1)


def masked_loss(logits: Tensor, batch: SequenceBatch) -> Tensor:
    """Mean loss over the masked positions (``logits`` as in :func:`masked_metrics`):
    cross-entropy for tokens, binary cross-entropy summed over the bits of a position."""
    targets = batch.targets[batch.mask]
    if batch.is_tokens:
        return torch.nn.functional.cross_entropy(logits, targets)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1).mean()
