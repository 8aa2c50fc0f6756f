"""Why Frozen's image arms do not bind here: where the caption-trained prefix sits among the LM's
word embeddings, and which vectors in an image slot the frozen LM binds at all.

    python scripts/frozen_geometry.py runs/frozen/<timestamp> --arms frozen-seed0 frozen-seed1 \
        --out docs/results/frozen/<name>/geometry.json

For each Frozen arm (n = 1: the prefix takes the class word's place), on the 2-way, 1-shot nonce
cell with task induction (the run's held-out names and evaluation images, ``--episodes``):

- the prefix's cosine to its class's word and to its nearest word, within and between classes;
- exact match when each image slot holds: the class word (the text ceiling); the word with
  Gaussian noise of 0.5 and 1.0 times its RMS; the image's prefix (the Frozen arm as evaluated);
  the mean prefix of its class; that mean less the mean over all classes, rescaled to the digit
  words' RMS; a fixed random vector per class; a random code per class and episode as
  ``text.slot_codes`` draws them.

The LM binds what lies near a word it knows; docs/frozen.md reads the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from engramlab.engine.checkpoint import load_checkpoint
from engramlab.engine.rundir import machine_info
from engramlab.experiments.multimodal import frozen as fz
from engramlab.tasks import binding

CELL = ("nonce", 2, 1, True)


def load(run: Path, arm: str, cfg: fz.FrozenConfig) -> torch.nn.Module:
    model = fz.EXPERIMENT.build(cfg, arm)
    model.load_state_dict(load_checkpoint(run / arm / "checkpoint.safetensors", with_state=False).model)
    return model.eval()


def slot_filler(lm: fz.LanguageModel, vectors: Callable) -> Callable:
    """A reader whose image slots' class-word positions hold ``vectors(episodes, images)`` (B, S, width)."""

    def read(episodes: binding.Episodes, images: torch.Tensor) -> torch.Tensor:
        hidden = lm.hidden(episodes.ids, inject=(episodes.slots + 1, vectors(episodes, images)))
        return lm.logits(hidden[:, episodes.answer_window()])

    return read


def unit_rms(v: torch.Tensor) -> torch.Tensor:
    return v / v.pow(2).mean(-1, keepdim=True).sqrt()


@torch.no_grad()
def geometry(run: Path, arm: str, cfg: fz.FrozenConfig, pool_images: int) -> dict:
    model = load(run, arm, cfg)
    torch.manual_seed(0)  # the same random vectors for every arm (building a model reseeds)
    if model.kind != "frozen" or model.vision.n != 1:
        raise SystemExit(f"{arm}: a Frozen arm with vision.prefix = 1 (the prefix in the class word's place)")
    lm, vocab = model.lm, fz.text_of(cfg.data).vocab
    table, digits = lm.tokens.weight, vocab.ids(binding.DIGITS)
    images, labels = (t[:pool_images] for t in fz.images_of(cfg.data).pool)
    prefix = torch.cat([model.vision(images[i : i + 500])[:, 0] for i in range(0, len(images), 500)])
    cos = F.normalize(prefix, dim=-1) @ F.normalize(table, dim=-1).T
    unit = F.normalize(prefix, dim=-1)
    same = labels[:, None] == labels[None]
    means = torch.stack([prefix[labels == c].mean(0) for c in range(10)])
    digit_rms = float(table[digits].pow(2).mean(-1).sqrt().mean())
    centred = unit_rms(means - prefix.mean(0)) * digit_rms
    fixed = unit_rms(torch.randn(10, table.shape[1])) * digit_rms
    words = lambda e, im: table[e.ids[:, e.slots + 1]]
    rms = lambda w: w.pow(2).mean(-1, keepdim=True).sqrt()
    noisy = lambda s: lambda e, im: (lambda w: w + s * rms(w) * torch.randn_like(w))(words(e, im))
    drawn = lambda e, im: fz.random_codes(e.ids[:, e.slots + 1], table.shape[1]) * rms(words(e, im))
    readers = {
        "class_word": fz.text_reader(lm),
        "class_word_noise_0.5": slot_filler(lm, noisy(0.5)),
        "class_word_noise_1.0": slot_filler(lm, noisy(1.0)),
        "image_prefix": fz.image_reader(model),
        "class_mean_prefix": slot_filler(lm, lambda e, im: means[e.classes]),
        "centred_class_mean_prefix": slot_filler(lm, lambda e, im: centred[e.classes]),
        "fixed_random_vector_per_class": slot_filler(lm, lambda e, im: fixed[e.classes]),
        "slot_codes_as_drawn_in_training": slot_filler(lm, drawn),
    }
    accuracy = {name: 100 * float(np.mean(fz.binding_accuracy(cfg, fz.exact_matches(read), *CELL)))
                for name, read in readers.items()}  # fmt: skip
    per_class = {
        binding.DIGITS[c]: {
            "cos_to_own_word": float(cos[labels == c, digits[c]].mean()),
            "cos_to_nearest_word": float(cos[labels == c].max(-1).values.mean()),
            "nearest_is_own_word": float((cos[labels == c].argmax(-1) == digits[c]).float().mean()),
        }
        for c in range(10)
    }
    return {
        "exact_match_percent_2way_1shot_induction": accuracy,
        "prefix_cos_within_class": float((unit @ unit.T)[same].mean()),
        "prefix_cos_between_classes": float((unit @ unit.T)[~same].mean()),
        "digit_words_cos_between": float(
            (F.normalize(table[digits], dim=-1) @ F.normalize(table[digits], dim=-1).T)[
                ~torch.eye(10, dtype=torch.bool)
            ].mean()
        ),  # fmt: skip
        "prefix_rms": float(rms(prefix).mean()),
        "digit_word_rms": digit_rms,
        "per_class": per_class,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished frozen run directory")
    parser.add_argument("--arms", nargs="+", default=["frozen-seed0"], help="Frozen arms to read")
    parser.add_argument("--episodes", type=int, default=300, help="episodes per slot filling")
    parser.add_argument("--pool-images", type=int, default=2000, help="evaluation-pool images for the geometry")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    cfg = fz.FrozenConfig.model_validate(yaml.safe_load((args.run / "config.yaml").read_text()))
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"episodes": args.episodes})})
    out = {
        "command": "python scripts/frozen_geometry.py " + " ".join(
            [str(args.run), "--arms", *args.arms, "--episodes", str(args.episodes), "--out", str(args.out)]),
        "machine": machine_info(),
        "arms": {arm: geometry(args.run, arm, cfg, args.pool_images) for arm in args.arms},
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps({arm: r["exact_match_percent_2way_1shot_induction"] for arm, r in out["arms"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
