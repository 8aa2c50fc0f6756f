"""A simulated rat running in a square box, and the place and head-direction cells that code where
it is and where it heads (Banino et al. 2018, Nature 557:429, Methods and Supplementary Table 1;
the original data set is no longer online, so trajectories are generated here).

Every function draws from a ``torch.Generator`` and works on a whole batch at once; only the time
steps are a Python loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

PLACE_KINDS = ("gaussian", "dos")


@dataclass
class Trajectories:
    """``position`` (B, T + 1, 2) in metres, the box centred on 0, index 0 the start; ``heading``
    (B, T + 1) in [-π, π), the direction of the last move; ``velocity`` (B, T, 3) the network's
    ego-motion input at each step: the speed (m/s) and the sine and cosine of the heading's change
    over the step (Banino's three inputs, see :func:`trajectories`)."""

    position: Tensor
    heading: Tensor
    velocity: Tensor


def wrap(angle: Tensor) -> Tensor:
    """Angles to [-π, π)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def nearest_wall(position: Tensor, heading: Tensor, box: float) -> tuple[Tensor, Tensor]:
    """(B, 2), (B,) -> the distance to the nearest wall and the heading relative to that wall's
    outward normal (0: running straight at it)."""
    half = box / 2
    gaps = torch.stack([half - position[:, 0], half + position[:, 0], half - position[:, 1], half + position[:, 1]], 1)
    normals = torch.tensor([0.0, math.pi, math.pi / 2, -math.pi / 2])  # east, west, north, south walls
    distance, wall = gaps.min(1)
    return distance, wrap(heading - normals[wall])


def trajectories(
    batch: int, steps: int, generator: torch.Generator, *, box: float = 2.2, dt: float = 0.02,
    speed_scale: float = 0.13, rotation_std: float = math.radians(330), border: float = 0.03,
    wall_slowdown: float = 0.25,
) -> Trajectories:  # fmt: skip
    """The motion model of Supplementary Table 1: the start uniform in the box, the heading uniform;
    each step a forward speed ~ Rayleigh(``speed_scale``) and a rotation velocity ~ N(0,
    ``rotation_std``); within ``border`` of a wall and heading towards it (less than 90° from its
    normal), the walker also turns to run along it (by ``sign·(π/2 − |angle|)``) and slows to
    ``wall_slowdown`` of its speed. The heading turns first, then the walker moves ``speed·dt``
    along the new heading, so the inputs integrate exactly to the path:
    ``heading[t+1] = heading[t] + turn[t]`` and ``position[t+1] = position[t] + speed[t]·dt·(cos,
    sin)(heading[t+1])``, where step t's input is ``speed[t]`` and the sine and cosine of
    ``turn[t]``, the heading's change over the step (as the 2026 replication read the released
    data's angular-velocity channels; the sine and cosine of a rate in rad/s would alias)."""
    half = box / 2
    uniform = lambda *shape: torch.rand(*shape, generator=generator)
    position = [(uniform(batch, 2) * 2 - 1) * half]
    heading = [(uniform(batch) * 2 - 1) * math.pi]
    # Rayleigh by inversion: scale * sqrt(-2 ln U), U in (0, 1]
    speeds = speed_scale * torch.sqrt(-2 * torch.log1p(-uniform(batch, steps)))
    rotations = rotation_std * dt * torch.randn(batch, steps, generator=generator)
    moved, turned = [], []
    for t in range(steps):
        distance, angle = nearest_wall(position[-1], heading[-1], box)
        near = (distance < border) & (angle.abs() < math.pi / 2)
        away = torch.where(near, torch.sign(angle) * (math.pi / 2 - angle.abs()), torch.zeros(batch))
        speed = torch.where(near, speeds[:, t] * wall_slowdown, speeds[:, t])
        turn = away + rotations[:, t]
        direction = wrap(heading[-1] + turn)
        step = speed[:, None] * dt * torch.stack([direction.cos(), direction.sin()], 1)
        # the wall rule turns the walker along its nearest wall; in a corner that can lead into the
        # other wall, which stops it there. The inputs then describe the move actually made, so
        # that they still integrate exactly to the path.
        new = (position[-1] + step).clamp(-half, half)
        stopped = (new != position[-1] + step).any(1)
        actual = new - position[-1]
        speed = torch.where(stopped, actual.norm(dim=1) / dt, speed)
        direction = torch.where(stopped & (speed > 0), torch.atan2(actual[:, 1], actual[:, 0]), direction)
        position.append(new)
        heading.append(direction)
        moved.append(speed)
        turned.append(wrap(direction - heading[-2]))
    turns = torch.stack(turned, 1)
    velocity = torch.stack([torch.stack(moved, 1), turns.sin(), turns.cos()], -1)
    return Trajectories(torch.stack(position, 1), torch.stack(heading, 1), velocity)


class PlaceCells:
    """``n`` place cells with centres uniform in the box; ``cells(position)`` (..., 2) -> (..., n)
    a distribution over cells (the network's target and its initial state's input).

    - ``gaussian`` (Banino et al. 2018, Methods): softmax over cells of −|x − c|² / (2σ²);
    - ``dos``, difference of softmaxes (Sorscher et al. 2019/2023): that minus the same with the
      variance ``surround`` times larger, shifted by its minimum over cells to be non-negative and
      renormalised, a centre-surround field that favours hexagons."""

    def __init__(self, n: int, sigma: float, box: float, generator: torch.Generator, *, kind: str = "gaussian",
                 surround: float = 2.0):  # fmt: skip
        if kind not in PLACE_KINDS:
            raise ValueError(f"place-cell kind {kind!r}; allowed: {', '.join(PLACE_KINDS)}")
        self.centres = (torch.rand(n, 2, generator=generator) * 2 - 1) * box / 2
        self.sigma, self.kind, self.surround = sigma, kind, surround

    def __call__(self, position: Tensor) -> Tensor:
        squared = (position[..., None, :] - self.centres).pow(2).sum(-1)
        centre = torch.softmax(-squared / (2 * self.sigma**2), -1)
        if self.kind == "gaussian":
            return centre
        field = centre - torch.softmax(-squared / (2 * self.surround * self.sigma**2), -1)
        field = field - field.min(-1, keepdim=True).values
        return field / field.sum(-1, keepdim=True)

    def decode(self, activity: Tensor, k: int = 3) -> Tensor:
        """(..., n) -> (..., 2): the mean centre of the ``k`` most active cells (Banino's decoder)."""
        return self.centres[activity.topk(k, -1).indices].mean(-2)


class HeadDirectionCells:
    """``n`` head-direction cells with preferred directions uniform in [-π, π); ``cells(heading)``
    (...) -> (..., n): a softmax of ``concentration·cos(h − c)`` (von Mises tuning, Banino et al.
    2018, Methods: κ = 20)."""

    def __init__(self, n: int, concentration: float, generator: torch.Generator):
        self.centres = (torch.rand(n, generator=generator) * 2 - 1) * math.pi
        self.concentration = concentration

    def __call__(self, heading: Tensor) -> Tensor:
        return torch.softmax(self.concentration * torch.cos(heading[..., None] - self.centres), -1)
