"""Baselines for learning within a lifetime, with the same online protocol as the evolved rule:
every example is predicted, then learned.

- :func:`gradient_online_logits`: the evolved rule's network shape (pixels and a bias to one
  softmax layer) trained by plain SGD or Adam, one update per example, from zero weights; many
  episodes at once, each with its own weights (Adam and SGD act element-wise, so one optimizer
  over the stacked weights is exactly one optimizer per episode).
- :class:`MetaRNN`: a learner learned by gradient descent across episodes, an LSTM reading the
  image and the previous image's label (Hochreiter et al. 2001; Santoro et al. 2016, §3), the
  standard "black-box" meta-learner VSML compares against (Kirsch & Schmidhuber 2021, §4).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gradient_online_logits(
    images: Tensor, labels: Tensor, ways: int, optimizer: Literal["sgd", "adam"], lr: float
) -> Tensor:
    """(E, T, A) images, (E, T) labels -> (E, T, ways) logits, each before its example's update."""
    inputs = torch.cat([images, images.new_ones(*images.shape[:2], 1)], -1)  # a bias input, as the rule has
    weights = torch.zeros(len(images), inputs.shape[-1], ways, requires_grad=True)
    kind = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
    opt = kind([weights], lr=lr)
    logits = []
    for t in range(images.shape[1]):
        out = torch.bmm(inputs[:, t : t + 1], weights)[:, 0]
        logits.append(out.detach())
        opt.zero_grad()
        F.cross_entropy(out, labels[:, t], reduction="sum").backward()  # a sum: episodes stay independent
        opt.step()
    return torch.stack(logits, 1)


class MetaRNN(nn.Module):
    """LSTM over [image_t, one-hot label_{t-1}] -> logits for image_t; trained across episodes."""

    def __init__(self, pixels: int, ways: int, hidden: int):
        super().__init__()
        self.ways = ways
        self.lstm = nn.LSTM(pixels + ways, hidden, batch_first=True)
        self.head = nn.Linear(hidden, ways)

    def online_logits(self, images: Tensor, labels: Tensor) -> Tensor:
        previous = F.one_hot(labels, self.ways).to(images.dtype)
        previous = F.pad(previous, (0, 0, 1, 0))[:, :-1]  # label t-1 arrives with image t
        hidden, _ = self.lstm(torch.cat([images, previous], -1))
        return self.head(hidden)

    def forward(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.online_logits(batch.images, batch.labels)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.labels.flatten())
        accuracy = (logits.argmax(-1) == batch.labels).float().mean()
        return loss, {"loss": loss.detach(), "online_accuracy": accuracy}
