"""Streams of labelled images for learning within a lifetime (few-shot, online).

An episode picks ``ways`` classes of a pool, gives them output units in a random order (so
nothing about a class can be stored in a genome or in weights trained across episodes), draws
``shots`` distinct images of each and shows the ``ways × shots`` images in a random order. Every
image is predicted before its label is revealed (VSML §3; Santoro et al. 2016), so the accuracy
on images whose class has already been seen n times is the accuracy "after n examples per class".

Pools: scikit-learn's 8 × 8 UCI digits (shipped with the library, offline), MNIST's test set
(from a local IDX directory) and Omniglot's characters (from a local zip file), both averaged
down to the same 8 × 8 grid. Episodes are built with tensor operations for a whole batch at
once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from engramlab.errors import ConfigError
from engramlab.tasks.cache import data_cache


@dataclass(frozen=True)
class ImagePool:
    name: str
    images: Tensor  # (N, pixels) float in [0, 1]
    labels: Tensor  # (N,) long

    def only(self, classes: list[int]) -> ImagePool:
        keep = torch.isin(self.labels, torch.tensor(classes))
        missing = sorted(set(classes) - set(self.labels.unique().tolist()))
        if missing:
            raise ConfigError(f"{self.name}: no images of class(es) {missing}")
        return ImagePool(f"{self.name}{classes}", self.images[keep], self.labels[keep])


@data_cache()
def sklearn_digits() -> ImagePool:
    """The 1,797 UCI handwritten digits of scikit-learn (8 × 8, grey levels 0–16); read once per
    process (every arm's sampler, monitor and evaluation asks for it)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).flatten(1) / 16
    return ImagePool("digits", images, torch.as_tensor(digits.target, dtype=torch.long))


@data_cache()  # once per process: `engram eval` evaluates every arm in one
def mnist_pool(directory: str | Path, size: int = 8) -> ImagePool:
    """MNIST's test set on the UCI digits' grid: the central 20 × 20 box, where MNIST's digits were
    scaled to fit (LeCun et al. 1998), averaged down to ``size × size``, each image's peak at 1."""
    from engramlab.tasks.mnist import load_mnist

    images, labels = load_mnist(directory)
    return on_grid("mnist", images[..., 4:24, 4:24], labels, size)


@data_cache()  # decoding 2,720 PNGs takes about 2 s: once per process, not once per arm
def omniglot_pool(path: str | Path, size: int = 8) -> ImagePool:
    """Omniglot's characters, every character a class of 20 drawings, on the UCI digits' grid:
    ink at 1, the whole 105 × 105 drawing averaged down to ``size × size``, each image's peak at 1."""
    from engramlab.tasks.omniglot import load_omniglot

    images, labels, _ = load_omniglot(path)
    return on_grid("omniglot", images, labels, size)


def on_grid(name: str, images: Tensor, labels: Tensor, size: int) -> ImagePool:
    """(N, 1, H, W) images averaged down to ``size × size`` and flattened, each image's peak at 1
    (the UCI digits' grey levels span their range in the same way)."""
    small = F.adaptive_avg_pool2d(images, size).flatten(1)
    return ImagePool(name, small / small.amax(1, keepdim=True).clamp(min=1e-6), labels)


@dataclass(frozen=True)
class Episodes:
    images: Tensor  # (E, T, pixels)
    labels: Tensor  # (E, T) output unit of each image, in [0, ways)
    seen: Tensor  # (E, T) earlier images of the same label in the episode


def episodes(pool: ImagePool, count: int, ways: int, shots: int, generator: torch.Generator) -> Episodes:
    """``count`` episodes of ``ways`` classes × ``shots`` images each, in a random order."""
    classes = pool.labels.unique()
    if ways > len(classes):
        raise ConfigError(f"{pool.name}: {ways} ways asked for, but it has {len(classes)} classes")
    members = [torch.nonzero(pool.labels == c)[:, 0] for c in classes]
    fewest = min(len(m) for m in members)
    if shots > fewest:
        raise ConfigError(f"{pool.name}: {shots} shots asked for, but a class has only {fewest} images")
    table = torch.stack([m[torch.arange(max(len(m) for m in members)) % len(m)] for m in members])  # padded
    sizes = torch.tensor([len(m) for m in members])
    picked = torch.rand(count, len(classes), generator=generator).argsort(1)[:, :ways]  # (E, ways): unit -> class
    keys = torch.rand(count, ways, table.shape[1], generator=generator)
    keys[torch.arange(table.shape[1]) >= sizes[picked][..., None]] = 2.0  # padding sorts last: never drawn
    which = keys.argsort(-1)[..., :shots]  # (E, ways, shots) distinct images of each class
    index = table[picked[..., None], which].flatten(1)  # (E, ways * shots)
    units = torch.arange(ways).repeat_interleave(shots).expand(count, -1)
    order = torch.rand(count, ways * shots, generator=generator).argsort(1)
    index, units = index.gather(1, order), units.gather(1, order)
    one_hot = F.one_hot(units, ways)
    seen = ((one_hot.cumsum(1) - one_hot) * one_hot).sum(-1)
    return Episodes(pool.images[index], units, seen)


def accuracy_after(correct: Tensor, seen: Tensor, counts: list[int]) -> dict[int, float]:
    """Mean of ``correct`` (E, T) over the images whose class had been seen exactly n times."""
    return {n: float(correct[seen == n].float().mean()) for n in counts if (seen == n).any()}
