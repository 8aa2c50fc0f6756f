"""Why `quick` weighs CoBERL's contrastive loss by 0.03: at initialisation, the global gradient norm
of each term of the loss of the `quick` CoBERL agent, on each of the four minibatches of its first
rollout (seed 0, MinAtar Breakout without the trail; a new draw of the masked steps each), against
PPO's global norm clip.

    python scripts/coberl_gradient_scales.py --out docs/results/coberl/gradient-scales.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from engramlab.engine.rundir import machine_info, now_iso
from engramlab.experiments.rl.coberl import CoBERLConfig, build_agent, environments
from engramlab.rl.ppo import PPOStepper, ppo_terms


def gradient_norms(seed: int = 0) -> dict[str, list[float]]:
    cfg = CoBERLConfig()
    envs = environments(cfg, "breakout", cfg.ppo.envs, seed)
    torch.manual_seed(seed)
    model = build_agent(cfg, "coberl", envs.n_channels, envs.n_actions)
    model.contrastive = 1.0  # the terms at weight 1; the weights scale them linearly
    stepper = PPOStepper(model, envs, cfg.ppo, seed=seed)
    batch = stepper.collect()
    norms: dict[str, list[float]] = {}
    for envs_mb in torch.arange(cfg.ppo.envs).chunk(cfg.ppo.minibatches):
        mb = {k: v[envs_mb] for k, v in batch.items() if k != "state"}
        raw, _ = ppo_terms(model, mb, {k: v[envs_mb] for k, v in batch["state"].items()}, cfg.ppo)
        terms = {
            "policy": raw["policy"],
            "value (x0.5)": cfg.ppo.value * raw["value"],
            "entropy (x0.01)": -cfg.ppo.entropy * raw["entropy"],
            "contrastive (weight 1)": raw["auxiliary"],
        }
        for name, term in terms.items():
            model.zero_grad()
            term.backward(retain_graph=True)
            norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None))
            norms.setdefault(name, []).append(norm.item())
    return norms


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args()
    torch.set_num_threads(1)
    norms = gradient_norms()
    record = {"command": f"python scripts/coberl_gradient_scales.py --out {args.out}", "written": now_iso(),
              "machine": machine_info(), "seed": 0, "max_grad_norm": CoBERLConfig().ppo.max_grad_norm,
              "global_gradient_norm": norms}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(json.dumps(norms, indent=2))
