"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015): 1,623 handwritten characters of 50 alphabets,
each drawn once by 20 people, as 105 × 105 black-on-white PNG images.

``load_omniglot(path)`` reads one of the release's zip files (``images_background.zip``,
``images_background_small1.zip``, ``images_evaluation.zip``, …) or the folder it unpacks to,
laid out ``<alphabet>/<character>/<drawing>.png``. Every character is a class. Returns the
images (N, 1, 105, 105) float with ink at 1 and paper at 0 (the drawings inverted, so that they
look like MNIST's digits), the labels (N,) and the class names ``alphabet/character``.
A missing path, a file that is not a zip, no drawings or an unreadable drawing is one error
naming the file.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from engramlab.errors import DataError


def _drawings(path: Path) -> list[tuple[str, str, bytes]]:
    """(name for errors, class name, PNG bytes) of every drawing, in name order."""
    if path.is_dir():
        files = sorted(path.rglob("*.png"))
        return [(str(f), f"{f.parent.parent.name}/{f.parent.name}", f.read_bytes()) for f in files]
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (an Omniglot zip file or its unpacked folder is expected)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist() if n.lower().endswith(".png"))
            return [(f"{path}:{n}", "/".join(PurePosixPath(n).parts[-3:-1]), archive.read(n)) for n in names]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable zip file ({exc})") from exc


def _ink(name: str, data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return 1 - np.asarray(image.convert("L"), dtype=np.float32) / 255
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{name}: not a readable PNG image ({exc})") from exc


def load_omniglot(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    path = Path(path)
    drawings = _drawings(path)
    if not drawings:
        raise DataError(f"{path}: no PNG drawings found (expected <alphabet>/<character>/<drawing>.png)")
    images = [_ink(name, data) for name, _, data in drawings]
    for (name, _, _), image in zip(drawings, images):
        if image.shape != images[0].shape:
            raise DataError(
                f"{name}: {image.shape[1]} x {image.shape[0]} pixels, the first drawing has "
                f"{images[0].shape[1]} x {images[0].shape[0]}"
            )
    classes = sorted({c for _, c, _ in drawings})
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[c] for _, c, _ in drawings])
    return torch.from_numpy(np.stack(images))[:, None], labels, classes
