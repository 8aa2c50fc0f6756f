"""CoBERL: a contrastive, BERT-style loss and an LSTM-transformer core for data-efficient RL, tested
small on MinAtar with memory.

Paper: Banino et al. 2022, "CoBERL: Contrastive BERT for Reinforcement Learning" (ICLR, arXiv
2107.05431): a ResNet encoder gives Y_t; a causally masked GTrXL gives X_t; a learnt gate combines
X_t and Y_t; one LSTM layer gives the values of the RL loss (Fig. 1A). The transformer is also
trained by masked prediction made contrastive (RELIC extended to time, §2.1, Fig. 1B), without the
causal mask and without hand-made augmentations. Claim: better data efficiency across Atari-57,
DMLab and control tasks, with R2D2 and V-MPO underneath. No official code exists, and we could not
verify the paper's numbers (``../shared/reference/next-systems.md`` §4), so this experiment tests
the architecture claim, relatively, at a size a laptop runs.

Arms (``<game>-<agent>-seed<s>``), one algorithm (:mod:`engramlab.rl.ppo`, PPO with back-propagation
through each rollout), parameters matched within 10 % and the same gradient steps per frame:

- ``memoryless``: encoder → MLP, the sanity baseline on the memory game;
- ``lstm``: (a), encoder → LSTM;
- ``gtrxl``: (b), encoder → GTrXL (a third layer matches the parameters);
- ``coberl-noaux``: (c), CoBERL's architecture without its auxiliary loss;
- ``coberl``: (d), (c) with the masked contrastive loss.

Environment (:mod:`engramlab.rl.minatar`): MinAtar games; with ``env.memory`` the channels that show
motion are dropped, so that a single frame hides where the ball is going.

Evaluation (the one path): the learning curve saved in the model (mean return of the episodes
ended in each of ``eval.bins`` equal stretches of the training frames; its mean is the normalised
area under the curve, CoBERL's "data efficiency"), and the final policy's return over
``eval.episodes`` fresh episodes. Across seeds: interquartile means, and percentile-bootstrap 95 %
intervals of the differences the issue pre-registers ((d) − (c), (d) − (a), recurrent −
memoryless), by ``scipy.stats.bootstrap``.

Deviations from the paper are listed in ``deviations`` (and in the report and docs/coberl.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from scipy import stats
from torch import nn

from engramlab.config import Config
from engramlab.engine.experiment import Experiment, PaperNumber
from engramlab.engine.loop import Schedule, run_loop
from engramlab.errors import ConfigError
from engramlab.experiments.rl import plots
from engramlab.models.coberl import ActorCritic, Core
from engramlab.rl.minatar import GAMES, MinAtarBatch, minatar_environment
from engramlab.rl.ppo import PPOConfig, PPOStepper, play

AGENTS = ["memoryless", "lstm", "gtrxl", "coberl-noaux", "coberl"]
RECURRENT = ["lstm", "gtrxl", "coberl-noaux", "coberl"]
# the pre-registered comparisons, (name, agent, baseline): (d) against (c) and (a), and every recurrent
# agent against the memoryless one (the sanity check of the memory game)
COMPARISONS = [
    ("coberl_vs_noaux", "coberl", "coberl-noaux"),
    ("coberl_vs_lstm", "coberl", "lstm"),
    *((f"{agent.replace('-', '_')}_vs_memoryless", agent, "memoryless") for agent in RECURRENT),
]
EVAL_SEED = 100_000  # evaluation games are seeded apart from the training ones


class EnvConfig(Config):
    memory: bool = Field(True, description="drop the channels that show motion (trails), so the agent must remember")
    sticky: float = Field(0.1, ge=0, lt=1, description="probability of repeating the last action (MinAtar's default)")
    max_steps: int = Field(10_000, ge=10, description="cut an episode after this many steps")


class AgentConfig(Config):
    core: Core = Field("lstm", description="none (MLP), lstm, gtrxl, or coberl (GTrXL, gate, LSTM)")
    width: int = Field(64, ge=1, description="encoder output and transformer width")
    hidden: int = Field(256, ge=1, description="LSTM units (lstm, coberl) or MLP units (none)")
    layers: int = Field(2, ge=1, description="transformer layers (gtrxl, coberl)")
    heads: int = Field(4, ge=1, description="attention heads")
    memory: int = Field(32, ge=1, description="steps the transformer reads back (its cache)")
    mlp: int = Field(256, ge=1, description="units of the transformer's MLP")
    contrastive: float = Field(0.0, ge=0, description="weight of CoBERL's masked contrastive loss (coberl; 0: off)")
    mask_rate: float = Field(0.15, gt=0, lt=1, description="share of time steps masked for the contrastive loss")
    temperature: float = Field(0.1, gt=0, description="temperature of the contrastive loss's cosine similarity")
    consistency: float = Field(1.0, ge=0, description="weight of RELIC's KL consistency term")


class EvalConfig(Config):
    episodes: int = Field(64, ge=1, description="fresh episodes played by the final policy")
    bins: int = Field(20, ge=2, description="stretches of training frames in the learning curve")
    resamples: int = Field(10_000, ge=100, description="bootstrap resamples of the 95 % intervals")


class CoBERLConfig(Config):
    games: list[str] = Field(["breakout"], min_length=1, description=f"MinAtar games: {', '.join(GAMES)}")
    agents: list[str] = Field(AGENTS, min_length=1, description=f"agents to train: {', '.join(AGENTS)}")
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="training seeds of every agent")
    env: EnvConfig = EnvConfig()
    ppo: PPOConfig = PPOConfig()
    memoryless: AgentConfig = AgentConfig(core="none", hidden=512)
    lstm: AgentConfig = AgentConfig(core="lstm", hidden=256)
    gtrxl: AgentConfig = AgentConfig(core="gtrxl", layers=3)
    coberl_noaux: AgentConfig = AgentConfig(core="coberl", hidden=128)
    # weight 0.03 (docs/coberl.md): at weight 1 the contrastive gradient's global norm was 8-147 at
    # initialisation against 0.2 for PPO's terms (scripts/coberl_gradient_scales.py), so the norm clip
    # of 0.5 shrank PPO's step; the three-seed ablation: area 0.57 at weight 1, 3.89 at 0.1, 5.23 at 0.03
    coberl: AgentConfig = AgentConfig(core="coberl", hidden=128, contrastive=0.03)
    eval: EvalConfig = EvalConfig()

    def agent(self, name: str) -> AgentConfig:
        return getattr(self, name.replace("-", "_"))


def parse_arm(arm: str) -> tuple[str, str, int]:
    """``breakout-coberl-noaux-seed0`` -> (breakout, coberl-noaux, 0)."""
    game, rest = arm.split("-", 1)
    agent, seed = rest.rsplit("-seed", 1)
    return game, agent, int(seed)


def environments(cfg: CoBERLConfig, game: str, n: int, seed: int) -> MinAtarBatch:
    e = cfg.env
    return MinAtarBatch(game, n, seed, memory=e.memory, sticky=e.sticky, max_steps=e.max_steps)


def build_agent(cfg: CoBERLConfig, agent: str, channels: int, actions: int) -> ActorCritic:
    a = cfg.agent(agent)
    return ActorCritic(channels, actions, a.core, width=a.width, hidden=a.hidden, layers=a.layers, heads=a.heads,
                       memory=a.memory, mlp=a.mlp, contrastive=a.contrastive, mask_rate=a.mask_rate,
                       temperature=a.temperature, consistency=a.consistency, updates=cfg.ppo.updates)  # fmt: skip


def learning_curve(curve: np.ndarray, frames: int, bins: int) -> list[float]:
    """The mean return of the episodes that ended in each of ``bins`` equal stretches of the
    ``frames`` of training, from the model's per-update rows (frames, episodes, summed return). A
    stretch in which no episode ended repeats the one before (the first such: 0)."""
    edges = np.linspace(0, frames, bins + 1)
    which = np.clip(np.searchsorted(edges, curve[:, 0], side="left") - 1, 0, bins - 1)
    episodes = np.bincount(which, weights=curve[:, 1], minlength=bins)
    summed = np.bincount(which, weights=curve[:, 2], minlength=bins)
    out, last = [], 0.0
    for n, s in zip(episodes, summed):
        last = s / n if n else last
        out.append(float(last))
    return out


def by_game_and_agent(cfg: CoBERLConfig, results: dict[str, Any]) -> dict[str, dict[str, list[dict]]]:
    """``{game: {agent: [each seed's results]}}``, agents in the config's order, those with no run left out."""
    runs = {g: {a: [r for arm, r in results.items() if parse_arm(arm)[:2] == (g, a)] for a in cfg.agents}
            for g in cfg.games}  # fmt: skip
    return {g: {a: rs for a, rs in by_agent.items() if rs} for g, by_agent in runs.items()}


def training_frames(cfg: CoBERLConfig) -> int:
    return cfg.ppo.updates * cfg.ppo.envs * cfg.ppo.rollout


def throughput(cfg: CoBERLConfig, results: dict[str, Any], run_dir: Path) -> dict[str, list[float]]:
    """Each arm's training frames per second (its frames over the training time in its summary.json),
    by agent: not a metric of the summary, whose numbers a resumed run must reproduce exactly."""
    speeds: dict[str, list[float]] = {}
    for arm in results:
        summary = Path(run_dir) / arm / "summary.json"
        seconds = json.loads(summary.read_text()).get("train_wall_time_s", 0) if summary.exists() else 0
        if seconds > 0:
            speeds.setdefault(parse_arm(arm)[1], []).append(training_frames(cfg) / seconds)
    return {agent: speeds[agent] for agent in cfg.agents if agent in speeds}  # in the config's order


def difference_interval(a: list[float], b: list[float], resamples: int) -> tuple[float, float, float]:
    """Mean(a) − mean(b) and its percentile-bootstrap 95 % interval (seeds resampled within each
    agent independently, as rliable's stratified bootstrap does for one task)."""
    diff = float(np.mean(a) - np.mean(b))
    if len(a) < 2 or len(b) < 2:
        return diff, float("nan"), float("nan")
    ci = stats.bootstrap((np.asarray(a), np.asarray(b)), lambda x, y, axis: x.mean(axis) - y.mean(axis),
                         n_resamples=resamples, method="percentile", vectorized=True,
                         random_state=np.random.default_rng(0)).confidence_interval  # fmt: skip
    return diff, float(ci.low), float(ci.high)


def iqm(values: list[float]) -> float:
    """Interquartile mean (Agarwal et al. 2021): the mean of the middle 50 %."""
    return float(stats.trim_mean(values, 0.25))


class CoBERLExperiment(Experiment):
    name = "coberl"
    description = "CoBERL: LSTM, GTrXL and CoBERL agents (with and without the contrastive loss) on MinAtar with memory"
    Config = CoBERLConfig
    presets = {
        "quick": {},
        # three games, five seeds, 5M frames: our `paper` scale (CoBERL itself ran Atari-57 with R2D2)
        "paper": {
            "games": ["breakout", "asterix", "space_invaders"],
            "seeds": [0, 1, 2, 3, 4],
            "ppo": {"frames": 5_000_000, "log_every": 10, "checkpoint_every": 50},
            "eval": {"episodes": 256},
        },
    }
    deviations = {
        preset: [
            "PPO with back-propagation through each rollout of {cfg.ppo.rollout} steps (CoBERL: R2D2 on Atari, "
            "V-MPO on DMLab)",
            "MinAtar games {cfg.games} at 10 x 10, {cfg.env.memory:if}without the channels that show motion, "
            "{cfg.ppo.frames:k} frames per run (CoBERL: Atari-57 and DMLab-30 at 200M frames and more)",
            "encoder: MinAtar's network (one 3 x 3 convolution of 16 channels and a linear layer of "
            "{cfg.lstm.width}) instead of a ResNet",
            "transformer: {cfg.coberl.layers} GTrXL layers of {cfg.coberl.width} units reading {cfg.coberl.memory} "
            "steps back, with a learnt relative-distance bias instead of Transformer-XL's sinusoids",
            "contrastive loss weight {cfg.coberl.contrastive}, {cfg.coberl.mask_rate} of the steps masked with one "
            "learnt vector, cosine similarity at temperature {cfg.coberl.temperature}, negatives: the other masked "
            "steps of the minibatch; our reading of Eq. 1-3 (the paper's code is not public)",
            "sizes chosen so that every agent has the same number of parameters within 10 % (the LSTM agent "
            "{cfg.lstm.hidden} units, CoBERL's LSTM {cfg.coberl.hidden}, the GTrXL agent {cfg.gtrxl.layers} layers)",
        ]
        for preset in ("quick", "paper")
    }
    paper = [
        PaperNumber("breakout/coberl_vs_noaux/auc", "area under the curve, CoBERL minus the same without its loss",
                    None, "the contrastive loss improves data efficiency on Atari-57 and DMLab (no number verified)",
                    "Banino et al. 2022, §4"),
        PaperNumber("breakout/coberl_vs_lstm/auc", "area under the curve, CoBERL minus an LSTM agent", None,
                    "CoBERL is more data-efficient than R2D2's LSTM agent", "Banino et al. 2022, Fig. 2"),
    ]  # fmt: skip

    def prepare(self, cfg: CoBERLConfig) -> CoBERLConfig:
        """Fail before a run directory exists if a name is unknown or MinAtar is missing."""
        self.arms(cfg)
        minatar_environment(cfg.games[0], cfg.env.sticky)
        return cfg

    def arms(self, cfg: CoBERLConfig) -> list[str]:
        for game in cfg.games:
            if game not in GAMES:
                raise ConfigError(f"games: unknown MinAtar game {game!r}; known: {', '.join(GAMES)}")
        for agent in cfg.agents:
            if agent not in AGENTS:
                raise ConfigError(f"agents: unknown agent {agent!r}; known: {', '.join(AGENTS)}")
        if len(set(cfg.seeds)) != len(cfg.seeds):
            raise ConfigError(f"seeds {cfg.seeds}: each seed once")
        return [f"{game}-{agent}-seed{seed}" for game in cfg.games for seed in cfg.seeds for agent in cfg.agents]

    def build(self, cfg: CoBERLConfig, arm: str) -> nn.Module:
        game, agent, seed = parse_arm(arm)
        probe = environments(cfg, game, 1, seed)
        torch.manual_seed(seed)
        return build_agent(cfg, agent, probe.n_channels, probe.n_actions)

    def fit(self, cfg: CoBERLConfig, arm: str, model: nn.Module, directory: Path, *, progress, resume, device):
        game, _, seed = parse_arm(arm)
        p = cfg.ppo
        stepper = PPOStepper(model, environments(cfg, game, p.envs, seed), p, seed=seed)
        return run_loop(stepper, Schedule(p.updates, p.log_every, p.checkpoint_every), directory, progress=progress,
                        resume=resume)  # fmt: skip

    def evaluate(self, cfg: CoBERLConfig, arm: str, model: nn.Module) -> dict[str, Any]:
        game, _, seed = parse_arm(arm)
        envs = environments(cfg, game, min(16, cfg.eval.episodes), EVAL_SEED + seed)
        returns = play(model, envs, cfg.eval.episodes)
        curve = learning_curve(model.learning_curve.numpy(), training_frames(cfg), cfg.eval.bins)
        return {"final_return": float(np.mean(returns)), "returns": returns, "curve": curve,
                "auc": float(np.mean(curve)), "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip

    def summarize(self, cfg: CoBERLConfig, results: dict[str, dict[str, Any]]) -> dict[str, float]:
        """Per game and agent: the area under the curve and the final return (mean, IQM, spread over
        seeds) and the parameters; per pre-registered comparison, the difference of the means with
        its bootstrap 95 % interval."""
        metrics: dict[str, float] = {}
        for game, by_agent in by_game_and_agent(cfg, results).items():
            for agent, runs in by_agent.items():
                for key in ("auc", "final_return"):
                    values = [r[key] for r in runs]
                    metrics[f"{game}/{agent}/{key}"] = float(np.mean(values))
                    metrics[f"{game}/{agent}/{key}/iqm"] = iqm(values)
                    metrics[f"{game}/{agent}/{key}/std"] = float(np.std(values))
                metrics[f"{game}/{agent}/parameters"] = float(runs[0]["parameters"])
                metrics[f"{game}/{agent}/seeds"] = float(len(runs))
            for name, agent, baseline in COMPARISONS:
                if by_agent.get(agent) and by_agent.get(baseline):
                    for key in ("auc", "final_return"):
                        diff, low, high = difference_interval([r[key] for r in by_agent[agent]],
                                                              [r[key] for r in by_agent[baseline]],
                                                              cfg.eval.resamples)  # fmt: skip
                        metrics[f"{game}/{name}/{key}"] = diff
                        if not np.isnan(low):  # an interval needs two seeds on each side
                            metrics[f"{game}/{name}/{key}/ci_low"] = low
                            metrics[f"{game}/{name}/{key}/ci_high"] = high
        return metrics

    def plot(self, cfg: CoBERLConfig, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path):
        runs = {g: {a: [r for arm, r in results.items() if parse_arm(arm)[:2] == (g, a)] for a in cfg.agents}
                for g in cfg.games}  # fmt: skip
        runs = {g: {a: rs for a, rs in by_agent.items() if rs} for g, by_agent in runs.items()}
        variant = " without its motion channels" if cfg.env.memory else ""
        return plots.all_plots(runs, training_frames(cfg), throughput(cfg, results, run_dir), variant, out_dir)

    def seed_of(self, cfg: CoBERLConfig) -> int:
        return int(cfg.seeds[0])

    def arm_cost(self, cfg: CoBERLConfig, arm: str) -> float:
        # measured updates per second on 2 cores: the contrastive agent is the slowest, the MLP the fastest
        return {"memoryless": 0.35, "lstm": 0.6, "gtrxl": 0.6, "coberl-noaux": 0.75, "coberl": 1.0}[parse_arm(arm)[1]]


EXPERIMENT = CoBERLExperiment()
