"""The evolution-strategy layer: it optimises known functions, resumes exactly, ranks as stated."""

import json

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from engramlab.engine.checkpoint import CHECKPOINT_NAME
from engramlab.errors import NonFiniteLossError
from engramlab.evolve.loop import EvolveConfig, evolve
from engramlab.evolve.strategies import CMAES, AntitheticES, centred_ranks


class Genome(nn.Module):
    def __init__(self, start):
        super().__init__()
        self.x = nn.Parameter(torch.as_tensor(start, dtype=torch.float32))


def sphere(population, generator):
    return -(population.double() ** 2).sum(-1)


def rosenbrock(population, generator):
    x = population.double()
    return -(100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).sum(-1)


def noisy_sphere(population, generator):
    """Uses the data generator, so resuming must restore it too."""
    return sphere(population, generator) + 1e-3 * torch.randn(len(population), generator=generator, dtype=torch.float64)


def run(tmp_path, fitness, start, resume=False, **settings):
    model = Genome(start)
    evolve(model, fitness, EvolveConfig(**settings), tmp_path, seed=3, resume=resume)
    return model.x.detach().double()


@pytest.mark.parametrize("strategy", ["cma", "sep-cma"])
def test_cma_solves_the_sphere(tmp_path, strategy):
    x = run(tmp_path, sphere, [1.0] * 6, strategy=strategy, generations=160, population=8, sigma=0.5)
    assert (x**2).sum() < 1e-10


def test_cma_solves_rosenbrock(tmp_path):
    x = run(tmp_path, rosenbrock, [0.0] * 4, strategy="cma", generations=300, population=8, sigma=0.5)
    assert torch.allclose(x, torch.ones(4, dtype=torch.float64), atol=1e-4)


def test_antithetic_es_approaches_the_sphere_minimum(tmp_path):
    """Fixed σ and Adam: it gets to the optimum's neighbourhood (of the order of σ), not onto it."""
    x = run(tmp_path, sphere, [1.0] * 10, strategy="antithetic", generations=300, population=20, sigma=0.02, lr=0.02)
    assert (x**2).sum() < 1e-2  # from 10.0 at the start


@pytest.mark.parametrize("strategy", ["sep-cma", "antithetic"])
def test_resume_continues_to_the_same_result(tmp_path, strategy):
    settings = dict(strategy=strategy, population=8, sigma=0.3, checkpoint_every=5)
    start = [1.0] * 600  # pycma takes other code paths past a few hundred numbers: resume must hold there too
    whole = run(tmp_path / "whole", noisy_sphere, start, generations=30, **settings)
    run(tmp_path / "cut", noisy_sphere, start, generations=15, **settings)  # "killed" after generation 15
    resumed = run(tmp_path / "cut", noisy_sphere, start, resume=True, generations=30, **settings)
    assert torch.equal(whole, resumed)
    assert logged(tmp_path / "cut") == logged(tmp_path / "whole")


def logged(directory):
    """The metrics.jsonl lines without their timings."""
    lines = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 30
    return [{k: v for k, v in line.items() if not k.startswith("time/")} for line in lines]


def test_a_blown_up_genome_ranks_last_and_all_blown_up_stops(tmp_path):
    def some_nan(population, generator):
        f = sphere(population, generator)
        f[0] = float("nan")
        return f

    x = run(tmp_path / "some", some_nan, [1.0] * 4, strategy="sep-cma", generations=100, population=8, sigma=0.5)
    assert (x**2).sum() < 1e-3
    with pytest.raises(NonFiniteLossError, match="generation 1; training stopped"):
        run(tmp_path / "all", lambda p, g: torch.full((len(p),), float("inf")), [1.0], generations=3, population=4)
    assert not (tmp_path / "all" / CHECKPOINT_NAME).exists()


def test_centred_ranks_by_hand():
    ranks = centred_ranks(torch.tensor([3.0, -1.0, 10.0, 0.0, 5.0]))
    assert ranks.tolist() == [0.0, -0.5, 0.5, -0.25, 0.25]


def test_antithetic_samples_come_in_mirrored_pairs():
    es = AntitheticES(torch.zeros(3), sigma=0.1, population=6, seed=0)
    population = es.ask()
    assert torch.allclose(population[:3], -population[3:])


def test_tell_before_ask_and_bad_population_are_errors():
    with pytest.raises(RuntimeError, match="tell\\(\\) before ask\\(\\)"):
        CMAES(torch.zeros(2), 0.1, 4).tell(torch.zeros(4))
    with pytest.raises(ValidationError, match="must be even"):
        EvolveConfig(strategy="antithetic", population=7)
