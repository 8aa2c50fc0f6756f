"""How the kNN memory scales: FAISS flat / HNSW / IVF and brute-force torch, and the training cost of retrieval.

    python benchmarks/knn_scale.py --out /tmp/knn_scale.json            # defaults: about 6-10 minutes on 2 cores

Part 1, search at scale. For each memory size N (``--sizes``), N random unit keys of ``--dim``
dimensions go into one :class:`engramlab.memory.knn.KNNStore` (batch 1, one head: one index)
per index kind, and into a torch tensor for the brute-force baseline. Measured:

- **add throughput** (vectors/s): ``KNNStore.add`` in chunks of ``--add-chunk``, i.e. normalising,
  copying into the value/key buffers and the FAISS add (for IVF including the k-means training,
  also reported on its own). For torch: normalising and copying into a preallocated tensor.
- **search latency per query**: one batched search of ``--queries`` queries for the top ``--k``,
  wall time / queries (best of ``--repeats``).
- **recall@k** against the exact top k (brute force): the fraction of returned entries whose
  score reaches the exact k-th best score (robust to ties).

HNSW: ``M`` = ``--hnsw-m``, ``efConstruction`` = ``--hnsw-ef-construction``; ``efSearch`` is swept
over ``--hnsw-ef-search`` and the table shows the smallest value reaching ``--target-recall``
(or the largest tried). IVF: ``nlist`` = ``--ivf-nlist`` (0: the power of two nearest √N), trained
by the store on its first ``39 × nlist`` entries or more; ``nprobe`` is swept over ``--ivf-nprobe``
the same way. All sweep points are in the JSON.

Data (an honest caveat: recall depends on it more than on anything else). Default: keys from a
mixture of ``--clusters`` Gaussian clusters on the unit sphere (spread ``--spread``), and queries
that are fresh draws from the same mixture (not copies of stored keys): attention keys are
clustered, and a query resembles some earlier keys without being one of them. Also run, for
``--uniform-sizes``: keys and queries uniform on the sphere, the hard case in 64 dimensions (the
nearest neighbours are barely nearer than a random key, so approximate indexes need much more
work for the same recall).

Part 2, training cost. A small model (embedding, two pre-norm blocks of attention + MLP, the
second attention a :class:`KNNAttention`, linear head) trains on random tokens: batch
``--train-batch``, ``--train-windows`` windows of ``--window`` tokens carrying the memory state,
d_model ``--d-model``, ``--heads`` heads, top-``--k``. Forward + backward time per step with
retrieval off (the windowed baseline, the same layer without memory) and on (for each of
``--train-indexes``), and where the time goes (FAISS search, FAISS add, the rest).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engramlab.engine.rundir import cpu_model, library_versions
from engramlab.memory.knn import KNNAttention, KNNStore


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show the module docstring as written, and every option's default."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    scale = parser.add_argument_group("search at scale")
    scale.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=[10_000, 100_000, 1_000_000],
        help="memory sizes N (keys in one index) with clustered keys; none: skip",
    )
    scale.add_argument(
        "--uniform-sizes",
        type=int,
        nargs="*",
        default=[10_000, 100_000],
        help="memory sizes N also run with uniform random keys and queries (the hard case)",
    )
    scale.add_argument("--dim", type=int, default=64, help="key dimension")
    scale.add_argument("--queries", type=int, default=1024, help="queries per batched search")
    scale.add_argument("--k", type=int, default=32, help="neighbours per query (also the layer's top_k)")
    scale.add_argument("--clusters", type=int, default=256, help="clusters of the clustered key distribution")
    scale.add_argument(
        "--spread",
        type=float,
        default=0.5,
        help="noise norm around a (unit) cluster centre before normalising; larger: harder",
    )
    scale.add_argument("--add-chunk", type=int, default=100_000, help="keys per KNNStore.add call")
    scale.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="timed searches per setting, the best is kept (only one when a search takes over 5 s)",
    )
    scale.add_argument("--hnsw-m", type=int, default=32, help="HNSW graph degree M")
    scale.add_argument("--hnsw-ef-construction", type=int, default=40, help="HNSW efConstruction (FAISS default 40)")
    scale.add_argument(
        "--hnsw-ef-search",
        type=int,
        nargs="+",
        default=[32, 64, 128, 256, 512],
        help="HNSW efSearch values swept (values below k act as k)",
    )
    scale.add_argument("--ivf-nlist", type=int, default=0, help="IVF lists; 0: the power of two nearest sqrt(N)")
    scale.add_argument(
        "--ivf-nprobe", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128], help="IVF nprobe values swept"
    )
    scale.add_argument(
        "--target-recall",
        type=float,
        default=0.9,
        help="the table shows the cheapest efSearch / nprobe reaching this recall@k",
    )
    scale.add_argument(
        "--torch-chunk",
        type=int,
        default=65_536,
        help="keys per matmul of the brute-force torch search (memory: queries x chunk)",
    )
    train = parser.add_argument_group("training cost of retrieval")
    train.add_argument(
        "--train-indexes",
        nargs="*",
        default=["flat", "hnsw", "ivf", "torch"],
        help="index kinds timed with retrieval on; none: skip part 2",
    )
    train.add_argument("--train-batch", type=int, default=16, help="sequences per batch")
    train.add_argument("--train-windows", type=int, default=8, help="consecutive windows per step (state carried)")
    train.add_argument("--window", type=int, default=64, help="tokens per window")
    train.add_argument("--d-model", type=int, default=64, help="model width")
    train.add_argument("--heads", type=int, default=4, help="attention heads")
    train.add_argument(
        "--train-layers",
        type=int,
        default=2,
        help="blocks; the kNN memory is in block 3*layers//4 (Wu et al. 2022: layer 9 of 12), "
        "the others attend locally",
    )
    train.add_argument("--train-steps", type=int, default=3, help="timed steps per setting (after one warm-up)")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch and FAISS (OpenMP) threads; more than the free cores (other jobs!) make the many small ops "
        "of the training part very slow (oversubscription)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON to this path")
    return parser.parse_args(argv)


# -- data ---------------------------------------------------------------------------------------------


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def make_data(kind: str, n: int, args, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys (n, dim) and queries (queries, dim), unit length; see the module docstring."""
    if kind == "uniform":
        return unit(torch.randn(n, args.dim, generator=generator)), unit(
            torch.randn(args.queries, args.dim, generator=generator)
        )
    centres = unit(torch.randn(args.clusters, args.dim, generator=generator))

    def draw(count: int) -> torch.Tensor:
        which = torch.randint(args.clusters, (count,), generator=generator)
        noise = torch.randn(count, args.dim, generator=generator) * (args.spread / math.sqrt(args.dim))
        return unit(centres[which] + noise)

    return draw(n), draw(args.queries)


# -- searches -----------------------------------------------------------------------------------------


def best_time(fn, repeats: int, enough_seconds: float = 5.0):
    """(best wall time of ``repeats`` runs, result of the first run); a run slower than ``enough_seconds``
    is not repeated (the exact searches at N = 1e6), which keeps the default run near 10 minutes."""
    times, result = [], None
    for repeat in range(max(1, repeats)):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
        result = out if repeat == 0 else result
        if times[-1] > enough_seconds:
            break
    return min(times), result


def torch_topk(queries: torch.Tensor, keys: torch.Tensor, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top k by inner product, a chunk of keys at a time: (scores, indices), each (queries, k)."""
    best_scores = torch.full((queries.shape[0], 0), float("-inf"))
    best_ids = torch.zeros((queries.shape[0], 0), dtype=torch.long)
    for start in range(0, keys.shape[0], chunk):
        scores, ids = (queries @ keys[start : start + chunk].T).topk(min(k, keys[start : start + chunk].shape[0]))
        merged_scores = torch.cat([best_scores, scores], dim=1)
        merged_ids = torch.cat([best_ids, ids + start], dim=1)
        best_scores, order = merged_scores.topk(min(k, merged_scores.shape[1]), dim=1)
        best_ids = merged_ids.gather(1, order)
    return best_scores, best_ids


def recall(scores: torch.Tensor, valid: torch.Tensor, exact_scores: torch.Tensor) -> float:
    """Fraction of the k returned entries scoring at least the exact k-th best (ties count as found)."""
    kth = exact_scores[:, -1:] - 1e-5
    return ((scores >= kth) & valid).float().sum(1).div(exact_scores.shape[1]).mean().item()


def store_add(store: KNNStore, keys: torch.Tensor, chunk: int) -> tuple[float, float]:
    """Add keys (values = keys) in chunks; (total seconds, of which IVF training seconds)."""
    training = [0.0]
    train = store.train_ivf_when_ready

    def timed_train():
        start = time.perf_counter()
        train()
        training[0] += time.perf_counter() - start

    store.train_ivf_when_ready = timed_train
    start = time.perf_counter()
    for begin in range(0, keys.shape[0], chunk):
        part = keys[begin : begin + chunk].view(1, 1, -1, keys.shape[1])
        store.add(part, part)
    return time.perf_counter() - start, training[0]


def store_search(store: KNNStore, queries: torch.Tensor, args) -> tuple[float, torch.Tensor, torch.Tensor]:
    seconds, found = best_time(lambda: store.search(queries.view(1, 1, -1, args.dim), args.k), args.repeats)
    return seconds, found.scores[0, 0], found.valid[0, 0]


def sweep(store: KNNStore, option: str, values: list[int], queries, exact_scores, args) -> list[dict]:
    points = []
    for value in values:
        store.options[option] = value  # read at every search
        seconds, scores, valid = store_search(store, queries, args)
        points.append(
            {option: value, "us_per_query": 1e6 * seconds / len(queries), "recall": recall(scores, valid, exact_scores)}
        )
    return points


def pick(points: list[dict], target: float) -> dict:
    """The cheapest sweep point reaching the target recall, else the most accurate one."""
    good = [p for p in points if p["recall"] >= target]
    return min(good, key=lambda p: p["us_per_query"]) if good else max(points, key=lambda p: p["recall"])


def scale_rows(data: str, n: int, args, generator: torch.Generator) -> list[dict]:
    keys, queries = make_data(data, n, args, generator)
    rows = []

    def row(method, params, add_seconds, us_per_query, recall_value, **extra):
        rows.append(
            {
                "data": data,
                "n": n,
                "method": method,
                "params": params,
                "add_vectors_per_s": n / add_seconds if add_seconds else None,
                "search_us_per_query": us_per_query,
                "recall_at_k": recall_value,
                **extra,
            }
        )
        print(
            f"  {data:9s} N={n:>9,} {method:12s} {params:26s} add {n / add_seconds:>12,.0f}/s  "
            f"search {us_per_query:>9.1f} us/query  recall@{args.k} {recall_value:.3f}",
            flush=True,
        )

    # brute force torch: the exact reference
    start = time.perf_counter()
    table = torch.empty(n, args.dim)
    for begin in range(0, n, args.add_chunk):
        table[begin : begin + args.add_chunk] = unit(keys[begin : begin + args.add_chunk])
    add_seconds = time.perf_counter() - start
    seconds, (exact_scores, _) = best_time(lambda: torch_topk(queries, table, args.k, args.torch_chunk), args.repeats)
    row("torch", f"chunk={args.torch_chunk}", add_seconds, 1e6 * seconds / len(queries), 1.0)

    flat = KNNStore(args.dim, index="flat")
    add_seconds, _ = store_add(flat, keys, args.add_chunk)
    seconds, scores, valid = store_search(flat, queries, args)
    row("faiss flat", "IndexFlatIP", add_seconds, 1e6 * seconds / len(queries), recall(scores, valid, exact_scores))
    del flat

    hnsw = KNNStore(args.dim, index="hnsw", m=args.hnsw_m, ef_construction=args.hnsw_ef_construction)
    add_seconds, _ = store_add(hnsw, keys, args.add_chunk)
    points = sweep(hnsw, "ef_search", args.hnsw_ef_search, queries, exact_scores, args)
    chosen = pick(points, args.target_recall)
    params = f"M={args.hnsw_m} efC={args.hnsw_ef_construction} efS={chosen['ef_search']}"
    row("faiss hnsw", params, add_seconds, chosen["us_per_query"], chosen["recall"], sweep=points)
    del hnsw

    nlist = args.ivf_nlist or 2 ** round(math.log2(math.sqrt(n)))
    ivf = KNNStore(args.dim, index="ivf", nlist=nlist)
    add_seconds, train_seconds = store_add(ivf, keys, args.add_chunk)
    points = sweep(ivf, "nprobe", args.ivf_nprobe, queries, exact_scores, args)
    chosen = pick(points, args.target_recall)
    params = f"nlist={nlist} nprobe={chosen['nprobe']}"
    row("faiss ivf", params, add_seconds, chosen["us_per_query"], chosen["recall"], sweep=points, train_s=train_seconds)
    return rows


# -- training cost ------------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, attention: nn.Module, d_model: int):
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(d_model), attention
        self.mlp = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x, state):
        read, state = self.attention(self.norm1(x), state)
        x = x + read
        return x + self.mlp(x), state


class SmallModel(nn.Module):
    """Embedding, `layers` blocks (one with the kNN memory, the others local attention), a linear head."""

    def __init__(self, vocab: int, d_model: int, heads: int, k: int, index: str, retrieval: bool, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        memory_block = (3 * layers) // 4
        self.blocks = nn.ModuleList(
            [
                Block(KNNAttention(d_model, heads, top_k=k, memory_index=index, retrieval=uses_memory), d_model)
                for uses_memory in (retrieval and i == memory_block for i in range(layers))
            ]
        )
        self.head = nn.Linear(d_model, vocab)

    def loss(self, tokens: torch.Tensor, window: int) -> torch.Tensor:
        states, losses = [None] * len(self.blocks), []
        for begin in range(0, tokens.shape[1] - 1, window):
            x = self.embed(tokens[:, begin : begin + window])
            for number, block in enumerate(self.blocks):
                x, states[number] = block(x, states[number])
            targets = tokens[:, begin + 1 : begin + window + 1]
            losses.append(F.cross_entropy(self.head(x[:, : targets.shape[1]]).flatten(0, 1), targets.flatten()))
        return torch.stack(losses).mean()


class StoreTimer:
    """Accumulates the wall time of KNNStore.search and KNNStore.add (patched on the class)."""

    def __init__(self):
        self.seconds = {"search": 0.0, "add": 0.0}
        self.originals = {name: getattr(KNNStore, name) for name in self.seconds}

    def __enter__(self):
        for name, original in self.originals.items():
            setattr(KNNStore, name, self.timed(name, original))
        return self

    def __exit__(self, *exc):
        for name, original in self.originals.items():
            setattr(KNNStore, name, original)

    def timed(self, name, original):
        def wrapper(store, *a, **kw):
            start = time.perf_counter()
            try:
                return original(store, *a, **kw)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return wrapper


def train_step(model: SmallModel, tokens: torch.Tensor, window: int) -> None:
    model.zero_grad(set_to_none=True)
    model.loss(tokens, window).backward()


def training_rows(args) -> list[dict]:
    vocab = 256
    generator = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(vocab, (args.train_batch, args.train_windows * args.window + 1), generator=generator)
    settings = [("off", "flat", False)] + [("on", index, True) for index in args.train_indexes]
    rows, baseline = [], None
    for label, index, retrieval in settings:
        torch.manual_seed(args.seed)
        model = SmallModel(vocab, args.d_model, args.heads, args.k, index, retrieval, args.train_layers)

        train_step(model, tokens, args.window)  # warm-up
        times = []
        with StoreTimer() as timer:
            for _ in range(args.train_steps):
                start = time.perf_counter()
                train_step(model, tokens, args.window)
                times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        baseline = baseline or seconds
        search_s, add_s = (timer.seconds[name] / args.train_steps for name in ("search", "add"))
        rows.append(
            {
                "retrieval": label,
                "index": index if retrieval else None,
                "ms_per_step": 1e3 * seconds,
                "slowdown": seconds / baseline,
                "faiss_search_ms_per_step": 1e3 * search_s,
                "faiss_add_ms_per_step": 1e3 * add_s,
            }
        )
        name = f"retrieval {label}" + (f" ({index})" if retrieval else " (windowed baseline)")
        print(
            f"  {name:28s} {1e3 * seconds:8.1f} ms/step  x{seconds / baseline:5.2f}   "
            f"store search {1e3 * search_s:7.1f} ms, store add {1e3 * add_s:7.1f} ms",
            flush=True,
        )
    return rows


# -- main ---------------------------------------------------------------------------------------------


def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "faiss_version": faiss.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "engramlab_version": library_versions().get("engramlab"),
        "load_average_at_start": os.getloadavg(),  # other jobs on the machine distort timings
    }


def print_table(rows: list[dict], k: int) -> None:
    print(f"\n| data | N | method | parameters | add (vectors/s) | search (us/query) | recall@{k} |")
    print("|---|---:|---|---|---:|---:|---:|")
    for r in rows:
        add = f"{r['add_vectors_per_s']:,.0f}" if r["add_vectors_per_s"] else "-"
        print(
            f"| {r['data']} | {r['n']:,} | {r['method']} | {r['params']} | {add} | "
            f"{r['search_us_per_query']:.1f} | {r['recall_at_k']:.3f} |"
        )


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    info = machine()
    print(f"machine: {info['cpu_model']} ({info['cpu_count']} CPUs), {args.threads} threads, faiss {faiss.__version__}")
    generator = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()

    rows = []
    for data, sizes in (("clustered", args.sizes), ("uniform", args.uniform_sizes)):
        for n in sizes:
            rows.extend(scale_rows(data, n, args, generator))
    training = []
    if args.train_indexes:
        print(
            f"training step (forward + backward): batch {args.train_batch}, {args.train_windows} windows of "
            f"{args.window}, d_model {args.d_model}, {args.heads} heads, top-{args.k}"
        )
        training = training_rows(args)

    if rows:
        print_table(rows, args.k)
    if training:
        print("\n| retrieval | index | ms/step | slowdown | store search ms/step | store add ms/step |")
        print("|---|---|---:|---:|---:|---:|")
        for r in training:
            print(
                f"| {r['retrieval']} | {r['index'] or '-'} | {r['ms_per_step']:.1f} | x{r['slowdown']:.2f} | "
                f"{r['faiss_search_ms_per_step']:.1f} | {r['faiss_add_ms_per_step']:.1f} |"
            )
    results = {
        "machine": info,
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "scale": rows,
        "training": training,
        "seconds": time.perf_counter() - started,
        "load_average_at_end": os.getloadavg(),
    }
    print(f"\ntotal {results['seconds']:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
