"""The bacteria world: motion, energy and population bookkeeping, division, learning, chemotaxis."""

import math

import pytest
import torch
from conftest import sets

from engramlab.evolve.bacteria import World, WorldConfig, genome_size, states


def world(stage=1, genome=None, seed=0, **settings) -> World:
    cfg = WorldConfig(stage=stage, **{"worlds": 2, "capacity": 32, "start_cells": 16, **settings})
    genomes = None
    if genome is not None:
        genomes = torch.as_tensor(genome, dtype=torch.float32).expand(cfg.worlds, cfg.capacity, -1).clone()
    return World(cfg, torch.Generator().manual_seed(seed), genomes)


def always(tumble: bool, stage: int = 1) -> list[float]:
    """A Q-table genome that (almost surely) always tumbles, or always runs, never signals."""
    row = [0.0, 50.0] if tumble else [50.0, 0.0]
    if stage == 2:
        row += [50.0, 0.0]
    return row * states(stage)


@pytest.mark.parametrize("tumble", [True, False])
def test_a_tumble_turns_in_place_and_a_run_goes_straight(tumble):
    w = world(genome=always(tumble), conjugation=0.0)
    heading, position = w.heading.clone(), w.position.clone()
    w.step()
    alive = w.alive
    moved = w.offset(w.position, position).norm(dim=-1)[alive]
    turned = torch.remainder(w.heading - heading + math.pi, 2 * math.pi) - math.pi
    if tumble:
        assert moved.abs().max() < 1e-4
        assert (turned[alive].abs() > 0).all()
    else:
        torch.testing.assert_close(moved, torch.full_like(moved, w.cfg.speed * w.cfg.dt), atol=1e-4, rtol=0)
        assert turned[alive].abs().max() < 1e-6


def test_energy_and_population_are_accounted_for():
    w = world(stage=2, divide_at=52.0, basal_cost=0.5, food_supply=5.0)
    w.energy = torch.where(w.alive, torch.rand(w.energy.shape, generator=torch.Generator().manual_seed(1)) * 60, 0.0)
    births = deaths = 0
    for _ in range(40):
        energy, cells = w.energy.sum(1), w.alive.sum(1)
        census = w.step()
        torch.testing.assert_close(w.energy.sum(1), energy + census.gained - census.spent - census.lost)
        assert torch.equal(w.alive.sum(1), cells + census.births - census.deaths)
        assert (w.energy[~w.alive] == 0).all() and (w.energy[w.alive] > 0).all()
        births, deaths = births + census.births.sum(), deaths + census.deaths.sum()
    assert births > 0 and deaths > 0  # the test exercised both


def test_division_halves_energy_and_copies_the_genome_without_mutation():
    w = world(mutation=0.0, conjugation=0.0, start_cells=1, food_supply=1e-6)
    w.energy[:, 0] = w.cfg.divide_at + 10
    census = w.step()
    assert census.births.tolist() == [1, 1]
    assert w.alive.sum(1).tolist() == [2, 2]
    half = (w.cfg.divide_at + 10 - w.cfg.basal_cost) / 2  # the parent paid its step's cost before dividing
    torch.testing.assert_close(w.energy[w.alive], torch.full((4,), half), atol=1e-4, rtol=0)
    assert torch.equal(w.genome[w.alive].view(2, 2, -1)[:, 0], w.genome[w.alive].view(2, 2, -1)[:, 1])


def test_a_full_world_makes_dividers_wait():
    w = world(capacity=4, start_cells=4, food_supply=1e-6)
    w.energy[:] = w.cfg.divide_at + 10
    assert w.step().births.tolist() == [0, 0]
    assert (w.energy > w.cfg.divide_at).all()


def test_q_learning_update_by_hand():
    """Stage 3: Q(s, a) += lr (r + γ max Q(s', ·) − Q(s, a)), r = reward map · feelings."""
    w = world(stage=3, start_cells=1, capacity=2, worlds=1, exploration=0.0)
    w.genome[0, 0] = torch.tensor([2.0, 0.0, 0.0, -1.0])  # food +2, tumbling -1
    w.last_state[0, 0], w.last_action[0, 0], w.last_gain[0, 0] = 3, 1, 0.25
    w.q[0, 0, 3, 1] = 0.5
    state = w.stimulus(torch.zeros_like(w.alive))[0, 0]
    w.q[0, 0, state] = torch.tensor([0.2, 0.7]) if state != 3 else w.q[0, 0, state]
    best = w.q[0, 0, state].max()
    w.learn(w.stimulus(torch.zeros_like(w.alive)), w.squared_distances())
    reward = 2.0 * 0.25 - 1.0
    expected = 0.5 + w.cfg.learning_rate * (reward + w.cfg.discount * best - 0.5)
    torch.testing.assert_close(w.q[0, 0, 3, 1], torch.tensor(float(expected)))


def test_chemotaxis_gets_closer_to_food_than_a_random_walk():
    """Tumble more when the food falls off, less when it rises: the colony ends nearer the food than
    cells tumbling at E. coli's unbiased rate (runs of about 1 s)."""
    unbiased = [1.1, -1.1]  # Q(run), Q(tumble): p(tumble) = σ(-2.2) ≈ 0.1 per 0.1 s step
    chemotactic = ([0.0, 0.0] + unbiased + [2.0, -2.0]) * 2  # falling, steady, rising; in food or not
    settings = dict(mutation=0.0, conjugation=0.0, food_supply=1e-6, basal_cost=1e-6, start_cells=32)
    distances = {}
    for name, genome in (("chemotaxis", chemotactic), ("random walk", unbiased * 6)):
        w = world(genome=genome, **settings)
        total = []
        for step in range(400):
            w.step()
            if step >= 200:
                total.append(w.distance_to_food()[w.alive].mean())
        distances[name] = float(torch.stack(total).mean())
    assert distances["chemotaxis"] < 0.8 * distances["random walk"], distances


def test_genome_sizes_by_stage():
    assert [genome_size(s) for s in (1, 2, 3)] == [12, 48, 4]


# --- the experiment (engram run bacteria) ---------------------------------------------------------
TINY = [
    "world.worlds=3",
    "world.capacity=48",
    "world.start_cells=24",
    "simulation.steps=200",
    "simulation.log_every=50",
    "simulation.checkpoint_every=100",
    "simulation.eval_steps=300",
    "simulation.gif_frames=3",
    "simulation.gif_every=2",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from engramlab.cli import main

    root = tmp_path_factory.mktemp("bacteria")
    args = ["run", "bacteria", "--out", str(root), "--no-progress", "--workers", "1", "--threads", "1"]
    assert main([*args, *sets(*TINY)]) == 0
    (run_dir,) = (root / "bacteria").iterdir()
    return run_dir


@pytest.mark.slow  # shares an end-to-end run of every arm
def test_a_tiny_run_measures_every_arm(tiny_run):
    import json

    summary = json.loads((tiny_run / "summary.json").read_text())
    metrics = summary["metrics"]
    for arm in ("stage1", "random-walk", "stage2", "stage2-deaf", "stage3", "blind-walk"):
        assert metrics[f"{arm}/viable"] == 1.0
        assert 0 < metrics[f"{arm}/distance_to_food"] < metrics["uniform_distance"] * 1.5
    # the controls tumble at a fixed rate whatever they sense: E. coli's unbiased dt / 1 s, and blind_tumble
    for direction in ("falling", "rising"):  # (a steady concentration is sensed too rarely to count)
        assert metrics[f"random-walk/tumble_{direction}"] == pytest.approx(0.1, abs=0.02)
        assert metrics[f"blind-walk/tumble_{direction}"] == pytest.approx(0.6, abs=0.04)
    assert metrics["stage1/distance_vs_blind_walk"] == pytest.approx(
        metrics["stage1/distance_to_food"] / metrics["blind-walk/distance_to_food"]
    )
    assert 0 <= metrics["stage2/restarts_signalling"] <= 1 and 0 <= metrics["stage2-deaf/signalling"] <= 1
    assert metrics["stage3/viable_runs"] == 3
    assert metrics["stage1/distance_vs_random_walk"] == pytest.approx(
        metrics["stage1/distance_to_food"] / metrics["random-walk/distance_to_food"]
    )
    plots = {"distance_to_food", "tumbling", "signalling", "reward_maps"}
    assert {f"plots/{p}.png" for p in plots} | {"plots/colony.gif"} <= set(summary["plots"])
    arm = json.loads((tiny_run / "stage2" / "summary.json").read_text())["results"]
    assert arm["history"]["step"] == [50, 100, 150, 200] and len(arm["history"]["population"][0]) == 3


@pytest.mark.slow  # shares an end-to-end run of every arm
def test_eval_repeats_the_runs_measurement_from_the_checkpoints(tiny_run):
    import json

    from engramlab.cli import main

    assert main(["eval", str(tiny_run), "--threads", "1"]) == 0
    (out_dir,) = (tiny_run / "evals").iterdir()
    again = json.loads((out_dir / "summary.json").read_text())["metrics"]
    assert again == json.loads((tiny_run / "summary.json").read_text())["metrics"]


def test_a_window_closes_into_per_world_means():
    from engramlab.experiments.evolution.bacteria import Colony

    colony = Colony(world(), records=2, window_steps=4)
    # over 4 steps: 40 cell-steps at a summed distance of 400 µm, 10 signalling, 3 births, 1 death
    colony.window[0] = torch.tensor([40.0, 400.0, 10.0, 3.0, 1.0])
    row = colony.close_window(1)
    assert row[0].tolist() == [10.0, 10.0, 0.25, 3.0, 1.0]
    assert row[1, 1].isnan()  # a world with no cells has no distance
    torch.testing.assert_close(colony.history[1], row, equal_nan=True)
    assert colony.window.abs().sum() == 0 and colony.history[0].isnan().all()


def test_uniform_distance_is_the_mean_distance_to_a_uniform_cell():
    from engramlab.evolve.bacteria import uniform_distance

    grid = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000 - 0.5  # cell centres, food at the origin
    mean = (grid[:, None] ** 2 + grid[None] ** 2).sqrt().mean()
    assert uniform_distance(1.0) == pytest.approx(float(mean), rel=1e-4)


def test_the_stage_is_chosen_by_the_arm_not_by_hand(tmp_path, capsys):
    from engramlab.cli import main

    assert main(["run", "bacteria", "--out", str(tmp_path), "--set", "world.stage=3"]) == 2
    assert "world.stage is set by each arm" in capsys.readouterr().err
    assert not (tmp_path / "bacteria").exists()
