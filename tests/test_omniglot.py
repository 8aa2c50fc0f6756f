"""The Omniglot reader and pool on zip files written by the test: classes, inversion, and one-line errors."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_omniglot
from PIL import Image

from engramlab.errors import ConfigError, DataError
from engramlab.tasks import few_shot
from engramlab.tasks.omniglot import load_omniglot


def test_every_character_is_a_class_and_ink_is_one(tmp_path):
    images, labels, classes = load_omniglot(write_omniglot(tmp_path / "o.zip", characters=3, drawings=2, size=12))
    assert images.shape == (6, 1, 12, 12)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert classes == ["A/character01", "A/character02", "A/character03"]
    # character 2 (label 1): black bar at row 2 from column d on white -> ink 1 there, 0 elsewhere
    assert images[3, 0, 2].tolist() == [0.0] + [1.0] * 11 and images[3, 0, 3].sum() == 0


def test_an_unpacked_folder_reads_like_the_zip(tmp_path):
    archive = write_omniglot(tmp_path / "o.zip", characters=3, drawings=2)
    zipfile.ZipFile(archive).extractall(tmp_path / "unpacked")
    from_zip, from_folder = load_omniglot(archive), load_omniglot(tmp_path / "unpacked" / "images_background")
    for a, b in zip(from_zip[:2], from_folder[:2]):
        assert torch.equal(a, b)
    assert from_zip[2] == from_folder[2]


def test_the_pool_is_on_the_digits_grid_with_its_peak_at_one(tmp_path):
    pool = few_shot.omniglot_pool(write_omniglot(tmp_path / "o.zip", characters=5, drawings=3, size=16))
    assert pool.images.shape == (15, 64) and pool.labels.unique().numel() == 5
    torch.testing.assert_close(pool.images.amax(1), torch.ones(15))
    e = few_shot.episodes(pool, 2, 5, 3, torch.Generator().manual_seed(0))
    assert e.images.shape == (2, 15, 64)
    with pytest.raises(ConfigError, match="omniglot: 4 shots asked for, but a class has only 3 images"):
        few_shot.episodes(pool, 1, 5, 4, torch.Generator())


def test_malformed_inputs_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(DataError, match="nope.zip: no such file or folder"):
        load_omniglot(tmp_path / "nope.zip")
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(DataError, match="text.zip: not a readable zip file"):
        load_omniglot(tmp_path / "text.zip")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as archive:
        archive.writestr("README.txt", "no drawings")
    with pytest.raises(DataError, match="empty.zip: no PNG drawings found"):
        load_omniglot(tmp_path / "empty.zip")
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as archive:
        archive.writestr("A/character01/01_01.png", b"not a png")
    with pytest.raises(DataError, match="bad.zip:A/character01/01_01.png: not a readable PNG image"):
        load_omniglot(tmp_path / "bad.zip")
    with zipfile.ZipFile(tmp_path / "sizes.zip", "w") as archive:
        for i, size in enumerate((8, 9)):
            png = io.BytesIO()
            Image.fromarray(np.zeros((size, size), np.uint8)).save(png, format="PNG")
            archive.writestr(f"A/character01/01_0{i}.png", png.getvalue())
    with pytest.raises(DataError, match="sizes.zip:A/character01/01_01.png: 9 x 9 pixels, the first drawing has 8 x 8"):
        load_omniglot(tmp_path / "sizes.zip")


def test_the_shared_subset_loads_when_present():
    path = Path("../shared/data/omniglot/images_background_small1.zip")
    if not path.exists():
        pytest.skip("no shared Omniglot copy on this machine")
    images, labels, classes = load_omniglot(path)
    assert images.shape == (2720, 1, 105, 105) and len(classes) == 136
    assert labels.bincount().unique().tolist() == [20]  # 20 drawers per character
