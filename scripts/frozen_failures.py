"""Why frozen-vq does not gain with shots: each failed 2-way episode of a finished run, sorted by cause.

    python scripts/frozen_failures.py RUN_DIR --out failures.json

RUN_DIR is an ``engram run frozen`` directory with its checkpoints (a local run; published copies
have none) and frozen-vq arms. For each frozen-vq seed and each shot count, the nonce 2-way cells
with task induction (the run's own held-out episodes) are read again; each image is taken as the
LM word its quantized prefix is nearest to, and each failed episode counted under the first cause
that holds:

- ``query_misread``: the query image is not read as its class's digit word;
- ``support_confusion``: a support image of the *other* class is read as the query's word;
- ``first_letter``: otherwise, and the answer's first letter is wrong (the LM did not bind);
- ``later_letter``: otherwise: the first letter is right and a later one wrong (the LM bound the
  name but copied its spelling wrong).

It also counts the images (every slot's, the query's included) read as their own digit's word.

The text-only ceiling's failures (the LM arm, class words in the slots) are split the same way
between the two letter causes. For the Flamingo arms, the first token each one answers with is
counted by kind: a digit word (the model captions the query instead of naming it), the right
name's first letter, another letter, or another word.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from engramlab.api import load_config
from engramlab.engine.checkpoint import load_checkpoint
from engramlab.experiments.multimodal import frozen
from engramlab.tasks import binding


def load(exp, cfg, run: Path, arm: str) -> torch.nn.Module:
    model = exp.build(cfg, arm)
    state = load_checkpoint(run / arm / "checkpoint.safetensors", with_state=False).model
    model.load_state_dict(state)
    return model.eval()


def letter_causes(predicted: torch.Tensor, answer: torch.Tensor, failed: torch.Tensor) -> dict[str, int]:
    first = predicted[:, 0] != answer[:, 0]
    return {"first_letter": int((failed & first).sum()), "later_letter": int((failed & ~first).sum())}


def add(counts: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {k: counts.get(k, 0) + v for k, v in more.items()}


def cell(cfg, shots: int, count) -> dict[str, int]:
    """``count(episodes, images)`` summed over the run's own episodes of the cell (its batches)."""
    out: dict[str, int] = {}
    for episodes, images in frozen.cell_batches(cfg, "nonce", 2, shots, True):
        out = add(out, count(episodes, images))
    return out


@torch.no_grad()
def causes(cfg, model, episodes, images) -> dict[str, int]:
    vocab = frozen.text_of(cfg.data).vocab
    predicted = frozen.image_reader(model)(episodes, images).argmax(-1)
    failed = ~(predicted == episodes.answer).all(-1)
    prefix = model.vision(images.flatten(0, 1))[:, -1]
    words = torch.cdist(prefix, model.lm.tokens.weight).argmin(-1).view(images.shape[:2])
    query_misread = words[:, -1] != vocab.ids(binding.DIGITS)[episodes.classes[:, -1]]
    other = episodes.classes[:, :-1] != episodes.classes[:, -1:]
    confusion = ((words[:, :-1] == words[:, -1:]) & other).any(-1) & ~query_misread
    rest = failed & ~query_misread & ~confusion
    read_right = words == vocab.ids(binding.DIGITS)[episodes.classes]  # every slot's image, query included
    out = {"episodes": len(failed), "failed": int(failed.sum())}
    out |= {"images": read_right.numel(), "images_read_as_their_digit": int(read_right.sum())}
    out |= {"query_misread": int((failed & query_misread).sum()), "support_confusion": int((failed & confusion).sum())}
    return out | letter_causes(predicted, episodes.answer, rest)


@torch.no_grad()
def ceiling_causes(lm, episodes, images) -> dict[str, int]:
    predicted = frozen.text_reader(lm)(episodes, images).argmax(-1)
    failed = ~(predicted == episodes.answer).all(-1)
    return {"episodes": len(failed), "failed": int(failed.sum())} | letter_causes(predicted, episodes.answer, failed)


@torch.no_grad()
def first_tokens(cfg, model, episodes, images) -> dict[str, int]:
    vocab = frozen.text_of(cfg.data).vocab
    first = frozen.image_reader(model)(episodes, images).argmax(-1)[:, 0]
    digit = torch.isin(first, vocab.ids(binding.DIGITS))
    letter = torch.isin(first, vocab.ids(binding.LETTERS))
    right = first == episodes.answer[:, 0]
    return {"episodes": len(first), "digit_word": int(digit.sum()), "right_first_letter": int(right.sum()),
            "other_letter": int((letter & ~right).sum()), "other_word": int((~digit & ~letter).sum())}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="an engram run frozen directory with its checkpoints")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    exp, cfg = load_config(args.run)
    out = {"run": str(args.run), "cell": "nonce, 2-way, task induction", "text ceiling": {}, "frozen-vq": {}}
    lm = load(exp, cfg, args.run, "lm").lm
    for shots in cfg.eval.shots:
        out["text ceiling"][f"{shots} shot"] = cell(cfg, shots, lambda e, i: ceiling_causes(lm, e, i))
    for seed in cfg.seeds:
        model = load(exp, cfg, args.run, f"frozen-vq-seed{seed}")
        count = lambda e, i, model=model: causes(cfg, model, e, i)  # noqa: E731
        out["frozen-vq"][f"seed {seed}"] = {f"{shots} shot": cell(cfg, shots, count) for shots in cfg.eval.shots}
    flamingo = [seed for seed in cfg.seeds if "flamingo" in cfg.kinds]
    for seed in flamingo:
        model = load(exp, cfg, args.run, f"flamingo-seed{seed}")
        count = lambda e, i, model=model: first_tokens(cfg, model, e, i)  # noqa: E731
        out.setdefault("flamingo first answer token", {})[f"seed {seed}"] = {
            f"{shots} shot": cell(cfg, shots, count) for shots in cfg.eval.shots
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
