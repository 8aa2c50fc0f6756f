"""What a trained parity model computes at each ponder step: linear probes of its hidden state.

    python scripts/parity_probe.py RUN_DIR [--arm pondernet] [--steps 20] [--per-k 200] \
        --out docs/results/pondernet-parity/<run>/probe

For fresh vectors of every k the run evaluates (its training range, then its extrapolation
range), the step is applied ``--steps`` times to every sample without halting (default: the
run's evaluation N), and at every step n the script measures

- ``readout``: the accuracy of the model's own prediction ŷₙ (what it would answer if it halted at n);
- ``probe``: the accuracy of a logistic-regression probe of the state hₙ for the parity,
  fitted on half of the training-range vectors and tested on the other half and on the
  extrapolation range (is the answer linearly present in the state, even where the readout
  misses it?);
- ``lambda``: the mean halting probability λₙ, and ``halted``: the share of samples that the
  halting distribution pₙ (PonderNet eq. 2) has halted by n.

It writes ``probe.json`` and ``probe.png`` (one panel per range).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from engramlab.api import load_run
from engramlab.engine.plots import plt, save
from engramlab.engine.rundir import library_versions, machine_info, now_iso
from engramlab.errors import EngramError
from engramlab.ponder.halting import halting_distribution
from engramlab.tasks.parity import ParityTask


def states_and_outputs(model, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every sample for ``steps`` steps: states (steps, batch, hidden), prediction logits and
    halting logits (steps, batch)."""
    step = model.halting.step
    with torch.no_grad():
        x_enc = step.encode(model.features(x))
        states = step.states(x_enc, steps)
        read = step.read(states.flatten(0, 1))
    return states, read.y.view(steps, -1), read.halt_logit.view(steps, -1)


def probe_accuracies(train_states, train_y, tests: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """A logistic-regression probe fitted on (train_states, train_y), its accuracy on each test set."""
    probe = LogisticRegression(max_iter=2000, C=1.0)
    probe.fit(train_states.numpy(), train_y.numpy())
    return [float(probe.score(s.numpy(), y.numpy())) for s, y in tests]


def measure(run_dir: Path, arm: str | None, steps: int | None, per_k: int, seed: int) -> dict:
    model, cfg = load_run(run_dir, arm)
    if not hasattr(model.halting.step, "states"):
        raise EngramError(f"{run_dir}: model.step '{cfg.model.step}' has no state vector to probe (gru, rnn, mlp have)")
    steps = steps or cfg.model.halting.eval_max_steps or cfg.model.halting.max_steps
    task = ParityTask(cfg.task)
    generator = torch.Generator().manual_seed(seed)
    ranges = {"interpolation": cfg.task.train_k, "extrapolation": cfg.task.test_k}
    ranges = {name: k for name, k in ranges.items() if k is not None}
    data = {}
    for name, (lo, hi) in ranges.items():
        batch = task.sample_each_k(list(range(lo, hi + 1)), per_k, generator)
        data[name] = (batch, *states_and_outputs(model, batch.x, steps))
    # fit on a random half of the training range, test on its other half and on the extrapolation range
    fit_rows = torch.randperm(data["interpolation"][0].y.shape[0], generator=generator)
    half = fit_rows.shape[0] // 2
    fit, held = fit_rows[:half], fit_rows[half:]
    result = {name: {"readout": [], "probe": [], "lambda": [], "halted": []} for name in ranges}
    for n in range(steps):
        train_states = data["interpolation"][1][n][fit]
        train_y = data["interpolation"][0].y[fit]
        tests = [(data["interpolation"][1][n][held], data["interpolation"][0].y[held])]
        tests += [(data[name][1][n], data[name][0].y) for name in ranges if name != "interpolation"]
        for name, accuracy in zip(ranges, probe_accuracies(train_states, train_y, tests)):
            result[name]["probe"].append(accuracy)
    for name, (batch, _, y, halt_logit) in data.items():
        p, _ = halting_distribution(halt_logit)
        halted = p.cumsum(0)
        for n in range(steps):
            result[name]["readout"].append(((y[n] > 0).long() == batch.y).float().mean().item())
            result[name]["lambda"].append(torch.sigmoid(halt_logit[n]).mean().item())
            result[name]["halted"].append(halted[n].mean().item())
    return {
        "run": str(run_dir),
        "arm": arm or "first arm",
        "steps": steps,
        "per_k": per_k,
        "seed": seed,
        "ranges": {name: list(k) for name, k in ranges.items()},
        "results": result,
    }


def plot(report: dict, path: Path) -> Path:
    ranges = report["results"]
    fig, axes = plt.subplots(1, len(ranges), figsize=(6 * len(ranges), 3.8), squeeze=False)
    n = np.arange(1, report["steps"] + 1)
    for ax, (name, r) in zip(axes[0], ranges.items()):
        ax.plot(n, r["readout"], "-o", ms=3, label="model's prediction ŷₙ")
        ax.plot(n, r["probe"], "-s", ms=3, label="linear probe of hₙ")
        ax.plot(n, r["halted"], "--", color="0.4", label="halted by n (Σ p)")
        ax.axhline(0.5, color="0.6", ls=":", lw=1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("ponder step n")
        ax.set_title(f"{name}, k in {report['ranges'][name]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{report['run']} ({report['arm']}): parity in the state, step by step")
    return save(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a finished pondernet-parity run (with checkpoints)")
    parser.add_argument("--arm", default=None, help="the arm to probe (default: the run's first, pondernet)")
    parser.add_argument("--steps", type=int, default=None, help="steps to unroll (default: the run's evaluation N)")
    parser.add_argument("--per-k", type=int, default=200, help="fresh vectors per k (default 200)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the vectors and of the probe's split")
    parser.add_argument("--out", type=Path, required=True, help="folder for probe.json and probe.png")
    args = parser.parse_args(argv)
    try:
        report = measure(args.run_dir, args.arm, args.steps, args.per_k, args.seed)
    except EngramError as error:  # not a run, no such arm, a step without a state vector: one line
        print(f"parity_probe: {error}", file=sys.stderr)
        return 2
    report |= {"machine": machine_info(), "versions": library_versions(), "python": platform.python_version()}
    report["date"] = now_iso()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probe.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'probe.json'} and {plot(report, args.out / 'probe.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
