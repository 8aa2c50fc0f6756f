"""Training throughput on parity: engramlab's PonderNet vs public implementations, side by side.

    python benchmarks/parity_throughput.py --threads 1 [--rounds 3] [--sizes 64 96] \
        [--jankrepl PATH/TO/mildlyoverfitted] [--labml PATH/TO/annotated_deep_learning_paper_implementations] \
        [--out docs/results/pondernet-parity/throughput.json]

Every implementation trains the same model for ``--seconds`` of wall time after a warm-up: a GRU
cell (``hidden`` units) pondered for up to N = 20 steps, batch 128, Adam, gradient clipping 1,
including data generation. engramlab runs with its fused kernels (``model.fused``,
``engramlab.ponder.fused``) and, for comparison, with PyTorch operators only. Every row also gives
its share of the machine's matmul peak, counting the products of the update (``update_flops``):
the peak divided by that count is the most steps/s any implementation of this model can reach
here. At the paper's sizes (n = 64 and 96, hidden 128) engramlab also
trains the paper's own model, the tanh RNN, reported in steps/s and as a share of the machine's
matmul peak, measured at the start of the same run. Peers run as in their own training scripts (their model, losses and
DataLoader), loaded from a local checkout given on the command line; nothing of theirs is part
of engramlab. engramlab runs its real training loop (``engramlab.engine.train.train``), with the
unroll forced to N = 20 steps (epsilon = 0) so that the work per update is the same as the peers',
and also with the paper's truncation rule (epsilon = 0.05, §2.3), whose cost depends on how long
the model ponders (here: at initialisation).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from engramlab.config import resolve
from engramlab.engine.rundir import library_versions, machine_info, now_iso
from engramlab.engine.train import train
from engramlab.experiments import get_experiment

SETTINGS = [  # (n, hidden): the peers' default, our quick preset's size, the paper's two sizes
    (8, 64),
    (32, 128),
    (64, 128),
    (96, 128),
]
BATCH, MAX_STEPS = 128, 20


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_loop(step, seconds: float, warmup: int = 10) -> float:
    for _ in range(warmup):
        step()
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        done += 1
    return done / (time.perf_counter() - start)


def matmul_peak(seconds: float) -> float:
    """The machine's fp32 matmul rate (FLOP/s) with this process's threads: the best of a few square
    and recurrent-sized products (2 m k n FLOPs each), for the share of peak a training step reaches."""
    best = 0.0
    for m, k, n in ((1024, 1024, 1024), (128, 128, 384), (128, 128, 128)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        rate = time_loop(lambda a=a, b=b: a @ b, seconds / 3)
        best = max(best, 2 * m * k * n * rate)
    return best


def update_flops(n: int, hidden: int, gates: int, steps: int = MAX_STEPS, batch: int = BATCH) -> float:
    """FLOPs of one update of a recurrent step with ``gates`` blocks of ``hidden`` units (1: the
    paper's tanh RNN, 3: a GRU) pondered for ``steps`` steps, matrix products only, the input
    projection once (as engramlab computes it): forward, then backward (twice the forward's
    products, but for the input projection, whose input needs no gradient). The floor of an
    update's time is this count at the matmul peak."""
    recurrent = 2 * batch * hidden * gates * hidden * steps
    heads = 2 * batch * hidden * 2 * steps
    projection = 2 * batch * n * gates * hidden
    return 3 * (recurrent + heads) + 2 * projection


def engramlab_rate(n: int, hidden: int, seconds: float, epsilon: float, step: str = "gru", fused: bool = True) -> float:
    exp = get_experiment("pondernet-parity")
    cfg = resolve(
        exp.Config,
        overrides=[
            f"model.fused={str(fused).lower()}",
            f"task.n={n}",
            f"task.train_k=[1,{n}]",
            "task.test_k=null",
            f"model.step={step}",
            f"model.hidden={hidden}",
            "model.encoding=raw",
            f"model.halting.max_steps={MAX_STEPS}",
            f"model.halting.epsilon={epsilon}",
            "model.halting.lambda_p=0.2",
            f"train.batch_size={BATCH}",
            "train.lr=3e-4",
            "train.grad_clip=1.0",
            "train.log_every=100",
            "train.checkpoint_every=100000",
            "train.eval_every=100000",
            "train.steps=100000",
        ],
    )
    # a short run sizes the timed one; the loop's own clock excludes setting up the run directory
    steps = 20
    for _ in range(2):
        with tempfile.TemporaryDirectory() as tmp:
            result = train(
                exp.build(cfg, "pondernet"),
                exp.sampler(cfg, "pondernet"),
                cfg.train.model_copy(update={"steps": steps}),
                tmp,
                seed=0,
            )
        rate = steps / result.wall_time_s
        steps = max(21, int(rate * seconds))
    return rate


def jankrepl_rate(root: Path, n: int, hidden: int, seconds: float) -> float:
    utils = load_module(root / "github_adventures" / "pondernet" / "utils.py", "jankrepl_pondernet_utils")
    model = utils.PonderNet(n_elems=n, n_hidden=hidden, max_steps=MAX_STEPS)
    loss_rec = utils.ReconstructionLoss(nn.BCEWithLogitsLoss(reduction="none"))
    loss_reg = utils.RegularizationLoss(lambda_p=0.2, max_steps=MAX_STEPS)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0003)
    loader = iter(torch.utils.data.DataLoader(utils.ParityDataset(BATCH * 1_000_000, n), batch_size=BATCH))

    def step():
        x, y = next(loader)
        y_pred, p, _ = model(x.float())
        loss = loss_rec(p, y_pred, y.float()) + 0.01 * loss_reg(p)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1)
        optimizer.step()

    return time_loop(step, seconds)


def labml_rate(root: Path, n: int, hidden: int, seconds: float) -> float:
    base = root / "labml_nn" / "adaptive_computation"
    ponder = load_module(base / "ponder_net" / "__init__.py", "labml_ponder_net")
    parity = load_module(base / "parity.py", "labml_parity")
    model = ponder.ParityPonderGRU(n, hidden, MAX_STEPS)
    loss_rec = ponder.ReconstructionLoss(nn.BCEWithLogitsLoss(reduction="none"))
    loss_reg = ponder.RegularizationLoss(0.2, MAX_STEPS)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0003)
    loader = iter(torch.utils.data.DataLoader(parity.ParityDataset(BATCH * 1_000_000, n), batch_size=BATCH))

    def step():
        x, y = next(loader)
        p, y_hat, _, _ = model(x)
        loss = loss_rec(p, y_hat, y.float()) + 0.01 * loss_reg(p)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        optimizer.zero_grad()

    return time_loop(step, seconds)


def jobs(args) -> list[tuple[int, int, str, Callable[..., float], int | None]]:
    """(n, hidden, name, measure, gates) for every measurement: ``gates`` counts the update's
    products (1: tanh RNN, 3: GRU) where every update runs N = 20 steps, else None."""
    out = []
    for n, hidden in SETTINGS:
        if args.sizes and n not in args.sizes:
            continue
        candidates = [
            ("engramlab, N = 20 every update (epsilon 0)", partial(engramlab_rate, epsilon=0.0), 3),
            ("engramlab, paper truncation (epsilon 0.05, at init)", partial(engramlab_rate, epsilon=0.05), None),
            (
                "engramlab, PyTorch operators only, N = 20 every update",
                partial(engramlab_rate, epsilon=0.0, fused=False),
                3,
            ),
        ]
        if args.jankrepl:
            candidates.append(("jankrepl/mildlyoverfitted", partial(jankrepl_rate, args.jankrepl), 3))
        if args.labml:
            candidates.append(("labml annotated implementations", partial(labml_rate, args.labml), 3))
        if hidden == 128 and n in (64, 96):  # the paper's own model at its two sizes
            rnn = partial(engramlab_rate, epsilon=0.0, step="rnn")
            candidates.append(("engramlab, the paper's tanh RNN, N = 20 every update", rnn, 1))
            candidates.append(("engramlab, the paper's tanh RNN, PyTorch operators only", partial(rnn, fused=False), 1))
        out += [(n, hidden, name, measure, gates) for name, measure, gates in candidates]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per measurement")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure everything this many times, one round after the other, and report the median of "
        "each (the machine's speed drifts: interleaved rounds spread the drift over all implementations)",
    )
    parser.add_argument("--sizes", type=int, nargs="*", help="only these n (default: 8 32 64 96)")
    parser.add_argument("--jankrepl", type=Path, help="checkout of github.com/jankrepl/mildlyoverfitted")
    parser.add_argument(
        "--labml", type=Path, help="checkout of github.com/labmlai/annotated_deep_learning_paper_implementations"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    peak = matmul_peak(args.seconds)
    print(f"matmul peak with {args.threads} thread(s): {peak / 1e9:.1f} GFLOP/s", flush=True)
    todo = jobs(args)
    rates: list[list[float]] = [[] for _ in todo]
    for round_ in range(args.rounds):
        for (n, hidden, name, measure, gates), measured in zip(todo, rates):
            torch.manual_seed(0)
            measured.append(measure(n=n, hidden=hidden, seconds=args.seconds))
            share = f", {100 * measured[-1] * update_flops(n, hidden, gates) / peak:.0f} % of the peak" if gates else ""
            print(
                f"round {round_ + 1} n={n:3d} hidden={hidden:3d} {name:56s} {measured[-1]:7.1f} steps/s{share}",
                flush=True,
            )
    rows = []
    for (n, hidden, name, _, gates), measured in zip(todo, rates):
        rate = statistics.median(measured)
        row = {"implementation": name, "n": n, "hidden": hidden, "steps_per_s": rate, "samples_per_s": rate * BATCH}
        row["rounds_steps_per_s"] = measured
        if gates:
            flops = update_flops(n, hidden, gates)
            row |= {"flops_per_update": flops, "share_of_matmul_peak": rate * flops / peak}
        rows.append(row)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + (argv or sys.argv[1:])),
                    "threads": args.threads,
                    "batch": BATCH,
                    "max_steps": MAX_STEPS,
                    "seconds": args.seconds,
                    "rounds": args.rounds,
                    "matmul_peak_flops": peak,
                    "results": rows,
                    "machine": machine_info(),
                    "versions": library_versions(),
                    "python": platform.python_version(),
                    "date": now_iso(),
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
