"""A library's thread count, set for a block of code and given back after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def thread_count(get: Callable[[], int], set_to: Callable[[int], None], count: int | None) -> Iterator[None]:
    """Inside the block, ``set_to(count)`` (None: leave it); after it, the count ``get()`` gave before."""
    if count is None:
        yield
        return
    before = get()
    set_to(count)
    try:
        yield
    finally:
        set_to(before)
