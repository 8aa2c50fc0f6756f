"""The MNIST IDX reader on files written by the test: values, gzip or not, and one-line errors."""

import gzip

import pytest
import torch

from engramlab.errors import DataError
from engramlab.tasks.mnist import load_mnist


def idx(magic: int, dims: list[int], payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


def write(directory, images: bytes, labels: bytes, compress: bool = True):
    for stem, data in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        if compress:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)


@pytest.mark.parametrize("compress", [True, False])
def test_reads_images_scaled_to_one_and_their_labels(tmp_path, compress):
    pixels = bytes(range(2 * 2 * 3))
    write(tmp_path, idx(2051, [2, 2, 3], pixels), idx(2049, [2], bytes([7, 1])), compress)
    images, labels = load_mnist(tmp_path)
    assert images.shape == (2, 1, 2, 3) and labels.tolist() == [7, 1]
    torch.testing.assert_close(images[1, 0, 1, 2], torch.tensor(11 / 255))


def test_malformed_files_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte\\[.gz\\]: no such file"):
        load_mnist(tmp_path)
    write(tmp_path, idx(2051, [2, 2, 3], bytes(5)), idx(2049, [2], bytes(2)))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: holds 5 pixel bytes, the header says 12"):
        load_mnist(tmp_path)
    write(tmp_path, idx(2049, [2, 2, 3], bytes(12)), idx(2049, [2], bytes(2)))
    with pytest.raises(DataError, match="not an IDX file with magic number 2051"):
        load_mnist(tmp_path)
    write(tmp_path, idx(2051, [2, 2, 3], bytes(12)), idx(2049, [3], bytes(3)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: holds 3 labels, expected 2"):
        load_mnist(tmp_path)


def test_the_shared_test_set_loads_when_present():
    from pathlib import Path

    directory = Path("../shared/data/mnist")
    if not directory.exists():
        pytest.skip("no shared MNIST copy on this machine")
    images, labels = load_mnist(directory)
    assert images.shape == (10_000, 1, 28, 28) and labels.bincount().tolist()[:2] == [980, 1135]
