"""Why `quick` drops recipe B's weight decay: at initialisation, the mean absolute gradient of the
place-cell cross-entropy and of the weight decay on each weight (the `paper` decay, 1e-4, on the
`quick` network of 512 units), on one batch of 200 trajectories.

    python scripts/grid_gradient_scales.py --out docs/results/grid-cells/gradient-scales.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from engramlab.engine.rundir import machine_info, now_iso
from engramlab.experiments.space.grid_cells import SORSCHER_WEIGHT_DECAY, GridCellsConfig, PathIntegration, walk


def gradient_scales(seed: int = 0) -> dict[str, dict[str, float]]:
    r = GridCellsConfig().b
    torch.manual_seed(seed)
    model = PathIntegration(r)
    path = walk(r, r.train.batch_size, torch.Generator().manual_seed(seed + 1))
    place_logits, _, _ = model.run(path)
    terms = {
        "cross_entropy": -(model.place(path.position[:, 1:]) * place_logits.log_softmax(-1)).sum(-1).mean(),
        "weight_decay": SORSCHER_WEIGHT_DECAY * sum(w.pow(2).sum() for w in model.net.decay_weights()),
    }
    out = {}
    for name, term in terms.items():
        model.zero_grad()
        term.backward(retain_graph=True)
        out[name] = {n: p.grad.abs().mean().item() for n, p in model.named_parameters() if p.grad is not None}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scales = gradient_scales()
    record = {"command": f"python scripts/grid_gradient_scales.py --out {args.out}", "written": now_iso(),
              "machine": machine_info(), "seed": 0, "mean_abs_gradient": scales}  # fmt: skip
    args.out.write_text(json.dumps(record, indent=2))
    print(json.dumps(scales, indent=2))
