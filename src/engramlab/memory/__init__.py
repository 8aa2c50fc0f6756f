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

``build_memory(kind, d_model, **options)`` makes one; ``engramlab.models.sequence.MemoryModel``
stacks them into a sequence model chosen by config.
"""

from __future__ import annotations

from typing import Any

from engramlab.memory.base import Memory, detach_state, map_state

KINDS = ("lstm", "gru", "attention", "memn2n", "ntm", "knn", "xl")

__all__ = ["KINDS", "Memory", "build_memory", "detach_state", "map_state"]


def build_memory(kind: str, d_model: int, **options: Any) -> Memory:
    """A memory of the given kind; ``options`` are the kind's constructor arguments."""
    if kind in ("lstm", "gru"):
        from engramlab.memory.recurrent import Recurrent

        return Recurrent(d_model, cell=kind)
    if kind == "attention":
        from engramlab.memory.attention import Attention

        return Attention(d_model, **options)
    if kind == "memn2n":
        from engramlab.memory.memn2n import MemN2NLayer

        return MemN2NLayer(d_model, **options)
    if kind == "ntm":
        from engramlab.memory.ntm import NTM

        return NTM(d_model, **options)
    if kind == "knn":
        from engramlab.memory.knn import KNNAttention

        return KNNAttention(d_model, **options)
    if kind == "xl":
        from engramlab.memory.xl import XLAttention

        return XLAttention(d_model, **options)
    raise ValueError(f"unknown memory kind '{kind}' (allowed: {', '.join(KINDS)})")
