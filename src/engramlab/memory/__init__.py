"""The memory toolbox: six kinds of neural memory behind one interface (:class:`Memory`).

=============  ===============================  =========================================
kind           module                           what it remembers
=============  ===============================  =========================================
``lstm/gru``   :mod:`.recurrent`                working memory: a state vector, rewritten
``attention``  :mod:`.attention`                associative memory over the window (soft RAM),
                                                optional persistent vectors
``memn2n``     :mod:`.memn2n`                   multi-hop reads of earlier inputs (MemN2N)
``ntm``        :mod:`.ntm`                      an addressable matrix read and written by heads
``knn``        :mod:`.knn`                      an episodic store of every earlier key/value,
                                                searched with FAISS (Memorizing Transformers)
``xl``         :mod:`.xl`                       the previous window's states (Transformer-XL)
=============  ===============================  =========================================

Each module declares its kind once, next to its class (a :class:`MemoryKind`: name, class, options,
traits, plot colour), and :data:`MEMORY_KINDS` lists them. Everything else is derived from that
list: the ``model.memory`` values and ``model.*`` keys, the positions and heads rules, the
experiments' budget matching, the leaderboard's columns and the plots' colours. Adding a kind is
one new file and one line here (``docs/memory.md``, "Adding a kind of memory").

``build_memory(kind, d_model, **options)`` makes one; ``engramlab.models.sequence.MemoryModel``
stacks them into a sequence model chosen by config.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from engramlab.memory.base import Memory, MemoryKind, detach_state, map_state

# The registry: one line per module that declares kinds (its ``MEMORY_KINDS``), in the leaderboard's
# order: working memory first, then by reach.
KIND_MODULES = (
    "recurrent",  # lstm, gru
    "attention",
    "memn2n",
    "ntm",
    "knn",
    "xl",
)


def gather(modules: tuple[str, ...]) -> dict[str, MemoryKind]:
    """name -> kind of every kind the ``modules`` (of this package) declare, in their order."""
    return {kind.name: kind for module in modules for kind in import_module(f"engramlab.memory.{module}").MEMORY_KINDS}


MEMORY_KINDS = gather(KIND_MODULES)
KINDS = tuple(MEMORY_KINDS)

__all__ = ["KINDS", "KIND_MODULES", "MEMORY_KINDS", "Memory", "MemoryKind", "build_memory", "detach_state", "map_state"]


def build_memory(kind: str, d_model: int, **options: Any) -> Memory:
    """A memory of the given kind; ``options`` are the kind's constructor arguments."""
    if kind not in MEMORY_KINDS:
        raise ValueError(f"unknown memory kind '{kind}' (allowed: {', '.join(MEMORY_KINDS)})")
    return MEMORY_KINDS[kind].build(d_model, **options)
