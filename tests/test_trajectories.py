"""The simulated rat (Banino et al. 2018, Supplementary Table 1) and its place and head-direction
cells."""

from __future__ import annotations

import math

import pytest
import torch

from engramlab.space.trajectories import HeadDirectionCells, PlaceCells, nearest_wall, trajectories


def walk(seed: int = 0, batch: int = 1000, steps: int = 100, **kw):
    return trajectories(batch, steps, torch.Generator().manual_seed(seed), **kw)


def test_trajectories_stay_in_the_box_and_are_reproducible():
    path = walk()
    assert path.position.shape == (1000, 101, 2) and path.heading.shape == (1000, 101)
    assert path.velocity.shape == (1000, 100, 3) and path.velocity.dtype == torch.float32
    assert path.position.abs().max() <= 1.1
    assert torch.equal(path.position, walk().position)
    assert not torch.equal(path.position, walk(seed=1).position)


def test_the_inputs_integrate_exactly_to_the_path():
    """What the network must learn: heading[t+1] = heading[t] + turn[t], then a move of speed·dt
    along the new heading."""
    path = walk(batch=200)
    speed, sin, cos = path.velocity.unbind(-1)
    turn = torch.atan2(sin, cos)
    heading = path.heading[:, :1] + torch.cumsum(turn, 1)
    assert torch.allclose(heading.cos(), path.heading[:, 1:].cos(), atol=1e-4)
    assert torch.allclose(heading.sin(), path.heading[:, 1:].sin(), atol=1e-4)
    move = speed[..., None] * 0.02 * torch.stack([path.heading[:, 1:].cos(), path.heading[:, 1:].sin()], -1)
    assert torch.allclose(path.position[:, 1:] - path.position[:, :-1], move, atol=1e-6)


def test_speed_and_rotation_follow_the_table_away_from_walls():
    path = walk(batch=2000, box=1000.0)  # no wall within reach
    speed, sin, cos = path.velocity.unbind(-1)
    assert speed.mean().item() == pytest.approx(0.13 * math.sqrt(math.pi / 2), rel=0.02)  # Rayleigh mean
    rate = torch.atan2(sin, cos) / 0.02
    assert rate.std().item() == pytest.approx(math.radians(330), rel=0.02)


def test_a_walker_at_a_wall_heading_into_it_turns_along_it_and_slows():
    distance, angle = nearest_wall(torch.tensor([[1.09, 0.0]]), torch.tensor([0.1]), 2.2)
    assert distance.item() == pytest.approx(0.01, abs=1e-6) and angle.item() == pytest.approx(0.1)
    path = walk(batch=4000)
    at_east_wall = path.position[:, :-1, 0] > 1.1 - 0.03
    running_east = path.heading[:, :-1].cos() > 0
    speed = path.velocity[..., 0]
    slowed = speed[at_east_wall & running_east]
    assert len(slowed) > 20
    assert slowed.mean().item() < 0.5 * speed.mean().item()  # the wall's x0.25
    east = (path.position[:, 1:, 0] - path.position[:, :-1, 0])[at_east_wall & running_east]
    assert east.mean().item() < 0.1 * (0.02 * slowed).mean().item()  # turned along the wall (then a little noise)


def test_gaussian_place_cells_are_distributions_peaked_at_the_nearest_centre_and_decode_back():
    cells = PlaceCells(400, 0.05, 2.2, torch.Generator().manual_seed(0))
    where = (torch.rand(300, 2, generator=torch.Generator().manual_seed(1)) - 0.5) * 2.0
    activity = cells(where)
    assert activity.shape == (300, 400) and torch.allclose(activity.sum(-1), torch.ones(300))
    nearest = (where[:, None] - cells.centres).norm(dim=-1).argmin(-1)
    assert torch.equal(activity.argmax(-1), nearest)
    assert (cells.decode(activity) - where).norm(dim=-1).mean().item() < 0.08


def test_difference_of_softmax_cells_are_non_negative_distributions_with_a_surround():
    dos = PlaceCells(256, 0.12, 2.2, torch.Generator().manual_seed(0), kind="dos")
    plain = PlaceCells(256, 0.12, 2.2, torch.Generator().manual_seed(0))
    where = torch.zeros(1, 2)
    activity, centre_only = dos(where)[0], plain(where)[0]
    assert (activity >= 0).all() and activity.sum().item() == pytest.approx(1.0, abs=1e-5)
    distance = dos.centres.norm(dim=-1)
    ring = (distance > 0.2) & (distance < 0.3)  # the surround: below the centre-only field there
    assert (activity[ring] < centre_only[ring]).all()
    assert activity.argmax() == distance.argmin()


def test_head_direction_cells_peak_at_the_nearest_preferred_direction():
    cells = HeadDirectionCells(12, 20.0, torch.Generator().manual_seed(0))
    heading = torch.linspace(-math.pi, math.pi - 0.01, 50)
    activity = cells(heading)
    assert torch.allclose(activity.sum(-1), torch.ones(50))
    gap = torch.remainder(heading[:, None] - cells.centres + math.pi, 2 * math.pi) - math.pi
    assert torch.equal(activity.argmax(-1), gap.abs().argmin(-1))


def test_an_unknown_place_cell_kind_is_one_line():
    with pytest.raises(ValueError, match="allowed: gaussian, dos") as info:
        PlaceCells(4, 0.1, 2.2, torch.Generator(), kind="dog")
    assert "\n" not in str(info.value)
