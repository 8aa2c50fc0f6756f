"""Evolution strategies behind one ask/tell interface, maximising a fitness.

- :class:`CMAES`: pycma's CMA-ES (Hansen 2016, "The CMA Evolution Strategy: A Tutorial");
  ``diagonal=True`` is sep-CMA-ES (Ros & Hansen 2008, pycma's ``CMA_diagonal``), linear in the
  genome's size, for genomes of thousands of parameters.
- :class:`AntitheticES`: the natural-evolution-strategy gradient with mirrored samples and
  centred-rank fitness shaping, followed by Adam (Salimans et al. 2017, §2; the meta-optimiser of
  VSML, Kirsch & Schmidhuber 2021, §3: σ 0.05, Adam lr 0.025).

A strategy hands out a population as one ``(population, dim)`` tensor, so an experiment scores
all of it in one batched call, and its whole state (including its random numbers) is a dict of
tensors, so a checkpointed evolution resumes exactly where it stopped.
"""

from __future__ import annotations

import pickle

import numpy as np
import torch
from torch import Tensor


class Strategy:
    """``ask() -> (population, dim)``, ``tell(fitness (population,))`` (higher is better)."""

    population: int

    def ask(self) -> Tensor:
        raise NotImplementedError

    def tell(self, fitness: Tensor) -> None:
        raise NotImplementedError

    @property
    def mean(self) -> Tensor:
        """The distribution's centre: the genome the strategy currently believes in."""
        raise NotImplementedError

    @property
    def sigma(self) -> float:
        """The overall step size (for the logs)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        raise NotImplementedError


class CMAES(Strategy):
    """pycma's ``CMAEvolutionStrategy`` (which minimises: we pass it −fitness).

    pycma draws its samples through its ``randn`` option; we give it a generator of its own
    (a NumPy ``RandomState`` seeded by ``seed``), so the pickled strategy carries its random
    state with it. With NumPy's global generator (pycma's default) a strategy restored from a
    checkpoint drew different samples from the second generation on, at genomes of 500
    numbers and more, and a resumed evolution did not end as an uninterrupted one.
    """

    def __init__(self, x0: Tensor, sigma: float, population: int, *, diagonal: bool = False, seed: int = 0):
        import cma

        self.population = population
        randn = np.random.RandomState(seed + 1).randn  # travels inside the pickled strategy
        options = {"popsize": population, "randn": randn, "verbose": -9, "CMA_diagonal": diagonal}
        options.update({"tolfun": 0, "tolx": 0, "tolfunhist": 0, "tolstagnation": 10**9})  # we decide when to stop
        self.es = cma.CMAEvolutionStrategy(x0.double().numpy(), sigma, options)
        self._asked: list[np.ndarray] | None = None

    def ask(self) -> Tensor:
        self._asked = self.es.ask()
        return torch.as_tensor(np.stack(self._asked), dtype=torch.float32)

    def tell(self, fitness: Tensor) -> None:
        if self._asked is None:
            raise RuntimeError("tell() before ask()")
        self.es.tell(self._asked, (-fitness.double()).tolist())
        self._asked = None

    @property
    def mean(self) -> Tensor:
        return torch.as_tensor(self.es.mean, dtype=torch.float32)

    @property
    def sigma(self) -> float:
        return float(self.es.sigma)

    def state_dict(self) -> dict[str, Tensor]:
        return {"cma": torch.frombuffer(bytearray(self.es.pickle_dumps()), dtype=torch.uint8)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.es = pickle.loads(state["cma"].numpy().tobytes())  # pycma's documented way back from pickle_dumps()
        self._asked = None


def centred_ranks(fitness: Tensor) -> Tensor:
    """Fitness shaping of Salimans et al. 2017 (§2.1): ranks scaled to [−0.5, 0.5], ties broken by
    order, so the update ignores the fitness's scale and outliers."""
    ranks = torch.empty_like(fitness, dtype=torch.float64)
    ranks[fitness.argsort()] = torch.arange(len(fitness), dtype=torch.float64)
    return ranks / max(1, len(fitness) - 1) - 0.5


class AntitheticES(Strategy):
    """Mirrored-sampling ES with Adam: θ ± σ·ε for ``population / 2`` noise vectors ε ~ N(0, I);
    gradient estimate g = Σ F̃(θ + σε) ε / (n σ) from centred ranks F̃; θ ← Adam ascent on g."""

    def __init__(
        self,
        x0: Tensor,
        sigma: float = 0.05,
        population: int = 64,
        *,
        lr: float = 0.025,
        betas: tuple[float, float] = (0.9, 0.999),
        seed: int = 0,
    ):
        if population % 2:
            raise ValueError(f"population ({population}) must be even: samples come in mirrored pairs")
        self.population, self._sigma, self.lr, self.betas = population, sigma, lr, betas
        self.theta = x0.detach().double().clone()
        self.m, self.v = torch.zeros_like(self.theta), torch.zeros_like(self.theta)
        self.t = 0
        self.generator = torch.Generator().manual_seed(seed)
        self._noise: Tensor | None = None

    def ask(self) -> Tensor:
        half = torch.randn(self.population // 2, len(self.theta), generator=self.generator, dtype=torch.float64)
        self._noise = torch.cat([half, -half])
        return (self.theta + self._sigma * self._noise).float()

    def tell(self, fitness: Tensor) -> None:
        if self._noise is None:
            raise RuntimeError("tell() before ask()")
        gradient = centred_ranks(fitness.double()) @ self._noise / (self.population * self._sigma)
        self.t += 1
        b1, b2 = self.betas
        self.m = b1 * self.m + (1 - b1) * gradient
        self.v = b2 * self.v + (1 - b2) * gradient**2
        step = self.lr * (self.m / (1 - b1**self.t)) / ((self.v / (1 - b2**self.t)).sqrt() + 1e-8)
        self.theta = self.theta + step  # ascent: fitness is maximised
        self._noise = None

    @property
    def mean(self) -> Tensor:
        return self.theta.float()

    @property
    def sigma(self) -> float:
        return self._sigma

    def state_dict(self) -> dict[str, Tensor]:
        return {
            "theta": self.theta,
            "m": self.m,
            "v": self.v,
            "t": torch.tensor(self.t),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.theta, self.m, self.v = state["theta"].clone(), state["m"].clone(), state["v"].clone()
        self.t = int(state["t"])
        self.generator.set_state(state["generator"])
        self._noise = None
