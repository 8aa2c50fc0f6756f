"""Why the generalist fails Pendulum: its teacher-forced torque in the expert's two phases.

    python scripts/generalist_pendulum_phases.py RUN [RUN ...] --out docs/results/generalist/pendulum_phases.json

For each finished ``engram run generalist`` directory, unprompted windows of the cached expert
episodes (the training data) are passed through the trained generalist. At every action the
model's most likely torque is compared with the expert's, split by the expert's own phases
(``engramlab.tasks.control.pendulum_expert``): swing-up (cos θ ≤ 0.85, a bang-bang ±2 torque
along the swing) and balance (cos θ > 0.85, a PD controller).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from engramlab.config import load_yaml
from engramlab.engine.runner import load_arm_model
from engramlab.experiments.generalist.generalist import EXPERIMENT, build_sampler
from engramlab.tasks import gato_tokens as tok

TOP = 0.85  # the expert switches from pumping to PD control above this cos θ


def phases(run: Path, rows: int, seed: int) -> dict[str, dict[str, float]]:
    settings = load_yaml(run / "config.yaml")
    settings["mix"]["prompt_fraction"] = 0.0
    cfg = EXPERIMENT.Config.model_validate(settings)
    gato = load_arm_model(EXPERIMENT, cfg, run, "generalist").gato
    batch = build_sampler(cfg, ["pendulum"], with_other_modalities=False)(rows, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits, _ = gato(batch.ids, batch.local)
    # a Pendulum timestep is [cos, sin, speed, separator, torque]: the torque is predicted at the separator
    row, at = (batch.ids[:, :-1] == tok.SEPARATOR).nonzero(as_tuple=True)
    row, at = row[at >= 3], at[at >= 3]
    cos = tok.continuous_values(batch.ids[row, at - 3])
    low, high = torch.tensor(-2.0), torch.tensor(2.0)
    expert = tok.continuous_values(batch.ids[row, at + 1], low, high)
    bins = logits[row, at, tok.CONTINUOUS : tok.CONTINUOUS + tok.BINS]
    model = tok.continuous_values(tok.CONTINUOUS + bins.argmax(-1), low, high)
    probs = bins.softmax(-1)
    opposite = torch.where(
        expert[:, None] > 0, torch.arange(tok.BINS) < tok.BINS // 2, torch.arange(tok.BINS) >= tok.BINS // 2
    )
    out = {}
    for name, where in (("swing_up", cos <= TOP), ("balance", cos > TOP)):
        out[name] = {
            "share_of_timesteps": float(where.float().mean()),
            "mean_abs_torque_error": float((model - expert)[where].abs().mean()),
            "sign_agreement": float((torch.sign(model) == torch.sign(expert))[where].float().mean()),
            "probability_of_opposite_sign": float((probs * opposite)[where].sum(-1).mean()),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished `engram run generalist` directories")
    parser.add_argument("--rows", type=int, default=64, help="windows of expert episodes per run")
    parser.add_argument("--seed", type=int, default=1, help="seed of the windows drawn")
    parser.add_argument("--out", type=Path, required=True, help="JSON file written")
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_run = {str(run): phases(run, args.rows, args.seed) for run in args.runs}
    summary = {
        phase: {
            key: [
                float(np.mean([r[phase][key] for r in per_run.values()])),
                float(np.std([r[phase][key] for r in per_run.values()])),
            ]
            for key in next(iter(per_run.values()))[phase]
        }
        for phase in ("swing_up", "balance")
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"runs": per_run, "mean_std_over_runs": summary, "rows": args.rows, "seed": args.seed}, indent=2)
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
