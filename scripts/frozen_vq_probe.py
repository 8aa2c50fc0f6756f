"""Caption-train one Frozen vision side on a finished run's LM, then measure binding: a quick probe.

    python scripts/frozen_vq_probe.py RUN_DIR --kind frozen-vq --steps 600 --out probe.json

RUN_DIR is an ``engram run frozen`` directory whose ``lm/checkpoint.safetensors`` is kept (a local
run; published copies have no checkpoints). The vision side (``frozen``: Frozen's continuous
prefix; ``frozen-vq``: the prefix quantized to the LM's token embeddings; ``flamingo``: the
resampler and gated cross-attention) is trained on captions for
``--steps`` updates with the run's vision settings, then evaluated on ``--episodes`` held-out
episodes per cell (2-way nonce with task induction at 1 and 5 shots, real names, held-out classes,
5-way). The JSON also lists, per digit class, the words the quantized prefix reads its validation
images as.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from engramlab.api import load_config
from engramlab.engine.checkpoint import load_checkpoint
from engramlab.engine.train import train
from engramlab.errors import EngramError
from engramlab.experiments.multimodal import frozen

CELLS = [("nonce", 2, 1), ("nonce", 2, 5), ("real-names", 2, 1), ("held-out-classes", 2, 1), ("nonce", 5, 1)]


def words_per_class(model: frozen.Captioner, images: torch.Tensor, labels: torch.Tensor) -> dict[int, dict]:
    """The three words each class's images are read as most often (the quantized prefix's last embedding)."""
    vocab = model.vocab
    with torch.no_grad():  # the nearest token of each image's last prefix embedding, as quantize picks it
        nearest = torch.cdist(model.vision(images)[:, -1], model.lm.tokens.weight).argmin(-1)
    table = {}
    for digit in labels.unique().tolist():
        ids, counts = nearest[labels == digit].unique(return_counts=True)
        top = counts.argsort(descending=True)[:3]
        table[digit] = {vocab.decode(ids[i : i + 1]): int(counts[i]) for i in top}
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="an engram run frozen directory with its LM checkpoint")
    parser.add_argument("--kind", choices=["frozen", "frozen-vq", "flamingo"], default="frozen-vq")
    parser.add_argument("--steps", type=int, default=600, help="caption updates")
    parser.add_argument("--commitment", type=float, default=1.0, help="frozen-vq's commitment weight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=200, help="held-out episodes per cell")
    parser.add_argument(
        "--lm-checkpoint",
        type=Path,
        help="the LM checkpoint to read (default RUN/lm/checkpoint.safetensors; a copy taken while the run "
        "goes on, which overwrites its checkpoint)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    exp, cfg = load_config(args.run)
    vision = cfg.vision.model_copy(update={"commitment": args.commitment})
    cfg = cfg.model_copy(update={"vision": vision, "eval": cfg.eval.model_copy(update={"episodes": args.episodes})})
    torch.manual_seed(args.seed)
    model = frozen.Captioner(args.kind, exp.new_lm(cfg), frozen.text_of(cfg.data).vocab, cfg.vision, cfg.text.wording)
    try:
        checkpoint = load_checkpoint(args.lm_checkpoint or args.run / "lm" / "checkpoint.safetensors", with_state=False)
    except EngramError as error:  # a missing or unreadable checkpoint: one line
        print(f"frozen_vq_probe: {error}", file=sys.stderr)
        return 2
    model.lm.load_state_dict({k.removeprefix("lm."): v for k, v in checkpoint.model.items()})
    model.match_token_norm()
    schedule = cfg.vision.train.model_copy(update={"steps": args.steps, "checkpoint_every": args.steps})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(model, frozen.caption_sampler(cfg), schedule, Path(tmp), seed=args.seed,
                       monitor=exp.caption_monitor(cfg))  # fmt: skip
    model.eval()
    out = {
        "run": str(args.run),
        "lm_update": checkpoint.step,
        "kind": args.kind,
        "steps": args.steps,
        "commitment": args.commitment if args.kind == "frozen-vq" else None,
        "seed": args.seed,
        "train_seconds": time.perf_counter() - start,
        "held_out_caption_accuracy": result.monitor_metrics.get("eval/caption_accuracy"),
    }
    images, labels = frozen.images_of(cfg.data).val
    if args.kind == "frozen-vq":
        out["words_per_class"] = words_per_class(model, images[:500], labels[:500])
    match = frozen.exact_matches(frozen.image_reader(model))
    with torch.no_grad():
        for condition, ways, shots in CELLS:
            hits = frozen.binding_accuracy(cfg, match, condition, ways, shots, True)
            out[f"{condition}/{ways}way/{shots}shot"] = 100 * float(np.mean(hits))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "words_per_class"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
