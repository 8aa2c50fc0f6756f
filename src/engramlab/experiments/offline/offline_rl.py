"""Offline RL on data of mixed skill: behaviour cloning, its filtered and return-conditioned variants,
the AlphaStar Unplugged recipe (a behaviour value improving a BC-anchored policy, while training or
at inference) and IQL, on the same datasets, evaluated in the real environments.

Papers: Vinyals et al. 2019, "Grandmaster level in StarCraft II" (supervised policy, then RL with
a KL term towards it; MMR conditioning); Mathieu et al. 2023, "AlphaStar Unplugged", arXiv
2308.03526 (offline: fit the behaviour policy and value, then improve the policy with the value,
while training or at inference; 90 % wins against the AlphaStar BC agent); Kostrikov et al. 2022
(IQL); the CORL benchmark (Tarasov et al. 2022) for BC / 10 %-BC / IQL on D4RL.

Data (:mod:`engramlab.tasks.offline`): per environment, four behaviour policies that differ
systematically (expert, a mis-tuned medium, a biased bad controller, random), mixed by share of
transitions into the ``mixed`` (a quarter each, the headline), ``medium``, ``random-heavy`` and
``expert`` datasets; generated once and cached in ``data.cache_dir``.

One run trains, for every environment, dataset and seed, one model per method ("arm", named
``<env>-<dataset>-<method>-seed<s>``), all in the one training loop on the same batch stream:

- ``bc``: behaviour cloning on all data;
- ``filtered-bc``: BC on the top ``agent.filter_fraction`` of episodes by return (CORL's 10 %-BC);
- ``return-bc``: BC conditioned on the episode's return quantile, asked for ``agent.target_quantile``
  when it plays (AlphaStar's MMR conditioning);
- ``offline-ac``: the AlphaStar Unplugged recipe, one model with one shared π_BC and Q^β and one
  improved policy per β in ``agent.betas`` (β = 0: no anchor); it is evaluated as the rows
  ``ac-beta<β>`` and as ``ac-inference`` (greedy on Q^β among the actions π_BC gives at least
  ``agent.threshold``, improvement at inference);
- ``iql``: implicit Q-learning, the established reference (d3rlpy has no discrete IQL).

Evaluation: ``eval.episodes`` episodes per row and seed in the environment, at the last iterate
(pre-registered: no "best seen" selection, as CORL warns), actions sampled from the policy as
AlphaStar's and Gato's agents play (greedy scores are recorded beside them); scores normalised to
0 = random, 100 = expert. The headline anchored row is ``agent.headline_beta``, fixed before the
final runs.

Deviations from the papers are listed in ``deviations`` (and in the report and docs/offline-rl.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from engramlab.config import Config
from engramlab.engine.experiment import Experiment, PaperNumber
from engramlab.engine.train import TrainConfig, train
from engramlab.errors import ConfigError
from engramlab.experiments.offline import plots
from engramlab.models import offline_rl as agents
from engramlab.tasks import offline

METHODS = ["bc", "filtered-bc", "return-bc", "offline-ac", "iql"]
DATASETS = ["mixed", "medium", "random-heavy", "expert"]
EVAL_SEED, MONITOR_SEED = 1_000_000, 2_000_000  # environment seeds apart from the data's


class DataConfig(Config):
    envs: list[str] = Field(
        ["cartpole", "lunarlander"],
        min_length=1,
        description="environments (cartpole, lunarlander, acrobot, babyai-gotoredball)",
    )
    datasets: list[str] = Field(
        DATASETS, min_length=1, description="datasets per environment (mixed, medium, random-heavy, expert)"
    )
    transitions: int = Field(100_000, ge=1, description="steps per dataset (whole episodes: a little more)")
    data_seed: int = Field(0, description="seed of the generated episodes (the same for every run seed)")
    score_episodes: int = Field(100, ge=1, description="episodes measuring the expert and random scores")
    cache_dir: str = Field(
        "data/offline-rl", description="where datasets are cached (<env>-<dataset>-<transitions>-seed<s>.npz)"
    )
    source: Literal["npz", "minari"] = Field(
        "npz",
        description="npz: files in cache_dir; minari: the local Minari store, as engramlab/<env>/<dataset>-v0",
    )
    generate: bool = Field(
        True, description="generate a dataset missing from cache_dir (false: a missing file is an error)"
    )

    @field_validator("envs", "datasets")
    @classmethod
    def _known(cls, names: list[str], info) -> list[str]:
        known = offline.BEHAVIOURS if info.field_name == "envs" else offline.MIXES
        for name in names:
            if name not in known:
                raise ValueError(f"unknown name {name!r}; known: {', '.join(known)}")
        return names


class AgentConfig(Config):
    hidden: int = Field(256, ge=1, description="units per hidden layer of every network (CORL: 256)")
    layers: int = Field(2, ge=1, description="hidden layers of every network (CORL: 2)")
    gamma: float = Field(0.99, gt=0, lt=1, description="discount of the value functions")
    polyak: float = Field(0.005, gt=0, le=1, description="target-network update rate")
    reward_scale: bool = Field(True, description="scale rewards by 1000 / (max - min episode return), as CORL for IQL")
    filter_fraction: float = Field(
        0.1, gt=0, le=1, description="filtered BC: share of episodes kept, best returns first"
    )
    target_quantile: float = Field(1.0, ge=0, le=1, description="return-conditioned BC: the return quantile asked for")
    betas: list[float] = Field(
        [0.0, 0.1, 1.0], min_length=1, description="offline-ac: KL(pi_BC || pi) weights, one policy each"
    )
    headline_beta: float = Field(
        0.1, gt=0, description="offline-ac: the anchored policy the bars are checked on (in betas)"
    )
    temperature: float = Field(
        0.05, gt=0, description="offline-ac: AWR temperature, on advantages divided by their batch std"
    )
    extraction: Literal["sampled", "all-actions", "policy-gradient"] = Field(
        "sampled",
        description="offline-ac policy improvement: sampled = AWR at the data's action; all-actions = "
        "cross-entropy to pi_BC exp(A / temperature) over every action; policy-gradient = the all-action "
        "policy gradient sum_a pi(a|s) A(s, a) (temperature unused)",
    )
    pretrain_fraction: float = Field(
        0.5, gt=0, lt=1, description="offline-ac: share of the steps fitting pi_BC and Q before improving"
    )
    threshold: float = Field(
        0.1, gt=0, le=1, description="offline-ac at inference: actions with pi_BC(a|s) >= this are allowed"
    )
    iql_temperature: float = Field(1 / 3, gt=0, description="IQL: 1 / beta of its AWR extraction (paper: beta = 3)")
    expectile: float = Field(0.7, gt=0, lt=1, description="IQL: expectile of V (paper: 0.7)")
    max_weight: float = Field(100.0, gt=0, description="clip of the advantage weights (IQL: 100)")

    @model_validator(mode="after")
    def _check(self):
        if self.headline_beta not in self.betas:
            raise ValueError(f"agent.headline_beta ({self.headline_beta}) must be one of agent.betas {self.betas}")
        return self


class EvalConfig(Config):
    episodes: int = Field(50, ge=1, description="final evaluation episodes per row and seed (CORL/D4RL: 10-100)")
    monitor_episodes: int = Field(10, ge=1, description="episodes of each learning-curve point")
    greedy: bool = Field(
        False, description="headline scores with the most likely action (false: sampled, as AlphaStar)"
    )


class OfflineRLConfig(Config):
    seeds: list[int] = Field(
        [0, 1, 2], min_length=1, description="training seeds (one arm per seed; scores are their mean)"
    )
    methods: list[str] = Field(METHODS, min_length=1, description="methods trained: " + ", ".join(METHODS))
    data: DataConfig = DataConfig()
    agent: AgentConfig = AgentConfig()
    train: TrainConfig = TrainConfig(
        steps=100_000, batch_size=256, lr=3e-4, grad_clip=0.0, log_every=500, eval_every=10_000, checkpoint_every=5000
    )
    eval: EvalConfig = EvalConfig()

    @field_validator("methods")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in METHODS:
                raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
        return names


def parse_arm(arm: str) -> tuple[str, str, str, int]:
    """``"lunarlander-random-heavy-filtered-bc-seed2"`` -> ("lunarlander", "random-heavy", "filtered-bc", 2)."""
    rest, seed = arm.rsplit("-seed", 1)
    env = next(e for e in offline.BEHAVIOURS if rest.startswith(e + "-"))
    rest = rest.removeprefix(env + "-")
    method = next(m for m in sorted(METHODS, key=len, reverse=True) if rest.endswith("-" + m))
    return env, rest.removesuffix("-" + method), method, int(seed)


def rows_of(cfg: OfflineRLConfig, method: str) -> list[str]:
    """What a trained method is evaluated as: one row, or for offline-ac each β, inference and π_BC."""
    if method != "offline-ac":
        return [method]
    return [f"ac-beta{beta:g}" for beta in cfg.agent.betas] + ["ac-inference", "ac-anchor"]


def mode_of(row: str) -> str:
    return row.removeprefix("ac-") if row.startswith("ac-") else "policy"


class OfflineRL(Experiment):
    name = "offline-rl"
    description = (
        "Offline RL on mixed-skill data: BC, filtered and return-conditioned BC, "
        "AlphaStar Unplugged's BC-anchored actor-critic, IQL"
    )
    Config = OfflineRLConfig
    presets = {
        "quick": {
            "agent": {"hidden": 128},
            "train": {"steps": 10_000, "eval_every": 2000, "checkpoint_every": 2000},
        },
        "paper": {
            "seeds": [0, 1, 2, 3, 4],
            "data": {"envs": ["cartpole", "lunarlander", "acrobot", "babyai-gotoredball"]},
        },
    }
    deviations = {
        "quick": [
            "{cfg.train.steps:k} updates per arm (CORL: 1M) and {cfg.agent.hidden} hidden units (CORL: 256)",
            "environments {cfg.data.envs}: small gymnasium tasks, not StarCraft II or D4RL locomotion",
        ],
        "paper": [
            "{cfg.train.steps:k} updates per arm (CORL: 1M)",
            "environments {cfg.data.envs}: small gymnasium and BabyAI tasks, not StarCraft II or D4RL",
        ],
    }
    for preset in ("quick", "paper"):
        deviations[preset] += [
            "behaviour policies are hand-made controllers of four skill levels, not human players",
            "offline-ac: Q^beta by expected SARSA under pi_BC, improvement '{cfg.agent.extraction}' on advantages "
            "divided by their batch std (temperature {cfg.agent.temperature}) plus beta KL(pi_BC || pi); "
            "AlphaStar Unplugged's OAC uses V-trace on an LSTM policy",
            "inference-time improvement is one greedy step on Q^beta among likely BC actions, not MCTS",
        ]
    paper = [
        PaperNumber(
            "mixed/offline_ac_minus_bc", "anchored offline AC − BC (mixed)", None,
            "AlphaStar Unplugged: offline RL on the BC policy wins 90 % of games against the AlphaStar BC agent",
            "Mathieu et al. 2023, abstract",
        ),
        PaperNumber(
            "mixed/filtered_minus_bc", "10 %-BC − BC", 18.9,
            "CORL D4RL locomotion average: BC 50.4, 10 %-BC 69.3 (last iterate)", "CORL README",
        ),
        PaperNumber(
            "mixed/iql_minus_bc", "IQL − BC", 31.2, "CORL D4RL locomotion average: IQL 81.6 vs BC 50.4", "CORL README"
        ),
    ]  # fmt: skip

    # --- data ----------------------------------------------------------------------------
    def dataset(self, cfg: OfflineRLConfig, env: str, name: str) -> offline.Dataset:
        d = cfg.data
        if d.source == "minari":
            return offline.from_minari(offline.minari_id(env, name))
        if not d.generate:
            return offline.load(offline.cache_path(d.cache_dir, env, name, d.transitions, d.data_seed))
        return offline.load_or_generate(env, name, d.transitions, d.data_seed, d.cache_dir, d.score_episodes)

    def prepare(self, cfg: OfflineRLConfig) -> OfflineRLConfig:
        for env in cfg.data.envs:  # generated (or checked) once, before any worker starts
            for name in cfg.data.datasets:
                self.dataset(cfg, env, name)
        return cfg

    # --- arms ----------------------------------------------------------------------------
    def arms(self, cfg: OfflineRLConfig) -> list[str]:
        if len(set(cfg.seeds)) != len(cfg.seeds):
            raise ConfigError(f"seeds {cfg.seeds}: each seed once")
        return [
            f"{env}-{name}-{method}-seed{seed}"
            for env in cfg.data.envs
            for name in cfg.data.datasets
            for method in cfg.methods
            for seed in cfg.seeds
        ]

    def build(self, cfg: OfflineRLConfig, arm: str):
        env, name, method, seed = parse_arm(arm)
        data = self.dataset(cfg, env, name)
        a, observations, actions = cfg.agent, data.feature_size, data.actions_n
        torch.manual_seed(seed)
        if method in ("bc", "filtered-bc", "return-bc"):
            return agents.BehaviourCloning(
                observations, actions, a.hidden, a.layers, conditioned=method == "return-bc",
                target_quantile=a.target_quantile,
            )  # fmt: skip
        common = {"hidden": a.hidden, "layers": a.layers, "gamma": a.gamma, "polyak_rate": a.polyak}
        common |= {"max_weight": a.max_weight, "reward_scale": reward_scale(cfg, data)}
        if method == "offline-ac":
            return agents.AnchoredActorCritic(
                observations, actions, **common, temperature=a.temperature, betas=tuple(a.betas),
                pretrain_steps=int(a.pretrain_fraction * cfg.train.steps), threshold=a.threshold,
                extraction=a.extraction,
            )  # fmt: skip
        return agents.ImplicitQLearning(
            observations, actions, **common, temperature=a.iql_temperature, expectile=a.expectile
        )

    def sampler(self, cfg: OfflineRLConfig, arm: str) -> Callable:
        env, name, method, _ = parse_arm(arm)
        data = self.dataset(cfg, env, name)
        keep = data.top_episodes(cfg.agent.filter_fraction) if method == "filtered-bc" else None
        return offline.TransitionSampler(data, keep)

    def fit(self, cfg: OfflineRLConfig, arm: str, model, directory: Path, *, progress, resume: bool, device: str):
        return train(
            model, self.sampler(cfg, arm), cfg.train, directory, seed=parse_arm(arm)[3],
            monitor=self.monitor(cfg, arm), progress=progress, resume=resume, device=device,
        )  # fmt: skip

    def monitor(self, cfg: OfflineRLConfig, arm: str) -> Callable:
        env, name, method, _ = parse_arm(arm)
        data = self.dataset(cfg, env, name)
        rows = [r for r in rows_of(cfg, method) if r != "ac-anchor"]

        def score(model) -> dict[str, float]:
            episodes = cfg.eval.monitor_episodes
            return {f"score/{row}": self.scores(cfg, env, data, model, row, episodes, MONITOR_SEED)[0] for row in rows}

        return score

    # --- the one evaluation path ---------------------------------------------------------
    def scores(self, cfg, env, data, model, row, episodes, seed, greedy=None) -> tuple[float, float]:
        """(normalised score, mean return) of ``episodes`` episodes of one row of a trained model."""
        greedy = cfg.eval.greedy if greedy is None else greedy
        returns = offline.evaluate(env, lambda obs, gen: model.act(obs, gen, mode_of(row), greedy), episodes, seed)
        return float(data.normalised(returns.mean())), float(returns.mean())

    def evaluate(self, cfg: OfflineRLConfig, arm: str, model) -> dict[str, Any]:
        env, name, method, _ = parse_arm(arm)
        data = self.dataset(cfg, env, name)
        results = {}
        for row in rows_of(cfg, method):
            score, mean_return = self.scores(cfg, env, data, model, row, cfg.eval.episodes, EVAL_SEED)
            other, _ = self.scores(cfg, env, data, model, row, cfg.eval.episodes, EVAL_SEED, not cfg.eval.greedy)
            results[row] = {
                "normalised": score,
                "return": mean_return,
                ("normalised_sampled" if cfg.eval.greedy else "normalised_greedy"): other,
            }
        return {"rows": results, "data_return": float(data.episode_returns.mean()),
                "data_normalised": float(data.normalised(data.episode_returns.mean()))}  # fmt: skip

    def summarize(self, cfg: OfflineRLConfig, results: dict[str, dict[str, Any]]) -> dict[str, float]:
        """Each row's mean and std over seeds per environment and dataset; the bars' differences per
        environment and averaged over environments (``<dataset>/<difference>``)."""
        table = score_table(results)
        metrics: dict[str, float] = {}
        for (env, name, row), values in sorted(table.items()):
            metrics[f"{env}/{name}/{row}"] = float(np.mean(values))
            metrics[f"{env}/{name}/{row}/std"] = float(np.std(values))
        rows = {row for (_, _, row) in table} - {"ac-anchor"}  # π_BC's row is a check, not an arm
        anchored = f"ac-beta{cfg.agent.headline_beta:g}"
        comparisons = {
            "filtered_minus_bc": ("filtered-bc", "bc"),
            "offline_ac_minus_bc": (anchored, "bc"),
            "offline_ac_minus_filtered": (anchored, "filtered-bc"),
            "iql_minus_bc": ("iql", "bc"),
        }
        for name in cfg.data.datasets:
            for label, (better, base) in comparisons.items():
                if better in rows and base in rows:
                    gaps = {e: metrics[f"{e}/{name}/{better}"] - metrics[f"{e}/{name}/{base}"] for e in cfg.data.envs}
                    metrics |= {f"{e}/{name}/{label}": gap for e, gap in gaps.items()}
                    metrics[f"{name}/{label}"] = float(np.mean(list(gaps.values())))
        for env in cfg.data.envs:  # the data themselves: their mean episode, and each behaviour policy
            for name in cfg.data.datasets:
                data = self.dataset(cfg, env, name)
                metrics[f"{env}/{name}/data"] = float(data.normalised(data.episode_returns.mean()))
            scores = data.meta.get("behaviour_scores", {})
            metrics |= {f"{env}/behaviour/{policy}": float(data.normalised(score)) for policy, score in scores.items()}
        if "expert" in cfg.data.datasets:
            metrics["expert/lowest_row"] = min(metrics[f"{e}/expert/{row}"] for e in cfg.data.envs for row in rows)
        return metrics

    def plot(self, cfg: OfflineRLConfig, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path):
        curves = [(row, m) for m in cfg.methods for row in rows_of(cfg, m) if row != "ac-anchor"]
        return plots.all_plots(cfg, score_table(results), curves, run_dir, out_dir)

    def seed_of(self, cfg: OfflineRLConfig) -> int:
        return int(cfg.seeds[0])

    def arm_cost(self, cfg: OfflineRLConfig, arm: str) -> float:
        method = parse_arm(arm)[2]
        return {"offline-ac": 4.0, "iql": 3.0}.get(method, 1.0)


def reward_scale(cfg: OfflineRLConfig, data: offline.Dataset) -> float:
    """CORL's reward normalisation for IQL on D4RL: rewards × 1000 / (max − min episode return)."""
    if not cfg.agent.reward_scale:
        return 1.0
    spread = float(data.episode_returns.max() - data.episode_returns.min())
    return 1000.0 / spread if spread > 0 else 1.0


def score_table(results: dict[str, dict[str, Any]], key: str = "normalised") -> dict[tuple[str, str, str], list[float]]:
    """(env, dataset, row) -> one score per seed (``key``: ``normalised``, or ``normalised_greedy``)."""
    table: dict[tuple[str, str, str], list[float]] = {}
    for arm, result in results.items():
        env, name, _, _ = parse_arm(arm)
        for row, r in result["rows"].items():
            table.setdefault((env, name, row), []).append(r[key])
    return table


EXPERIMENT = OfflineRL()
