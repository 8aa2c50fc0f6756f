"""Grid cells: a network trained only to integrate its own velocity into a position develops units
with hexagonal firing maps, like the grid cells of the entorhinal cortex.

Papers: Banino et al. 2018, "Vector-based navigation using grid-like representations in artificial
agents" (Nature 557:429; supervised path integration, Fig. 1; Methods; Supplementary Table 1:
trajectories, ensembles, LSTM 128, linear 512 with dropout 0.5, RMSProp lr 1e-5 momentum 0.9,
gradients clipped element-wise at 1e-5, L2 1e-5, batch 10, 3·10⁵ updates; 25.2 % of the 512 units
above a gridness of 0.37, path-integration error 16 cm against 91 cm untrained); Sorscher et al.
2019/2023 (a non-negative ReLU RNN with difference-of-softmax place cells, the recipe known to
favour hexagons); Schaeffer, Khona & Fiete 2022 (fewer than 10 % of > 11,000 trained networks had
possible grid units). Facts and numbers: ``../shared/reference/next-systems.md`` §3.

Arms, one per recipe and seed (one per core), and an untrained network per recipe:

- ``a-seed<s>``: Banino's recipe (:class:`~engramlab.models.grid_cells.PathIntegratorLSTM`),
  Gaussian place cells and head-direction cells, TensorFlow 1's RMSProp with the value clip;
- ``b-seed<s>``: Sorscher's recipe (:class:`~engramlab.models.grid_cells.PathIntegratorRNN`),
  difference-of-softmax place cells, Adam;
- ``<recipe>-untrained``: the recipe's network at initialisation, evaluated the same way (the
  control of the path-integration error and of the gridness).

Evaluation (never trained on; ``eval.samples`` positions of fresh trajectories): the decoded
position error (top-3 place cells' centres, cm), each unit's rate map over the box, its spatial
autocorrelogram and gridness at 60° and 90° (DeepMind's ``scores.py`` algorithm,
:mod:`engramlab.space.scores`), a per-unit null of circularly shifted activity, and the grid scale.

Deviations from the papers are listed in ``deviations`` (and in the report and docs/grid-cells.md).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engramlab.config import Config
from engramlab.engine.checkpoint import CHECKPOINT_NAME, Checkpoint, save_checkpoint
from engramlab.engine.experiment import Experiment, PaperNumber
from engramlab.engine.loop import TrainResult
from engramlab.engine.train import TrainConfig, train
from engramlab.errors import ConfigError
from engramlab.experiments.space import plots
from engramlab.models.grid_cells import PathIntegratorLSTM, PathIntegratorRNN
from engramlab.space import scores
from engramlab.space.trajectories import HeadDirectionCells, PlaceCells, Trajectories, trajectories

RECIPES = ["a", "b"]
EVAL_SEED = 2_000_000
CELLS_SEED = 8341  # the place and head-direction cells' centres: one layout per recipe, every seed


class EnvConfig(Config):
    """The motion model (Banino et al. 2018, Supplementary Table 1)."""

    box: float = Field(2.2, gt=0, description="side of the square box (m)")
    dt: float = Field(0.02, gt=0, description="time step (s)")
    steps: int = Field(100, ge=2, description="steps per training sequence")
    speed_scale: float = Field(0.13, gt=0, description="Rayleigh scale of the forward speed (m/s)")
    rotation_std_deg: float = Field(330.0, gt=0, description="std of the rotation velocity (degrees/s)")
    border: float = Field(0.03, ge=0, description="distance from a wall at which the walker turns and slows (m)")
    wall_slowdown: float = Field(0.25, gt=0, le=1, description="speed factor near a wall")


class CellsConfig(Config):
    place: int = Field(256, ge=4, description="place cells (targets and initial state)")
    place_sigma: float = Field(0.01, gt=0, description="place-field width sigma (m)")
    place_kind: Literal["gaussian", "dos"] = Field(
        "gaussian", description="gaussian (Banino) or dos: difference of softmaxes (Sorscher et al.)"
    )
    surround: float = Field(2.0, gt=1, description="dos: the surround's variance / the centre's")
    hd: int = Field(12, ge=0, description="head-direction cells (0: none, as Sorscher's recipe)")
    hd_concentration: float = Field(20.0, gt=0, description="von Mises concentration of the head-direction cells")


class NetConfig(Config):
    kind: Literal["lstm", "rnn"] = Field("lstm", description="lstm (Banino) or rnn (Sorscher)")
    lstm: int = Field(128, ge=1, description="LSTM units (lstm)")
    bottleneck: int = Field(512, ge=1, description="linear units without bias, the scored units (lstm)")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout on the bottleneck (lstm)")
    units: int = Field(512, ge=1, description="recurrent units, the scored units (rnn)")
    nonnegative: bool = Field(True, description="ReLU (non-negative) or tanh units (rnn)")
    weight_decay: float = Field(
        1e-5, ge=0, description="L2 penalty (lstm: 1e-5·sum(w²)/2 on bottleneck and read-outs; rnn: on W_hh)"
    )


# The published optimisers: Banino et al. 2018, Supplementary Table 1 (TensorFlow 1 RMSProp, lr 1e-5,
# momentum 0.9, every gradient element clipped to 1e-5); Sorscher et al.'s code (Adam 1e-4, and weight
# decay 1e-4 on the recurrent weights, in NetConfig). The `paper` preset uses them; `quick` cannot
# (see GridCellsExperiment.presets).
BANINO_OPTIMIZER = {"optimizer": "rmsprop-tf1", "lr": 1e-5, "momentum": 0.9, "grad_value_clip": 1e-5}
SORSCHER_OPTIMIZER = {"optimizer": "adam", "lr": 1e-4}
SORSCHER_WEIGHT_DECAY = 1e-4


class RecipeConfig(Config):
    env: EnvConfig = EnvConfig()
    cells: CellsConfig = CellsConfig()
    net: NetConfig = NetConfig()
    # quick: Adam 1e-3 without the value clip (measured: the published optimiser has not left chance
    # after 33k updates; this one path-integrated to 10-12 cm in 8k on two seeds of three, the third
    # still at 58 cm, hence 20k); `paper`: BANINO_OPTIMIZER
    train: TrainConfig = TrainConfig(
        steps=20_000, batch_size=10, optimizer="adam", lr=1e-3, grad_clip=0.0, log_every=250, eval_every=2000,
        checkpoint_every=1000,
    )  # fmt: skip

    @property
    def optimiser_as_published(self) -> bool:
        """Whether the run trains this recipe with its paper's optimiser (and weight decay)."""
        published = BANINO_OPTIMIZER if self.net.kind == "lstm" else SORSCHER_OPTIMIZER
        same = all(getattr(self.train, key) == value for key, value in published.items())
        return same and (self.net.kind == "lstm" or self.net.weight_decay == SORSCHER_WEIGHT_DECAY)


SORSCHER = RecipeConfig(
    env=EnvConfig(steps=20, speed_scale=0.13 * 2 * math.pi, rotation_std_deg=660.0),
    cells=CellsConfig(place=512, place_sigma=0.12, place_kind="dos", hd=0),
    # quick: lr 1e-3 and no weight decay (measured: at initialisation the decay's gradient on W_hh is
    # ~660x the loss's (scripts/grid_gradient_scales.py), so Adam shrinks W_hh before the loss
    # moves; `paper`: Sorscher's 1e-4 and 1e-4)
    net=NetConfig(kind="rnn", units=512, weight_decay=0.0),
    train=TrainConfig(
        steps=4000,
        batch_size=200,
        optimizer="adam",
        lr=1e-3,
        grad_clip=0.0,
        log_every=100,
        eval_every=1000,
        checkpoint_every=500,
    ),  # fmt: skip
)


class EvalConfig(Config):
    samples: int = Field(200_000, ge=1000, description="positions of fresh trajectories for rate maps and errors")
    bins: int = Field(20, ge=4, description="rate-map bins per side (DeepMind's scores: 20)")
    shuffles: int = Field(100, ge=0, description="circular shifts per unit for the gridness null (0: none)")
    null_samples: int = Field(50_000, ge=1000, description="positions used for the null (the first ones)")


class GridCellsConfig(Config):
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="training seeds of each recipe")
    recipes: list[str] = Field(RECIPES, min_length=1, description="a: Banino's LSTM; b: Sorscher's RNN")
    untrained: bool = Field(True, description="also evaluate each recipe's network at initialisation")
    a: RecipeConfig = RecipeConfig()
    b: RecipeConfig = SORSCHER
    eval: EvalConfig = EvalConfig()

    def recipe(self, name: str) -> RecipeConfig:
        return getattr(self, name)


def parse_arm(arm: str) -> tuple[str, int | None]:
    """``a-seed0`` -> (a, 0); ``a-untrained`` -> (a, None)."""
    recipe, rest = arm.split("-", 1)
    return recipe, None if rest == "untrained" else int(rest.removeprefix("seed"))


# --------------------------------------------------------------------------------------------
# data


def ensembles(r: RecipeConfig) -> tuple[PlaceCells, HeadDirectionCells | None]:
    """The recipe's cells, one fixed layout (Banino: one ensemble for every run)."""
    generator = torch.Generator().manual_seed(CELLS_SEED)
    place = PlaceCells(r.cells.place, r.cells.place_sigma, r.env.box, generator, kind=r.cells.place_kind,
                       surround=r.cells.surround)  # fmt: skip
    hd = HeadDirectionCells(r.cells.hd, r.cells.hd_concentration, generator) if r.cells.hd else None
    return place, hd


def walk(r: RecipeConfig, batch: int, generator: torch.Generator, steps: int | None = None) -> Trajectories:
    e = r.env
    return trajectories(batch, steps or e.steps, generator, box=e.box, dt=e.dt, speed_scale=e.speed_scale,
                        rotation_std=math.radians(e.rotation_std_deg), border=e.border,
                        wall_slowdown=e.wall_slowdown)  # fmt: skip


def network_input(r: RecipeConfig, path: Trajectories) -> Tensor:
    """Banino: ego-motion (speed, sin and cos of the angular velocity); Sorscher: the allocentric
    displacement of each step (m), as their generator's ``ego_v`` (speed·dt) times the heading's
    cosine and sine: inputs of about 0.02, not a velocity in m/s."""
    if r.net.kind == "lstm":
        return path.velocity
    return path.position[:, 1:] - path.position[:, :-1]


# --------------------------------------------------------------------------------------------
# the model


class PathIntegration(nn.Module):
    """A recipe's network and its cells; ``forward(trajectories)`` is the training loss:
    cross-entropy of the place (and head-direction) read-outs against the cells' activity at
    every step, plus the recipe's L2 penalty."""

    def __init__(self, r: RecipeConfig):
        super().__init__()
        self.r = r
        self.place, self.hd = ensembles(r)
        n = r.net
        if n.kind == "lstm":
            if not self.hd:
                raise ConfigError("cells.hd = 0: the lstm recipe reads head-direction cells (Banino)")
            self.net = PathIntegratorLSTM(r.cells.place, r.cells.hd, n.lstm, n.bottleneck, n.dropout)
        else:
            self.net = PathIntegratorRNN(r.cells.place, n.units, n.nonnegative)

    def run(self, path: Trajectories) -> tuple[Tensor, Tensor | None, Tensor]:
        start_hd = self.hd(path.heading[:, 0]) if self.hd else None
        return self.net(network_input(self.r, path), self.place(path.position[:, 0]), start_hd)

    def forward(self, path: Trajectories) -> tuple[Tensor, dict[str, float]]:
        place_logits, hd_logits, _ = self.run(path)
        place_loss = soft_cross_entropy(place_logits, self.place(path.position[:, 1:]))
        loss = place_loss
        logs = {"place_loss": place_loss.item()}
        if hd_logits is not None:
            hd_loss = soft_cross_entropy(hd_logits, self.hd(path.heading[:, 1:]))
            loss = loss + hd_loss
            logs["hd_loss"] = hd_loss.item()
        penalty = sum(w.pow(2).sum() for w in self.net.decay_weights())
        # Banino (TensorFlow's l2_loss): wd·sum(w²)/2; Sorscher: wd·sum(w²)
        loss = loss + self.r.net.weight_decay * penalty * (0.5 if self.r.net.kind == "lstm" else 1.0)
        return loss, {"loss": loss.item(), **logs}


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against a target distribution, mean over batch and time."""
    return -(targets * F.log_softmax(logits, -1)).sum(-1).mean()


# --------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def activity(cfg: GridCellsConfig, model: PathIntegration, samples: int | None = None) -> dict[str, np.ndarray]:
    """Fresh trajectories (a fixed seed, the same for every arm of a recipe) -> positions (N, 2),
    the scored units' activity (N, U) and the decoded positions (N, 2), in time order."""
    r = model.r
    generator = torch.Generator().manual_seed(EVAL_SEED)
    sequences = max(1, (samples or cfg.eval.samples) // r.env.steps)
    positions, units, decoded = [], [], []
    for start in range(0, sequences, 1000):
        path = walk(r, min(1000, sequences - start), generator)
        place_logits, _, hidden = model.run(path)
        positions.append(path.position[:, 1:].flatten(0, 1))
        units.append(hidden.flatten(0, 1))
        decoded.append(model.place.decode(place_logits.softmax(-1)).flatten(0, 1))
    cat = lambda xs: torch.cat(xs).numpy().astype(np.float64)
    return {"position": cat(positions), "units": cat(units), "decoded": cat(decoded)}


def gridness(cfg: GridCellsConfig, r: RecipeConfig, acts: dict[str, np.ndarray]) -> dict[str, Any]:
    """Each unit's rate map, score60 and score90, its circular-shift null and the grid scale."""
    scorer = scores.GridScorer(cfg.eval.bins)
    maps = scores.rate_maps(acts["position"], acts["units"], r.env.box, cfg.eval.bins)
    s = scorer.scores(maps)
    out: dict[str, Any] = {"score60": s["score60"].tolist(), "score90": s["score90"].tolist()}
    null = None
    if cfg.eval.shuffles:
        n = min(cfg.eval.null_samples, len(acts["position"]))
        null = scores.shuffle_null(acts["position"][:n], acts["units"][:n], scorer, cfg.eval.shuffles,
                                   np.random.default_rng(EVAL_SEED), box=r.env.box)  # fmt: skip
        out["null95"] = np.percentile(null, 95, axis=0).tolist()
    out["summary"] = scores.grid_summary(s["score60"], null)
    grid = np.flatnonzero(s["score60"] > 0.37)
    out["scale_m"] = [float(scores.grid_scale(s["sac"][u], r.env.box, cfg.eval.bins)) for u in grid]
    return out


class GridCellsExperiment(Experiment):
    name = "grid-cells"
    description = "grid cells: an LSTM or RNN trained to path-integrate grows hexagonal firing maps"
    Config = GridCellsConfig
    presets = {
        "quick": {},
        "paper": {
            "a": {
                "train": {
                    **BANINO_OPTIMIZER,
                    "steps": 300_000,
                    "log_every": 1000,
                    "eval_every": 20_000,
                    "checkpoint_every": 5000,
                },
            },
            "b": {
                "net": {"units": 4096, "weight_decay": SORSCHER_WEIGHT_DECAY},
                "train": {
                    **SORSCHER_OPTIMIZER,
                    "steps": 100_000,
                    "log_every": 1000,
                    "eval_every": 10_000,
                    "checkpoint_every": 2000,
                },
            },
            "eval": {"samples": 400_000},
        },
    }
    deviations = {
        preset: [
            "{cfg.a.train.steps:k} updates of recipe A (Banino: 300k; grids first appeared after 50k-300k in a "
            "2026 replication)",
            "{cfg.a.optimiser_as_published:unless}recipe A trained by {cfg.a.train.optimizer:name} at lr "
            "{cfg.a.train.lr:sci}, value clip {cfg.a.train.grad_value_clip:g} (0: none; Banino: TensorFlow 1 "
            "RMSProp, lr 1e-5, momentum 0.9, clip 1e-5, which left chance only after tens of thousands of updates "
            "here)",
            "{cfg.b.optimiser_as_published:unless}recipe B trained by {cfg.b.train.optimizer:name} at lr "
            "{cfg.b.train.lr:sci} with weight decay {cfg.b.net.weight_decay} (Sorscher et al.: Adam 1e-4, decay "
            "1e-4, whose gradient on a 512-unit network starts ~660x the loss's and holds it at chance)",
            "recipe B: {cfg.b.net.units} ReLU units, {cfg.b.cells.place} difference-of-softmax place cells, "
            "{cfg.b.train.steps:k} updates of {cfg.b.train.batch_size} (Sorscher et al.: 4,096 units, 512 cells, "
            "100k updates)",
            "trajectories generated by our code from Supplementary Table 1 (the original data set is no longer "
            "online); ego-motion input: speed and sin, cos of the angular velocity",
            "rate maps, autocorrelograms and gridness re-implemented from DeepMind's scores.py; the paper's "
            "field-shuffle null was never released: ours shifts each unit's activity in time",
        ]
        for preset in ("quick", "paper")
    }
    paper = [
        PaperNumber("a/frac_above_0.37", "share of grid-like units (score60 > 0.37), recipe A", 0.252,
                    "129 of 512 bottleneck units; a 2026 replication: 0.178 ± 0.020", "Banino et al. 2018, Fig. 1"),
        PaperNumber("a/decode_error_cm", "path-integration error, recipe A (cm)", 16.0,
                    "replication: 19.1 ± 0.6 cm", "Banino et al. 2018, Extended Data"),
        PaperNumber("a-untrained/decode_error_cm", "path-integration error, untrained (cm)", 91.0,
                    "replication: 124.6 cm", "Banino et al. 2018, Extended Data"),
    ]  # fmt: skip

    def arms(self, cfg: GridCellsConfig) -> list[str]:
        for name in cfg.recipes:
            if name not in RECIPES:
                raise ConfigError(f"recipes: unknown recipe {name!r}; known: {', '.join(RECIPES)}")
        if len(set(cfg.seeds)) != len(cfg.seeds):
            raise ConfigError(f"seeds {cfg.seeds}: each seed once")
        arms = [f"{name}-seed{seed}" for name in cfg.recipes for seed in cfg.seeds]
        return arms + ([f"{name}-untrained" for name in cfg.recipes] if cfg.untrained else [])

    def build(self, cfg: GridCellsConfig, arm: str) -> nn.Module:
        name, seed = parse_arm(arm)
        torch.manual_seed(cfg.seeds[0] if seed is None else seed)
        return PathIntegration(cfg.recipe(name))

    def fit(self, cfg: GridCellsConfig, arm: str, model: nn.Module, directory: Path, *, progress, resume, device):
        name, seed = parse_arm(arm)
        if seed is None:  # the untrained control: evaluated as initialised, its weights kept for `engram eval`
            directory.mkdir(parents=True, exist_ok=True)
            save_checkpoint(directory / CHECKPOINT_NAME, Checkpoint(0, model.state_dict()))
            return TrainResult(0, 0.0, {}, {}, 0)
        r = cfg.recipe(name)
        return train(model, lambda batch, generator: walk(r, batch, generator), r.train, directory, seed=seed,
                     monitor=self.decode_monitor(cfg), progress=progress, resume=resume, device=device)  # fmt: skip

    def decode_monitor(self, cfg: GridCellsConfig):
        """The learning curves, on 20,000 fresh positions: the decoded position error (cm), the
        share of units above a gridness of 0.37 and the top gridness (no null: that is for the end)."""

        def measure(model: PathIntegration) -> dict[str, float]:
            acts = activity(cfg, model, 20_000)
            maps = scores.rate_maps(acts["position"], acts["units"], model.r.env.box, cfg.eval.bins)
            summary = scores.grid_summary(scores.GridScorer(cfg.eval.bins).scores(maps)["score60"])
            return {"decode_error_cm": decode_error_cm(acts), "frac_above_0.37": summary["frac_above_0.37"],
                    "top_score60": summary["top_score60"]}  # fmt: skip

        return measure

    def evaluate(self, cfg: GridCellsConfig, arm: str, model: nn.Module) -> dict[str, Any]:
        name, _ = parse_arm(arm)
        acts = activity(cfg, model)
        return {"decode_error_cm": decode_error_cm(acts), **gridness(cfg, cfg.recipe(name), acts)}

    def record(self, cfg: GridCellsConfig, arm: str, model: nn.Module, out_dir: Path) -> list[Path]:
        """For each recipe's first seed and untrained network: the top units' rate maps and
        autocorrelograms, and trajectories with the decoded positions."""
        name, seed = parse_arm(arm)
        if seed not in (None, cfg.seeds[0]):
            return []
        r = cfg.recipe(name)
        acts = activity(cfg, model)
        maps = scores.rate_maps(acts["position"], acts["units"], r.env.box, cfg.eval.bins)
        s = scores.GridScorer(cfg.eval.bins).scores(maps)
        return [
            plots.unit_page(maps, s, out_dir / f"units-{arm}.png", f"{arm}: the 16 units of highest gridness"),
            plots.decoded_paths(acts, r, out_dir / f"paths-{arm}.png", arm),
        ]

    def summarize(self, cfg: GridCellsConfig, results: dict[str, dict[str, Any]]) -> dict[str, float]:
        """Per recipe: the decoded error and grid fractions, mean over seeds (with each seed's value),
        and how many seeds meet the issue's bar (≥ 10 % of units above 0.37 and above their own
        null's 95th percentile, top score ≥ 0.8); the same for the untrained network."""
        metrics: dict[str, float] = {}
        for name in cfg.recipes:
            trained = [r for arm, r in results.items() if parse_arm(arm)[0] == name and parse_arm(arm)[1] is not None]
            for key, runs in ((name, trained), (f"{name}-untrained", [results.get(f"{name}-untrained")])):
                runs = [r for r in runs if r]
                if not runs:
                    continue
                metrics[f"{key}/decode_error_cm"] = float(np.mean([r["decode_error_cm"] for r in runs]))
                for field in runs[0]["summary"]:
                    values = [r["summary"][field] for r in runs]
                    metrics[f"{key}/{field}"] = float(np.mean(values))
                    metrics[f"{key}/{field}/std"] = float(np.std(values))
                metrics[f"{key}/seeds_with_grids"] = float(sum(has_grids(r["summary"]) for r in runs))
                metrics[f"{key}/seeds"] = float(len(runs))
        return metrics

    def plot(self, cfg: GridCellsConfig, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path):
        return plots.all_plots(cfg, results, run_dir, out_dir)

    def seed_of(self, cfg: GridCellsConfig) -> int:
        return int(cfg.seeds[0])

    def arm_cost(self, cfg: GridCellsConfig, arm: str) -> float:
        name, seed = parse_arm(arm)
        return 0.1 if seed is None else 1.0


def decode_error_cm(acts: dict[str, np.ndarray]) -> float:
    """Mean distance (cm) between the true position and the one decoded from the place read-out."""
    return float(100 * np.linalg.norm(acts["position"] - acts["decoded"], axis=-1).mean())


def has_grids(summary: dict[str, float]) -> bool:
    """The issue's bar for one seed."""
    share = summary.get("frac_above_0.37_and_null95", summary["frac_above_0.37"])
    return share >= 0.10 and summary["top_score60"] >= 0.8


EXPERIMENT = GridCellsExperiment()
