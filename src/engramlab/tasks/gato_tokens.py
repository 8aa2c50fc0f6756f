"""Gato's tokenisation: every modality as ids of one integer space (Reed et al. 2022, §2.1, App. B, C).

Id ranges, one per modality (``TEXT``, ``DISCRETE``, ``CONTINUOUS``, then the special ids):

=============  ==================  ===========================================================
text           [0, 256)            UTF-8 bytes
discrete       [256, 1280)         integers 0 … 1023
continuous     [1280, 2304)        1024 uniform bins of [−1, 1], after μ-law for observations
specials       2304, 2305, 2306    ``SEPARATOR`` (observation | action), ``END`` (after a
                                   text that a model writes), ``PATCH`` (an image patch's place;
                                   its pixels travel beside the ids and are embedded by the model)
=============  ==================  ===========================================================

Deviations, all documented in ``docs/generalist.md``: text is UTF-8 bytes, not a 32k SentencePiece
vocabulary (our texts, BabyAI missions and digit captions, are short; bytes decode exactly and need
no trained model); discrete values get their own range (Gato overlaps them with the text ids);
continuous *actions* are scaled linearly from the environment's bounds to [−1, 1] and binned
without μ-law (Gato's actions already lie in [−1, 1]), so decoding an action is exact to the bin.

A timestep is **observation tokens, separator, action tokens** (§2.1). Local positions (§2.2,
"position of a token within its timestep"): observation token ``i`` gets ``i + 1``, the separator
``n_obs + 1``, and every action token the same position, ``ACTION_POSITION = 0``. A text is one
timestep of its own, token ``i`` at ``i + 1``. Only text and action tokens are targets of the
loss (§2.3).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

BINS = 1024
TEXT, DISCRETE, CONTINUOUS = 0, 256, 256 + BINS
SEPARATOR = CONTINUOUS + BINS
END = SEPARATOR + 1
PATCH = SEPARATOR + 2
VOCAB_SIZE = PATCH + 1
ACTION_POSITION = 0

MU, M = 100.0, 256.0  # μ-law parameters (§2.1)


def mu_law(x: Tensor, mu: float = MU, m: float = M) -> Tensor:
    """``F(x) = sgn(x) log(|x| μ + 1) / log(M μ + 1)``: [−M, M] onto [−1, 1], fine near 0 (§2.1)."""
    return torch.sign(x) * torch.log1p(x.abs() * mu) / torch.log1p(torch.tensor(m * mu, dtype=x.dtype))


def inverse_mu_law(y: Tensor, mu: float = MU, m: float = M) -> Tensor:
    """The inverse of :func:`mu_law` on [−1, 1]."""
    return torch.sign(y) * torch.expm1(y.abs() * torch.log1p(torch.tensor(m * mu, dtype=y.dtype))) / mu


def to_bin(y: Tensor) -> Tensor:
    """Values in [−1, 1] (clipped) -> bin indices ``floor((y + 1) / 2 · 1024)`` in [0, 1023]."""
    return ((y.clamp(-1, 1) + 1) / 2 * BINS).floor().long().clamp(0, BINS - 1)


def bin_centre(b: Tensor) -> Tensor:
    """Bin indices -> the centre of their interval of [−1, 1]."""
    return (b.float() + 0.5) / BINS * 2 - 1


def continuous_ids(x: Tensor, low: Tensor | None = None, high: Tensor | None = None) -> Tensor:
    """Floats -> continuous ids. Without bounds: μ-law then bins (observations). With the
    environment's bounds ``low``/``high`` (actions): scaled linearly to [−1, 1], then bins."""
    y = mu_law(x.float()) if low is None else 2 * (x.float() - low) / (high - low) - 1
    return CONTINUOUS + to_bin(y)


def continuous_values(ids: Tensor, low: Tensor | None = None, high: Tensor | None = None) -> Tensor:
    """Continuous ids -> the centre of their bin, mapped back as :func:`continuous_ids` mapped it."""
    _check_range(ids, CONTINUOUS, CONTINUOUS + BINS, "continuous")
    y = bin_centre(ids - CONTINUOUS)
    return inverse_mu_law(y) if low is None else low + (y + 1) / 2 * (high - low)


def discrete_ids(x: Tensor) -> Tensor:
    """Integers in [0, 1024) -> discrete ids."""
    _check_range(x, 0, BINS, "discrete value")
    return DISCRETE + x.long()


def discrete_values(ids: Tensor) -> Tensor:
    _check_range(ids, DISCRETE, DISCRETE + BINS, "discrete")
    return ids - DISCRETE


def text_ids(text: str) -> Tensor:
    """A string -> its UTF-8 bytes as ids."""
    return TEXT + torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def text_of(ids: Tensor) -> str:
    """Ids -> the string of their UTF-8 bytes, up to the first ``END``; ids outside the text range
    are dropped and invalid UTF-8 is replaced, so any sampled sequence decodes."""
    ids = ids.tolist()
    if END in ids:
        ids = ids[: ids.index(END)]
    return bytes(i - TEXT for i in ids if TEXT <= i < TEXT + 256).decode("utf-8", errors="replace")


def _check_range(x: Tensor, low: int, high: int, what: str) -> None:
    if x.numel() and (x.min() < low or x.max() >= high):
        raise ValueError(f"{what} ids must lie in [{low}, {high}); got [{int(x.min())}, {int(x.max())}]")


class Tokens(NamedTuple):
    """A flat token sequence: ids (T,), local positions (T,), loss mask (T,) for the *prediction of*
    each token (text and actions only)."""

    ids: Tensor
    local: Tensor
    target: Tensor

    @staticmethod
    def cat(parts: list[Tokens]) -> Tokens:
        return Tokens(*(torch.cat(column) for column in zip(*parts)))


def timesteps(observations: Tensor, actions: Tensor) -> Tokens:
    """Observation ids (S, n_obs) and action ids (S, n_act) of S timesteps -> one flat sequence of
    ``S (n_obs + 1 + n_act)`` tokens: each timestep's observation, ``SEPARATOR``, its action."""
    steps, n_obs = observations.shape
    n_act = actions.shape[1]
    separator = torch.full((steps, 1), SEPARATOR, dtype=torch.long)
    ids = torch.cat([observations.long(), separator, actions.long()], dim=1)
    local = torch.cat([torch.arange(1, n_obs + 2), torch.full((n_act,), ACTION_POSITION)])
    target = torch.cat([torch.zeros(n_obs + 1, dtype=torch.bool), torch.ones(n_act, dtype=torch.bool)])
    return Tokens(ids.flatten(), local.repeat(steps), target.repeat(steps))


def text(ids: Tensor, end: bool = True, target: bool = True) -> Tokens:
    """Text ids (T,) as one timestep, with ``END`` appended (``end``): a target (a caption, a
    mission to learn to write) or only context (``target=False``, e.g. a BabyAI mission)."""
    if end:
        ids = torch.cat([ids.long(), torch.tensor([END])])
    return Tokens(ids, torch.arange(1, len(ids) + 1), torch.full((len(ids),), target, dtype=torch.bool))


def image_patches(images: Tensor, patch: int) -> Tensor:
    """Images (N, C, H, W) with pixels in [0, 1] -> patches (N, n, C, patch, patch) in raster order,
    pixels scaled to [−1, 1] and divided by 4 (App. C.3). H and W must be multiples of ``patch``."""
    n, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    scaled = (images.float() * 2 - 1) / 4
    grid = scaled.unfold(2, patch, patch).unfold(3, patch, patch)  # (N, C, H/p, W/p, p, p)
    return grid.permute(0, 2, 3, 1, 4, 5).reshape(n, (h // patch) * (w // patch), c, patch, patch)


def patch_intervals(height: int, width: int, patch: int, levels: int = 128) -> Tensor:
    """(n, 2, 2): each patch's row and column interval ``[from, to)`` of the image, normalised
    and quantised to ``levels`` values (App. C.3); a model embeds a position inside it."""
    rows, cols = height // patch, width // patch
    edges = lambda count: (torch.arange(count + 1) * levels) // count  # noqa: E731
    r, c = edges(rows), edges(cols)
    row = torch.stack([r[:-1], r[1:]], dim=-1).repeat_interleave(cols, dim=0)
    col = torch.stack([c[:-1], c[1:]], dim=-1).repeat(rows, 1)
    return torch.stack([row, col], dim=1)
