"""Episodic kNN memory: a FAISS store of earlier (key, value) pairs, and the Memorizing-Transformer layer.

Wu, Rabe, Hutchins & Szegedy 2022, "Memorizing Transformers", arXiv 2203.08913. One attention
layer keeps the (key, value) pairs of every earlier window of the same document in an external,
**non-differentiable** memory. Each query of the current window attends locally (ordinary causal
attention over the window) and, in parallel, to its top-k nearest keys in the memory; a learned
per-head gate mixes the two (§3.2)::

    local     = softmax(q K_window^T, causal) V_window
    retrieved = softmax(q K_topk^T) V_topk                 K_topk, V_topk: kNN lookup, no gradient
    out       = local · (1 − g) + retrieved · g,   g = sigmoid(b_head)

After the window, its keys and values join the memory (detached: no gradient ever flows into
the memory, which is what makes a memory of hundreds of thousands of entries affordable).
Every sequence of the batch and every head has its own memory (§3), cleared at document
boundaries (:meth:`KNNAttention.reset`).

Two classes:

- :class:`KNNStore` — the memory: B × H independent FAISS indexes (one per sequence and head) of
  L2-normalised keys, searched by inner product (= cosine similarity), with the values and a
  copy of the keys in torch ring buffers. ``add``, ``search``, ``clear``, ``save`` / ``load``.
- :class:`KNNAttention` — the layer, behind the one :class:`~engramlab.memory.base.Memory`
  interface; its state is the :class:`KNNStore` (mutated in place and returned).

Choices the paper leaves open, and deviations from it:

- **Normalised queries and keys everywhere.** The paper normalises keys and queries so that old
  memories (written by an earlier version of the weights) stay comparable with new ones. Here
  the local attention uses the same normalised q, k with a learned per-head temperature
  (``logit_scale``, initialised to 10), so the kNN search by inner product returns exactly the
  k memories with the highest attention logits, and ``retrieval=False`` is the same layer minus
  the memory (the windowed-transformer baseline).
- **No Transformer-XL cache**: the local attention sees the current window only; everything
  older than the window is reached through the kNN memory.
- **Empty memory**: a query with no stored neighbour (first window, or just after ``reset``) gets
  gate 0, so its output is exactly the local attention; with fewer than k neighbours the softmax
  runs over the valid ones only.
- **Capacity** (``memory_capacity``): first in, first out — when a sequence's memory is full, its
  oldest entries are dropped (the paper's memory of "recent" pairs). ``None`` keeps everything.
- **Index kinds**: ``flat`` is exact (``IndexFlatIP``); ``hnsw`` is approximate
  (``IndexHNSWFlat`` with the inner-product metric); ``ivf`` is approximate (``IndexIVFFlat``)
  and needs training: it searches exactly until the store holds ``train_size`` entries, then
  trains one coarse quantiser per head on the entries of all sequences, and keeps it (also
  across ``clear``). See :class:`KNNStore` for the options.

Cost: with the memory in one small layer, exact top-k search of every query dominates the
extra training time; graph (``hnsw``) insertion only pays off for memories far larger than one
sequence's. Measured slowdowns and search rates: ``docs/memory.md`` (kNN memory at scale), from
``benchmarks/knn_scale.py``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engramlab.errors import ConfigError, DataError, EngramError
from engramlab.memory.base import HeadsOptions, Memory, MemoryKind
from engramlab.threads import thread_count

IndexKind = Literal["flat", "hnsw", "ivf", "torch"]
INDEX_KINDS = get_args(IndexKind)
# The options of each index kind and their defaults (see KNNStore and benchmarks/knn_scale.py).
INDEX_OPTIONS: dict[str, dict[str, int | None]] = {
    "flat": {},
    "hnsw": {"m": 32, "ef_construction": 40, "ef_search": 128},
    "ivf": {"nlist": 64, "nprobe": 8, "train_size": None},  # train_size None: 39 × nlist (FAISS's minimum)
    "torch": {},
}
FILE_FORMAT = "engramlab.KNNStore/1"
INITIAL_LOGIT_SCALE = 10.0  # cosine logits in [-1, 1] need a temperature; learned per head from here


def faiss_threads(threads: int | None):
    """Run FAISS calls with ``threads`` OpenMP threads (None: unchanged), restoring the setting after.

    A store of B × H memories makes many small FAISS calls (one window of queries each). Inside a
    training loop, FAISS's OpenMP threads then compete with PyTorch's (the two wheels ship separate
    OpenMP runtimes, each spinning while idle): on a shared 2-core machine, right after a torch
    matmul, 64 searches of 64 queries in 512 keys took 770 ms with 2 FAISS threads and 43 ms with
    one. Large single indexes (batch 1, one head) keep FAISS's own threading.
    """
    return thread_count(faiss.omp_get_max_threads, faiss.omp_set_num_threads, threads)


class KNNShapeError(EngramError, ValueError):
    """A tensor given to a :class:`KNNStore` has the wrong shape (the message names expected and given)."""


class Neighbours(NamedTuple):
    """What :meth:`KNNStore.search` returns, for queries (B, H, T, dim) and top-k.

    ``keys`` (B, H, T, k, dim) and ``values`` (B, H, T, k, value_dim): zero where not ``valid``;
    ``scores`` (B, H, T, k): cosine similarity, best first, ``-inf`` where not ``valid``;
    ``valid`` (B, H, T, k): False where the memory held fewer than k entries to return.
    """

    keys: Tensor
    values: Tensor
    scores: Tensor
    valid: Tensor


def resolve_index_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of index ``kind`` with defaults filled in; unknown kinds and options raise ConfigError."""
    if kind not in INDEX_KINDS:
        raise ConfigError(f"kNN memory index '{kind}' is unknown (allowed: {', '.join(INDEX_KINDS)})")
    allowed = INDEX_OPTIONS[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        names = ", ".join(allowed) or "none"
        raise ConfigError(f"kNN memory index '{kind}' has no option {', '.join(unknown)} (allowed: {names})")
    merged = {**allowed, **options}
    for name, value in merged.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"kNN memory option {name} = {value!r} must be a positive integer")
    if kind == "ivf":
        merged["train_size"] = merged["train_size"] or 39 * merged["nlist"]
        if merged["train_size"] < merged["nlist"]:
            raise ConfigError(f"kNN memory option train_size = {merged['train_size']} must be >= nlist")
    return merged


class KNNStore:
    """``KNNStore(dim, heads=1, batch_size=1, index="flat", capacity=None, value_dim=None, device=None, **options)``.

    A memory of (key, value) pairs for ``batch_size`` independent sequences × ``heads``, written
    without gradient. Keys (``dim``) are L2-normalised on ``add``, queries on ``search``, and the
    search is by inner product, so scores are cosine similarities. Values (``value_dim``, default
    ``dim``) are kept as given.

    Index kinds and their ``options``:

    - ``"flat"``: ``faiss.IndexFlatIP``, exact. Cost per query ∝ entries.
    - ``"hnsw"``: ``faiss.IndexHNSWFlat`` with ``METRIC_INNER_PRODUCT``, approximate. ``m`` (graph
      degree, 32), ``ef_construction`` (40, the FAISS default), ``ef_search`` (128; raised to k
      when smaller). On normalised vectors L2 distance would rank identically
      (‖q − k‖² = 2 − 2 q·k); inner product is used so the scores are the cosine similarities.
    - ``"ivf"``: ``faiss.IndexIVFFlat`` with ``nlist`` lists (64), ``nprobe`` probed per query (8),
      approximate. IVF needs a trained coarse quantiser: until the store (all sequences together)
      holds ``train_size`` entries (default 39 × nlist, below which FAISS's k-means warns) every
      memory is an exact ``IndexFlatIP``; at that point one quantiser per head is trained on all
      stored keys of that head and every memory is rebuilt as an IVF index. The training is kept
      for the life of the store, across ``clear`` (keys of a new document come from the same layer).
    - ``"torch"``: no FAISS index; exact search of every sequence and head at once, one batched
      matrix product with the key buffers and ``torch.topk``. For the small per-sequence memories
      of training it avoids B × H FAISS calls; cost per query ∝ entries, like ``flat``.

    ``capacity`` (entries per sequence and head; None: unbounded) drops the oldest entries first.
    ``flat`` memories drop them at once; HNSW graphs cannot delete nodes, so ``hnsw`` and trained
    ``ivf`` memories hide dropped entries from search (a FAISS ID selector) and are rebuilt from
    the live entries once the hidden ones are as many as the live ones: at most twice the
    capacity in the index, and each entry is inserted about twice on average.

    Storage: keys and values live in ring buffers (B, H, slots, dim) on ``device`` (the FAISS
    indexes keep their own copy of the keys, on the CPU); the entry with per-sequence id ``i``
    sits in slot ``i % slots``. A sequence's live entries have ids ``first[b] ≤ i < next[b]``;
    index position ``p`` of sequence ``b`` holds id ``offset[b] + p``.
    """

    def __init__(
        self,
        dim: int,
        heads: int = 1,
        batch_size: int = 1,
        index: str = "flat",
        capacity: int | None = None,
        value_dim: int | None = None,
        device: torch.device | str | None = None,
        **options: Any,
    ):
        if min(dim, heads, batch_size) < 1 or (value_dim is not None and value_dim < 1):
            raise ConfigError(
                f"KNNStore sizes must be >= 1: dim={dim}, heads={heads}, batch_size={batch_size}, value_dim={value_dim}"
            )
        if capacity is not None and capacity < 1:
            raise ConfigError(f"kNN memory capacity = {capacity} must be >= 1 or null (unbounded)")
        self.dim, self.heads, self.batch_size = dim, heads, batch_size
        self.value_dim = value_dim or dim
        self.kind, self.capacity = index, capacity
        self.options = resolve_index_options(index, options)
        self.device = torch.device(device or "cpu")
        self.ivf_quantisers: list[faiss.Index] | None = None  # trained empty IVF index per head (ivf only)
        self.indexes = [[self.new_index(h) for h in range(heads)] for _ in range(batch_size)]
        self.next = np.zeros(batch_size, dtype=np.int64)  # id the next entry of the sequence gets
        self.first = np.zeros(batch_size, dtype=np.int64)  # oldest live id
        self.offset = np.zeros(batch_size, dtype=np.int64)  # id at index position 0
        self.keys = torch.zeros(batch_size, heads, 0, dim, device=self.device)
        self.values = torch.zeros(batch_size, heads, 0, self.value_dim, device=self.device)

    # -- sizes ------------------------------------------------------------------------------------

    @property
    def sizes(self) -> Tensor:
        """Live entries per sequence (B,), the same for every head."""
        return torch.from_numpy(self.next - self.first)

    def __len__(self) -> int:
        """Live (key, value) pairs in all sequences and heads."""
        return int((self.next - self.first).sum()) * self.heads

    @property
    def slots(self) -> int:
        return self.keys.shape[2]

    @property
    def threads_per_call(self) -> int | None:
        """One OpenMP thread per FAISS call when there are many small memories (see :func:`faiss_threads`)."""
        return 1 if self.batch_size * self.heads > 1 else None

    @property
    def trained(self) -> bool:
        """Whether the memories are IVF indexes yet (always True for flat and hnsw)."""
        return self.kind != "ivf" or self.ivf_quantisers is not None

    def __repr__(self) -> str:
        capacity = "unbounded" if self.capacity is None else self.capacity
        return (
            f"KNNStore(dim={self.dim}, heads={self.heads}, batch_size={self.batch_size}, index={self.kind!r}, "
            f"capacity={capacity}, entries per sequence={self.sizes.tolist()})"
        )

    # -- FAISS indexes ----------------------------------------------------------------------------

    def new_index(self, head: int) -> faiss.Index | None:
        """An empty memory for one sequence and ``head`` (None for ``torch``: the buffers are the index)."""
        if self.kind == "torch":
            return None
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.options["m"], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.options["ef_construction"]
            return index
        if self.kind == "ivf" and self.ivf_quantisers is not None:
            return faiss.clone_index(self.ivf_quantisers[head])
        return faiss.IndexFlatIP(self.dim)  # flat, and ivf before training (exact fallback)

    def search_parameters(self, row: int, k: int) -> tuple[faiss.SearchParameters | None, faiss.IDSelector | None]:
        """Per-search options of one sequence: ef/nprobe, and a filter that hides dropped entries.

        The selector is returned too: SWIG does not keep it alive through the parameters object.
        """
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.options["ef_search"], k))
        elif self.kind == "ivf" and self.trained:
            params = faiss.SearchParametersIVF(nprobe=self.options["nprobe"])
        else:
            return None, None  # flat indexes never hold dropped entries
        hidden = int(self.first[row] - self.offset[row])  # dropped entries still in the index: positions < hidden
        selector = faiss.IDSelectorRange(hidden, np.iinfo(np.int64).max) if hidden else None
        if selector is not None:
            params.sel = selector
        return params, selector

    # -- shapes -----------------------------------------------------------------------------------

    def check_shape(self, method: str, name: str, tensor: Tensor, last_dim: int, time: int | None = None) -> None:
        """One-line KNNShapeError unless ``tensor`` is (batch_size, heads, time, last_dim)."""
        if tensor.dim() != 4 or tensor.shape[:2] != (self.batch_size, self.heads) or tensor.shape[3] != last_dim:
            shown = f"(batch {self.batch_size}, heads {self.heads}, time, {last_dim})"
            raise KNNShapeError(f"KNNStore.{method}: {name} have shape {tuple(tensor.shape)}, expected {shown}")
        if time is not None and tensor.shape[2] != time:
            raise KNNShapeError(f"KNNStore.{method}: {name} have {tensor.shape[2]} steps, the keys {time}")

    # -- writing ----------------------------------------------------------------------------------

    @torch.no_grad()
    def add(self, keys: Tensor, values: Tensor) -> None:
        """Append (key, value) pairs, keys/values (B, H, T, dim/value_dim), to every sequence's memory."""
        self.check_shape("add", "keys", keys, self.dim)
        self.check_shape("add", "values", values, self.value_dim, time=keys.shape[2])
        keys = F.normalize(keys.detach().float(), dim=-1).to(self.device)
        values = values.detach().float().to(self.device)
        if self.capacity is not None and keys.shape[2] > self.capacity:
            keys, values = keys[:, :, -self.capacity :], values[:, :, -self.capacity :]  # the rest would drop at once
        steps = keys.shape[2]
        if steps == 0:
            return
        live_after = self.next - self.first + steps
        if self.capacity is not None:
            live_after = np.minimum(live_after, self.capacity)
        self.reserve_slots(int(live_after.max()))
        self.write_buffers(self.next[:, None] + np.arange(steps), keys, values)

        self.next += steps
        if self.capacity is not None:
            self.first = np.maximum(self.first, self.next - self.capacity)
        if self.kind == "torch":
            self.offset[:] = self.first  # no index to keep in step with
            return
        keys_np = keys.cpu().numpy()
        with faiss_threads(self.threads_per_call):
            for row in range(self.batch_size):
                for head in range(self.heads):
                    self.indexes[row][head].add(keys_np[row, head])
                self.drop_old_entries(row)
        self.train_ivf_when_ready()

    def reserve_slots(self, needed: int) -> None:
        """Grow the ring buffers to at least ``needed`` slots (doubling), moving live entries to their new slots."""
        if needed <= self.slots:
            return
        slots = max(needed, 2 * self.slots)
        if self.capacity is not None:
            slots = min(slots, self.capacity)
        keys = self.keys.new_zeros(self.batch_size, self.heads, slots, self.dim)
        values = self.values.new_zeros(self.batch_size, self.heads, slots, self.value_dim)
        if self.slots:
            for row in range(self.batch_size):
                ids = torch.arange(int(self.first[row]), int(self.next[row]), device=self.device)
                keys[row].index_copy_(1, ids % slots, self.keys[row].index_select(1, ids % self.slots))
                values[row].index_copy_(1, ids % slots, self.values[row].index_select(1, ids % self.slots))
        self.keys, self.values = keys, values

    def write_buffers(self, ids: np.ndarray, keys: Tensor, values: Tensor) -> None:
        """Put entries with ids (B, T) into their ring-buffer slots, all sequences at once."""
        slots = torch.from_numpy(ids % self.slots).to(self.device).unsqueeze(1)  # (B, 1, T)
        rows = torch.arange(self.batch_size, device=self.device).view(-1, 1, 1)
        heads = torch.arange(self.heads, device=self.device).view(1, -1, 1)
        self.keys[rows, heads, slots] = keys
        self.values[rows, heads, slots] = values

    def live_keys(self, row: int) -> np.ndarray:
        """The live keys of one sequence, oldest first: (H, live, dim) float32 for FAISS."""
        ids = torch.arange(int(self.first[row]), int(self.next[row]), device=self.device)
        return self.keys[row, :, ids % max(self.slots, 1)].cpu().numpy()

    def rebuild(self, row: int) -> None:
        """Re-create one sequence's indexes from its live entries (index position 0 = oldest live id)."""
        keys = self.live_keys(row)
        for head in range(self.heads):
            index = self.indexes[row][head]
            index.reset()  # keeps an IVF index's training
            if keys.shape[1]:
                index.add(np.ascontiguousarray(keys[head]))
        self.offset[row] = self.first[row]

    def drop_old_entries(self, row: int) -> None:
        """Remove entries beyond the capacity from one sequence's indexes (see the class docstring)."""
        hidden = int(self.first[row] - self.offset[row])
        if hidden == 0:
            return
        if not isinstance(self.indexes[row][0], faiss.IndexFlat):
            if hidden >= int(self.next[row] - self.first[row]):
                self.rebuild(row)  # graph/IVF: hide dropped entries until they are as many as the live ones
            return
        dropped = faiss.IDSelectorRange(0, hidden)  # flat: delete now (one memmove), positions stay = ids - offset
        for head in range(self.heads):
            self.indexes[row][head].remove_ids(dropped)
        self.offset[row] = self.first[row]

    def train_ivf_when_ready(self) -> None:
        """IVF: once enough entries exist, train one quantiser per head on them and rebuild every memory."""
        if self.trained or len(self) // self.heads < self.options["train_size"]:
            return
        per_row = [self.live_keys(row) for row in range(self.batch_size)]
        self.ivf_quantisers = []
        for head in range(self.heads):
            index = faiss.IndexIVFFlat(
                faiss.IndexFlatIP(self.dim), self.dim, self.options["nlist"], faiss.METRIC_INNER_PRODUCT
            )
            index.train(np.ascontiguousarray(np.concatenate([keys[head] for keys in per_row])))
            self.ivf_quantisers.append(index)
        self.indexes = [[self.new_index(h) for h in range(self.heads)] for _ in range(self.batch_size)]
        with faiss_threads(self.threads_per_call):
            for row in range(self.batch_size):
                self.rebuild(row)

    def clear(self, rows: Tensor | list[int] | np.ndarray) -> None:
        """Empty the memories of some sequences (new documents): a boolean mask (B,) or row indices."""
        rows = torch.as_tensor(rows)
        if rows.dtype == torch.bool:
            if rows.shape != (self.batch_size,):
                raise KNNShapeError(
                    f"KNNStore.clear: mask has shape {tuple(rows.shape)}, expected ({self.batch_size},)"
                )
            rows = rows.nonzero().flatten()
        for row in rows.cpu().flatten().tolist():
            if not -self.batch_size <= row < self.batch_size:
                raise KNNShapeError(f"KNNStore.clear: row {row} is outside the batch of {self.batch_size}")
            row %= self.batch_size
            for index in self.indexes[row]:
                if index is not None:
                    index.reset()
            self.first[row] = self.offset[row] = self.next[row]
            self.keys[row] = 0.0  # nothing of the old document survives, even in unused slots
            self.values[row] = 0.0

    # -- reading ----------------------------------------------------------------------------------

    @torch.no_grad()
    def search(self, queries: Tensor, k: int) -> Neighbours:
        """The ``k`` stored keys nearest to every query (B, H, T, dim), per sequence and head; see :class:`Neighbours`.

        One FAISS call per (sequence, head) for all T queries; nothing loops over queries in Python.
        """
        self.check_shape("search", "queries", queries, self.dim)
        if k < 1:
            raise ConfigError(f"KNNStore.search: k = {k} must be >= 1")
        batch, heads, steps = queries.shape[:3]
        if self.kind == "torch":
            return self.search_buffers(queries, k)
        queries = F.normalize(queries.detach().float(), dim=-1).cpu().numpy()
        scores = np.full((batch, heads, steps, k), -np.inf, dtype=np.float32)
        labels = np.full((batch, heads, steps, k), -1, dtype=np.int64)
        with faiss_threads(self.threads_per_call):
            for row in range(batch):
                if steps == 0 or self.next[row] == self.first[row]:
                    continue
                params, _selector = self.search_parameters(row, k)
                for head in range(heads):
                    self.indexes[row][head].search(
                        queries[row, head], k, params=params, D=scores[row, head], I=labels[row, head]
                    )
        return self.gather(torch.from_numpy(scores), torch.from_numpy(labels))

    def search_buffers(self, queries: Tensor, k: int) -> Neighbours:
        """Exact search of every sequence and head at once: one batched matrix product with the key
        buffers and ``torch.topk`` (the ``torch`` index). For the small per-sequence memories of
        training this beats one FAISS call per (sequence, head), whose overhead dominates."""
        queries = F.normalize(queries.detach().float(), dim=-1).to(self.device)
        batch, heads, steps = queries.shape[:3]
        if self.slots == 0:
            return self.gather(
                torch.full((batch, heads, steps, k), float("-inf")), torch.full((batch, heads, steps, k), -1)
            )
        # slot s holds a live entry iff (s - first) mod slots < live count (ids first .. next-1 sit at id % slots)
        slot = torch.arange(self.slots, device=self.device)
        first = torch.from_numpy(self.first).to(self.device).unsqueeze(1)
        live = torch.from_numpy(self.next - self.first).to(self.device).unsqueeze(1)
        is_live = (slot - first).remainder(self.slots) < live  # (B, slots)
        scores = queries @ self.keys.transpose(-1, -2)  # (B, H, T, slots)
        scores = scores.masked_fill(~is_live[:, None, None, :], float("-inf"))
        top, slots = scores.topk(min(k, self.slots), dim=-1)
        # express the slots as index positions (id - offset), the convention of ``gather``
        ids = first.view(-1, 1, 1, 1) + (slots - first.view(-1, 1, 1, 1)).remainder(self.slots)
        labels = (ids - torch.from_numpy(self.offset).to(self.device).view(-1, 1, 1, 1)).masked_fill(
            top == float("-inf"), -1
        )
        if top.shape[-1] < k:  # fewer slots than k: pad with "none"
            pad = k - top.shape[-1]
            top = F.pad(top, (0, pad), value=float("-inf"))
            labels = F.pad(labels, (0, pad), value=-1)
        return self.gather(top.cpu(), labels.cpu())

    def gather(self, scores: Tensor, labels: Tensor) -> Neighbours:
        """Turn FAISS results (index positions, -1 for none) into keys and values from the buffers.

        One ``index_select`` into the flattened buffers (advanced indexing with four broadcast
        index tensors was 4x slower), then a multiplication by the mask zeroes the invalid rows.
        """
        batch, heads, steps, k = labels.shape
        valid = labels >= 0
        scores = scores.masked_fill(~valid, float("-inf")).to(self.device)
        if self.slots == 0:
            keys = torch.zeros(batch, heads, steps, k, self.dim, device=self.device)
            values = torch.zeros(batch, heads, steps, k, self.value_dim, device=self.device)
            return Neighbours(keys, values, scores, valid.to(self.device))
        ids = torch.from_numpy(self.offset).view(-1, 1, 1, 1) + labels.clamp(min=0)
        memory = torch.arange(batch * heads).view(batch, heads, 1, 1)  # which (sequence, head) buffer
        rows = (memory * self.slots + ids % self.slots).flatten().to(self.device)
        valid = valid.to(self.device)
        mask = valid.unsqueeze(-1).to(self.keys.dtype)
        keys = self.keys.reshape(-1, self.dim).index_select(0, rows).view(batch, heads, steps, k, self.dim) * mask
        values = self.values.reshape(-1, self.value_dim).index_select(0, rows).view(*keys.shape[:4], -1) * mask
        return Neighbours(keys, values, scores, valid)

    # -- files ------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the store to one file (an .npz archive), atomically: a temporary file, then a rename.

        The FAISS indexes are stored as ``faiss.serialize_index`` bytes (``write_index`` into memory),
        next to the key/value buffers, the id counters and the settings.
        """
        path = Path(path)
        meta = {
            "format": FILE_FORMAT,
            "dim": self.dim,
            "value_dim": self.value_dim,
            "heads": self.heads,
            "batch_size": self.batch_size,
            "index": self.kind,
            "capacity": self.capacity,
            "options": dict(self.options),
            "trained": self.ivf_quantisers is not None,
        }
        arrays = {
            "meta": np.array(json.dumps(meta)),
            "next": self.next,
            "first": self.first,
            "offset": self.offset,
            "keys": self.keys.cpu().numpy(),
            "values": self.values.cpu().numpy(),
        }
        for row in range(self.batch_size):
            for head in range(self.heads):
                if self.indexes[row][head] is not None:
                    arrays[f"index_{row}_{head}"] = faiss.serialize_index(self.indexes[row][head])
        for head, quantiser in enumerate(self.ivf_quantisers or []):
            arrays[f"quantiser_{head}"] = faiss.serialize_index(quantiser)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, **arrays)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str | None = None) -> KNNStore:
        """Read a store written by :meth:`save`; a missing or damaged file raises :class:`DataError`."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"kNN store file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as archive:
                return cls.from_arrays(archive, device)
        except Exception as error:  # any failure to parse means the file is not a (complete) store
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise DataError(f"kNN store file {path} is corrupt or not a KNNStore file: {reason}") from error

    @classmethod
    def from_arrays(cls, archive: Any, device: torch.device | str | None) -> KNNStore:
        meta = json.loads(str(archive["meta"]))
        if meta.get("format") != FILE_FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, expected {FILE_FORMAT!r}")
        options = dict(meta["options"])
        store = cls(
            meta["dim"],
            heads=meta["heads"],
            batch_size=meta["batch_size"],
            index=meta["index"],
            capacity=meta["capacity"],
            value_dim=meta["value_dim"],
            device=device,
            **options,
        )
        batch, heads = store.batch_size, store.heads
        keys, values = archive["keys"], archive["values"]
        if keys.shape[:2] != (batch, heads) or keys.shape[3] != store.dim or values.shape[:3] != keys.shape[:3]:
            raise ValueError(f"key/value buffers of shape {keys.shape}/{values.shape} do not match the settings")
        store.keys = torch.from_numpy(keys.astype(np.float32)).to(store.device)
        store.values = torch.from_numpy(values.astype(np.float32)).to(store.device)
        store.next, store.first, store.offset = (archive[name].astype(np.int64) for name in ("next", "first", "offset"))
        if meta["trained"]:
            store.ivf_quantisers = [faiss.deserialize_index(archive[f"quantiser_{h}"]) for h in range(heads)]
        if store.kind == "torch":
            return store  # the buffers are the index
        store.indexes = [
            [faiss.deserialize_index(archive[f"index_{row}_{head}"]) for head in range(heads)] for row in range(batch)
        ]
        for row in range(batch):
            for head, index in enumerate(store.indexes[row]):
                if index.d != store.dim or index.ntotal != store.next[row] - store.offset[row]:
                    raise ValueError(f"index {row}/{head} holds {index.ntotal} keys of dim {index.d}, inconsistent")
        return store


# -------------------------------------------------------------------------------------------------
# the layer


class KNNAttention(Memory):
    """``KNNAttention(d_model, heads=4, top_k=32, memory_index="flat", memory_capacity=None, retrieval=True)``.

    Causal multi-head attention over the window, plus (``retrieval=True``) attention over the
    ``top_k`` nearest earlier (key, value) pairs of the same sequence, mixed by a learned per-head
    gate (Wu et al. 2022, §3.2); see the module docstring. ``forward(x, state) -> (y, state)``: the
    state is the :class:`KNNStore` (None: empty memory), mutated in place — the window's keys
    and values are added after it is read — and returned. ``retrieval=False`` is the
    windowed-attention baseline: no store, the state stays None. Extra keyword arguments are
    the index options (see :class:`KNNStore`).
    """

    def __init__(
        self,
        d_model: int,
        heads: int = 4,
        top_k: int = 32,
        memory_index: str = "flat",
        memory_capacity: int | None = None,
        retrieval: bool = True,
        **index_options: Any,
    ):
        super().__init__()
        if heads < 1 or d_model % heads:
            raise ConfigError(f"kNN attention: d_model = {d_model} must be a multiple of heads = {heads}")
        if top_k < 1:
            raise ConfigError(f"kNN attention: top_k = {top_k} must be >= 1")
        if memory_capacity is not None and memory_capacity < 1:
            raise ConfigError(f"kNN attention: memory_capacity = {memory_capacity} must be >= 1 or null")
        resolve_index_options(memory_index, index_options)  # fail at construction, not at the first forward
        self.d_model, self.heads, self.head_dim = d_model, heads, d_model // heads
        self.top_k, self.memory_index, self.memory_capacity = top_k, memory_index, memory_capacity
        self.index_options, self.retrieval = dict(index_options), retrieval
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.log_logit_scale = nn.Parameter(torch.full((heads,), math.log(INITIAL_LOGIT_SCALE)))
        # the gate bias b_head, sigmoid(0) = 0.5; no parameter without retrieval (it would be unused, e.g. under DDP)
        self.gate_bias = nn.Parameter(torch.zeros(heads)) if retrieval else None

    def extra_repr(self) -> str:
        capacity = "unbounded" if self.memory_capacity is None else self.memory_capacity
        memory = f"top_k={self.top_k}, index={self.memory_index}, capacity={capacity}" if self.retrieval else "off"
        return f"d_model={self.d_model}, heads={self.heads}, retrieval={memory}"

    def new_store(self, batch_size: int, device: torch.device) -> KNNStore:
        return KNNStore(
            self.head_dim,
            heads=self.heads,
            batch_size=batch_size,
            index=self.memory_index,
            capacity=self.memory_capacity,
            device=device,
            **self.index_options,
        )

    def split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries and keys normalised (unit length), values as projected: each (B, H, T, head_dim)."""
        batch, steps, _ = x.shape
        q, k, v = self.qkv(x).view(batch, steps, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v

    def attend_memory(self, q_unit: Tensor, q_scaled: Tensor, store: KNNStore) -> tuple[Tensor, Tensor]:
        """Attention over each query's top-k stored pairs -> (retrieved (B, H, T, hd), found (B, H, T, 1)).

        The search ranks by cosine similarity; the logits are recomputed here from the retrieved
        keys so the query receives a gradient (the memory itself has none). Invalid neighbours get
        the most negative logit, so they get zero weight; a query with none at all gets uniform
        weight on zero vectors (a zero read) and ``found`` = 0, which closes its gate.
        """
        memory = store.search(q_unit, self.top_k)
        keys, values = memory.keys.to(q_scaled.dtype), memory.values.to(q_scaled.dtype)
        logits = (q_scaled.unsqueeze(-2) @ keys.transpose(-1, -2)).squeeze(-2)  # (B, H, T, k)
        logits = logits.masked_fill(~memory.valid, torch.finfo(logits.dtype).min)
        retrieved = (logits.softmax(dim=-1).unsqueeze(-2) @ values).squeeze(-2)
        return retrieved, memory.valid.any(dim=-1, keepdim=True).to(q_scaled.dtype)

    def forward(self, x: Tensor, state: KNNStore | None = None) -> tuple[Tensor, KNNStore | None]:
        batch, steps, _ = x.shape
        q, k, v = self.split_heads(x)
        q_scaled = q * self.log_logit_scale.exp().view(1, -1, 1, 1)
        out = F.scaled_dot_product_attention(q_scaled, k, v, is_causal=True, scale=1.0)
        if self.retrieval:
            store = state if state is not None else self.new_store(batch, x.device)
            if store.batch_size != batch or store.dim != self.head_dim or store.heads != self.heads:
                raise KNNShapeError(
                    f"kNN attention: state is a store for batch {store.batch_size} × {store.heads} heads × dim "
                    f"{store.dim}, the input needs batch {batch} × {self.heads} heads × dim {self.head_dim}"
                )
            retrieved, found = self.attend_memory(q, q_scaled, store)
            gate = torch.sigmoid(self.gate_bias).view(1, -1, 1, 1) * found
            out = out * (1 - gate) + retrieved * gate
            store.add(k, v)  # after reading: a window never retrieves itself (causality)
            state = store
        else:
            state = None
        y = out.transpose(1, 2).reshape(batch, steps, self.d_model)
        return self.out(y), state

    def reset(self, state: KNNStore | None, done: Tensor) -> KNNStore | None:
        """Clear the memories of the sequences where ``done`` (B,) is True (document boundaries, §3)."""
        if state is not None:
            state.clear(done)
        return state


class KNNOptions(HeadsOptions):
    knn_layer: int = Field(-1, description="index of the layer with the kNN memory; the others are windowed attention")
    top_k: int = Field(32, ge=1, description="neighbours retrieved per query (knn)")
    memory_index: IndexKind = Field(
        "flat", description="index of the kNN memory: FAISS flat (exact), hnsw, ivf, or torch (exact, batched)"
    )
    memory_capacity: int | None = Field(None, ge=1, description="entries kept per sequence and head (knn); null: all")


# Memorizing Transformers put the kNN memory in one layer, the others attend within the window (§3); like
# attention it needs positions; retrieval settings can change after training (the store holds no weights)
KNN_KIND = MemoryKind(
    "knn",
    KNNAttention,
    color="tab:purple",
    options=KNNOptions,
    knows_order=False,
    layer_option="knn_layer",
    eval_options=("top_k", "memory_index", "memory_capacity"),
)
MEMORY_KINDS = (KNN_KIND,)  # what this module adds to engramlab.memory.MEMORY_KINDS
