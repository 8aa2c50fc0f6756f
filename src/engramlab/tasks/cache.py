"""One cache for data sets read once per process."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


def data_cache(maxsize: int | None = None) -> Callable[[F], F]:
    """``functools.lru_cache`` whose builds run with the CPU as PyTorch's default device.

    Why: before a run trains, :func:`engramlab.engine.runner.check_fits_in_memory` builds every
    arm under ``torch.device("meta")``, which allocates nothing. A data set first read inside that
    context would be cached as meta tensors, which hold no data, and the run would fail at its
    first batch ("Cannot copy out of meta tensor"), as a resumed ``frozen`` run did: on resume
    nothing reads the data before that check."""

    def decorate(build: F) -> F:
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(build)
        def on_cpu(*args, **kwargs):
            with torch.device("cpu"):
                return build(*args, **kwargs)

        return on_cpu  # type: ignore[return-value]

    return decorate
