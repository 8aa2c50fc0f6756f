"""Shared test helpers. Tests run on CPU with one thread, so results are reproducible."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engramlab.ponder.steps import Step, StepOutput

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


class ScriptedStep(Step):
    """A step that returns given outputs: ``ys[n]`` (batch, out) and ``halt_logits[n]`` (batch,).

    The state counts the steps taken, so the wrapper's unroll and halting can be checked against
    hand computations.
    """

    def __init__(self, ys: list[torch.Tensor], halt_logits: list[torch.Tensor]):
        super().__init__()
        self.ys, self.halt_logits = ys, halt_logits
        self.scale = torch.nn.Parameter(torch.ones(()))  # gives the outputs a gradient path

    def initial_state(self, x_enc):
        return torch.zeros(x_enc.shape[0], 1, dtype=torch.long)

    def forward(self, x_enc, h):
        n = int(h[0, 0])
        rows = x_enc[:, 0].long()  # the input carries the original row index (survives compaction)
        return StepOutput(h + 1, self.ys[n][rows] * self.scale, self.halt_logits[n][rows])


def row_index_input(batch: int) -> torch.Tensor:
    return torch.arange(batch, dtype=torch.float32).unsqueeze(1)


def sets(*overrides: str) -> list[str]:
    """``--set`` arguments for the command line: sets("a=1", "b=2") -> ["--set", "a=1", "--set", "b=2"]."""
    return [arg for override in overrides for arg in ("--set", override)]


def write_digits(directory, count: int = 60, marked: bool = False) -> None:
    """An MNIST-format test set of `count` images: digit d is a bright bar at row 2d (learnable);
    ``marked``: each image also carries its index in binary on the last row (all distinct)."""
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    labels = np.arange(count, dtype=np.uint8) % 10
    for i, d in enumerate(labels):
        images[i, 2 * d : 2 * d + 3] = 255
        if marked:
            images[i, 27, :16] = [128 * ((i >> bit) & 1) for bit in range(16)]
    header = lambda magic, dims: magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)  # noqa: E731
    pixels = header(2051, [count, 28, 28]) + images.tobytes()
    (directory / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(pixels))
    (directory / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header(2049, [count]) + labels.tobytes()))


def write_omniglot(path, characters: int = 6, drawings: int = 4, size: int = 12) -> Path:
    """An Omniglot-style zip at `path`: alphabet `A`, character c drawn as a black bar at row 2c on
    white, `drawings` times; returns the path."""
    import io
    import zipfile

    from PIL import Image

    with zipfile.ZipFile(path, "w") as archive:
        for c in range(characters):
            for d in range(drawings):
                pixels = np.full((size, size), 255, dtype=np.uint8)
                pixels[2 * c % size, d % size :] = 0
                png = io.BytesIO()
                Image.fromarray(pixels).save(png, format="PNG")
                archive.writestr(
                    f"images_background/A/character{c + 1:02d}/{c + 1:02d}_{d + 1:02d}.png", png.getvalue()
                )
    return Path(path)


def engram_cmd() -> list[str]:
    return [sys.executable, "-m", "engramlab.cli"]


def run_checked(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd`` capturing its output; on a non-zero exit fail with the tail of its stderr."""
    return check_exit(subprocess.run(cmd, capture_output=True, text=True, **kwargs))


def check_exit(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(proc.args[:6])} ... exited {proc.returncode}; stderr tail:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture
def subprocess_env():
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    return env


TINY_MQAR = [  # memory-mqar overrides for a run of a few seconds (an LSTM, 4 updates): sweeps and the bench
    "methods=[lstm]",
    "model.d_model=16",
    "task.vocab=16",
    "task.length=16",
    "task.kv_pairs=2",
    "task.mix=null",
    "eval.settings.pairs32.kv_pairs=3",
    "eval.settings.pairs64.kv_pairs=4",
    "train.steps=4",
    "train.warmup_steps=0",
    "eval.samples=10",
    "eval.monitor_samples=10",
]


FROZEN_WORDS = "the king is dead long live the king and all his men say so to be or not ".split()


@pytest.fixture
def frozen_data(tmp_path):
    """A tiny corpus of plays and 400 marked digits: the Frozen experiment's data sets."""
    (tmp_path / "plays").mkdir()
    (tmp_path / "plays" / "play.txt").write_text(" ".join(FROZEN_WORDS * 80))
    (tmp_path / "mnist").mkdir()
    write_digits(tmp_path / "mnist", count=400, marked=True)
    return tmp_path


def tiny_frozen(data, *more: str) -> list[str]:
    """Overrides that make ``engram run frozen`` tiny, on :func:`frozen_data`."""
    return [
        f"data.corpus_dir={data / 'plays'}", f"data.mnist_dir={data / 'mnist'}", "data.vocab_size=100",
        "data.nonce_words=40", "data.caption_images=200", "data.caption_val=50",
        "lm.layers=1", "lm.width=32", "lm.heads=2", "lm.mlp=64", "seeds=[0]",
        "train.steps=6", "train.log_every=3", "train.eval_every=3", "train.checkpoint_every=3",
        "vision.channels=4", "vision.features=16", "vision.latents=2",
        "vision.train.steps=4", "vision.train.log_every=2", "vision.train.eval_every=2",
        "vision.train.checkpoint_every=2", "vision.vq_steps=4",
        "eval.episodes=10", "eval.ways=[2]", "eval.shots=[1, 2]", *more,
    ]  # fmt: skip
