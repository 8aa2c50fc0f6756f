"""MNIST in its original IDX format (LeCun, Cortes, Burges), gzip-compressed or not.

``load_mnist(directory, split="t10k")`` reads ``{split}-images-idx3-ubyte[.gz]`` and
``{split}-labels-idx1-ubyte[.gz]``: images (N, 1, 28, 28) float in [0, 1] and labels (N,) long.
A missing or malformed file is one error naming the file and what was wrong.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from engramlab.errors import DataError

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def _read(directory: Path, stem: str) -> tuple[Path, bytes]:
    for name in (f"{stem}.gz", stem):
        path = directory / name
        if path.exists():
            try:
                return path, gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
            except (OSError, EOFError) as exc:
                raise DataError(f"{path}: cannot be read ({exc})") from exc
    raise DataError(f"{directory / stem}[.gz]: no such file (an MNIST directory in IDX format is expected)")


def _header(path: Path, data: bytes, magic: int, dims: int) -> list[int]:
    if len(data) < 4 * (1 + dims) or int.from_bytes(data[:4], "big") != magic:
        raise DataError(f"{path}: not an IDX file with magic number {magic}")
    return [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]


def load_mnist(directory: str | Path, split: str = "t10k") -> tuple[torch.Tensor, torch.Tensor]:
    directory = Path(directory)
    image_path, images = _read(directory, f"{split}-images-idx3-ubyte")
    label_path, labels = _read(directory, f"{split}-labels-idx1-ubyte")
    n, rows, cols = _header(image_path, images, IMAGES_MAGIC, 3)
    (m,) = _header(label_path, labels, LABELS_MAGIC, 1)
    if len(images) != 16 + n * rows * cols:
        raise DataError(f"{image_path}: holds {len(images) - 16} pixel bytes, the header says {n * rows * cols}")
    if len(labels) != 8 + m or m != n:
        raise DataError(f"{label_path}: holds {len(labels) - 8} labels, expected {n} (one per image)")
    pixels = np.frombuffer(images, dtype=np.uint8, offset=16).reshape(n, 1, rows, cols)
    return torch.from_numpy(pixels.astype(np.float32) / 255), torch.from_numpy(
        np.frombuffer(labels, np.uint8, offset=8).astype(np.int64)
    )
