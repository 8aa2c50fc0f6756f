"""The ``engram`` command: list, run, eval and report experiments.

Errors a user can fix (a bad config value, an unknown key or experiment, a missing run
directory) print one line and exit with status 2; nothing is left half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from pathlib import Path

from engramlab.errors import EngramError

EPILOG_RUN = """examples:
  engram run pondernet-parity --preset quick --seed 0
  engram run pondernet-parity --set model.halting.lambda_p=0.1 --set train.steps=5000
  engram run pondernet-parity --show-config            # every config key, its default and meaning
  engram run pondernet-parity --resume runs/pondernet-parity/20261122-101500
  engram run pondernet-parity --resume runs/pondernet-parity/20261122-101500 --set train.steps=2000000  # longer
  torchrun --nproc-per-node 2 -m engramlab.cli run pondernet-parity --preset quick
"""


EPILOG_SWEEP = """examples:
  engram sweep pondernet-parity --seeds 0 1 2 --grid model.halting.lambda_p=0.1,0.3 --out runs-sweep
  engram sweep pondernet-parity --grid train.lr=0.0003,0.001 --backend slurm --slurm-partition cpu --slurm-cpus 2
  engram sweep pondernet-parity --grid train.lr=0.0003,0.001 --backend dask --dask-address tcp://10.0.0.5:8786
  engram sweep pondernet-parity --grid train.lr=0.0003,0.001 --backend slurm --slurm-local   # try it here first
"""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def at_least_one(text: str) -> int:
    """The type of --workers and --threads: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """Where a sweep's runs go and how many threads each gets (``engram sweep`` and ``engram bench``)."""
    parser.add_argument(
        "--backend",
        choices=["local", "slurm", "dask"],
        default="local",
        help="local: child processes on this machine (default); slurm: a submitit job array; "
        "dask: the workers of a Dask scheduler (--dask-address) or of a local Dask cluster",
    )
    parser.add_argument(
        "--workers",
        type=at_least_one,
        default=None,
        help="local, and dask without an address: runs at once (default: CPU cores)",
    )
    parser.add_argument(
        "--threads",
        type=at_least_one,
        default=None,
        help="PyTorch/OpenMP threads of each run, set explicitly on every backend "
        "(default: local: cores / workers; slurm: --slurm-cpus; dask: 1)",
    )
    parser.add_argument("--retries", type=int, default=1, help="times a failed run is tried again (default: 1)")
    slurm = parser.add_argument_group("slurm backend (pip install 'engramlab[slurm]')")
    slurm.add_argument("--slurm-partition", default=None, help="partition (default: the cluster's)")
    slurm.add_argument("--slurm-time", type=at_least_one, default=60, help="minutes per run (default: 60)")
    slurm.add_argument("--slurm-cpus", type=at_least_one, default=1, help="CPUs per run (default: 1)")
    slurm.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per run (default: 0)")
    slurm.add_argument(
        "--slurm-array-parallelism", type=at_least_one, default=None, help="runs of the array at once (default: 256)"
    )
    slurm.add_argument(
        "--slurm-local",
        action="store_true",
        help="run the job array on this machine through submitit's local executor (try a sweep before the cluster)",
    )
    dask = parser.add_argument_group("dask backend (pip install 'engramlab[dask]')")
    dask.add_argument(
        "--dask-address",
        default=None,
        help="scheduler address, e.g. tcp://10.0.0.5:8786 (default: a local cluster of --workers processes)",
    )


def make_backend(args, out: Path):
    """The backend the options name (a local Dask cluster starts here: call after every check)."""
    from engramlab.sweep import DaskBackend, LocalBackend, SlurmBackend

    if args.backend == "local":
        return LocalBackend(args.workers or os.cpu_count() or 1)
    if args.backend == "slurm":
        return SlurmBackend(
            out / "submitit",
            partition=args.slurm_partition,
            minutes=args.slurm_time,
            cpus=args.slurm_cpus,
            gpus=args.slurm_gpus,
            parallel=args.slurm_array_parallelism,
            local=args.slurm_local,
        )
    return DaskBackend(args.dask_address, args.workers or os.cpu_count() or 1)


def threads_per_run(args) -> int:
    """Each run's threads: --threads, else local: cores / workers; slurm: --slurm-cpus; dask: 1."""
    if args.retries < 0:
        raise EngramError(f"--retries {args.retries}: must be 0 or more")
    if args.threads:
        return args.threads
    if args.backend == "local":
        return max(1, (os.cpu_count() or 1) // (args.workers or os.cpu_count() or 1))
    return args.slurm_cpus if args.backend == "slurm" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="engram",
        description="engramlab: memory and adaptive computation in neural networks. "
        "Train, evaluate and report reproduced experiments.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    p = sub.add_parser("list", help="list experiments with their presets")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "run",
        help="train and evaluate an experiment",
        description="Train every model (arm) of an experiment, evaluate them, write plots and summary.json "
        "into a new run directory runs/<experiment>/<timestamp>/.",
        epilog=EPILOG_RUN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("experiment", help="experiment name (see `engram list`)")
    p.add_argument(
        "--preset",
        default=None,
        help="named configuration: quick (CPU, minutes; the default) or "
        "paper (the published configuration); `engram list` shows each experiment's presets",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of initialisation and training data (default 0)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="root of run directories (default: runs)")
    add_set_option(p, "override any config key, e.g. --set model.halting.lambda_p=0.1 (repeatable; values are YAML)")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run from its checkpoints (its saved config is used); with "
        "--set train.steps=N, train a run with a constant learning rate longer, to N updates",
    )
    p.add_argument(
        "--workers",
        type=at_least_one,
        default=None,
        help="train this many arms in parallel processes (default: one per CPU core, at most one per arm; 1 on a GPU)",
    )
    p.add_argument(
        "--threads", type=at_least_one, default=None, help="PyTorch threads per worker (default: CPU cores / workers)"
    )
    p.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train (auto: cuda if available)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--show-config",
        action="store_true",
        help="print the resolved config and every key's meaning, then exit without training",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "eval",
        help="evaluate a trained run, optionally on a changed task",
        description="Evaluate the trained models of RUN_DIR again, e.g. on other k ranges, without "
        "retraining. Results go to RUN_DIR/evals/<timestamp>/.",
    )
    p.add_argument("run_dir", type=Path, help="a run directory written by `engram run`")
    add_set_option(
        p,
        "change the task or the evaluation, e.g. --set task.test_k=[49,96] "
        "(allowed: task.*, eval.*, and per experiment the model keys that change no parameters, "
        "e.g. model.halting.eval_max_steps, model.mem_len, model.top_k; the error message lists them)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="bAbI runs: evaluate on the official qa*_test.txt files in this directory (your own copy of "
        "en or en-10k); the same as --set eval.data_dir=DIR",
    )
    p.add_argument("--threads", type=at_least_one, default=None, help="PyTorch threads (default: all cores)")
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="evaluate a run whose training did not finish, each unfinished model at its last checkpoint "
        "(the steps are recorded in the summary); without it such a run is refused",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "sweep",
        help="run a grid of config values x seeds, here, on SLURM or on Dask",
        description="Expand a grid of config values x seeds into one run directory each, "
        "OUT/<experiment>/<preset>[-<key=value,...>]-seed<S>, and run each once: on this machine "
        "(local), as a SLURM job array (slurm, through submitit) or on a Dask cluster (dask). Run the "
        "same command again to go on: finished runs are kept, interrupted ones resume from their "
        "checkpoints, failed ones are tried again. Each run's output is in RUN_DIR/sweep.log; "
        "OUT/sweep.json lists every run as finished, failed or pending; OUT/report.md is `engram "
        "report` on the finished runs.",
        epilog=EPILOG_SWEEP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("experiment", help="experiment name (see `engram list`)")
    p.add_argument("--preset", default="quick", help="preset of every run (default: quick)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument(
        "--grid",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=V1,V2",
        help="a config key and its values, e.g. --grid train.lr=0.001,0.003 model.halting.lambda_p=0.1,0.2 "
        "(every combination is run; values are YAML, commas inside [...] belong to one value)",
    )
    add_set_option(p, "override a config key in every run, e.g. --set train.steps=5000 (repeatable)")
    p.add_argument(
        "--out", type=Path, default=Path("runs-sweep"), help="root of the sweep's runs (default: runs-sweep)"
    )
    add_backend_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser(
        "bench",
        help="run a suite of experiments over several seeds and write a leaderboard",
        description="Run every experiment of a suite (memory: copy, associative recall, MQAR, passkey; every kind "
        "of memory that applies) once per seed as one sweep (see `engram sweep --help`: the same backends), then "
        "write leaderboard.md/.json. Finished runs are kept and interrupted ones resumed, so the command can be "
        "repeated.",
    )
    p.add_argument("suite", choices=["memory"], help="which suite")
    p.add_argument("--preset", default="quick", help="preset of every experiment (default: quick)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument(
        "--out", type=Path, default=Path("runs-bench"), help="root of the run directories (default: runs-bench)"
    )
    p.add_argument(
        "--publish",
        type=Path,
        default=None,
        metavar="DIR",
        help="copy the runs (without checkpoints) and write the leaderboard there, e.g. docs/results/memory",
    )
    p.add_argument("--experiments", nargs="+", default=None, help="only these experiments of the suite")
    add_set_option(p, "override a config key in every experiment, e.g. --set train.steps=100 (repeatable)")
    add_backend_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "report",
        help="Markdown table of our numbers next to the paper's, or (--html) a browsable site",
        description="Collect finished runs (default: every run under runs/) and print, per experiment and "
        "preset, each headline metric as mean ± std over seeds next to the paper's number.",
    )
    p.add_argument("run_dirs", type=Path, nargs="*", help="run directories or folders that contain them")
    p.add_argument("--out", type=Path, default=None, help="write the report to this file instead of stdout")
    p.add_argument(
        "--html",
        type=Path,
        default=None,
        metavar="DIR",
        help="write a static site instead: an index of experiments (ours beside the paper's, a status mark), "
        "one page per experiment (tables, per-seed values, commands, deviations, plots) and sortable "
        "leaderboards, self-contained in DIR, e.g. engram report docs/results --html docs/site",
    )
    p.set_defaults(func=cmd_report)
    return parser


# ---------------------------------------------------------------------------------------------


def cmd_list(args) -> int:
    from engramlab.experiments import all_experiments

    for exp in all_experiments():
        print(f"{exp.name:24s} {exp.description}")
        print(f"{'':24s} presets: {', '.join(exp.presets)}")
    return 0


def steps_to_train_longer(overrides: list[str]) -> int | None:
    """With ``--resume``, ``--set`` may only raise ``train.steps`` (train the run longer)."""
    from engramlab.config import parse_override

    steps = None
    for text in overrides:
        key, value = parse_override(text)
        if key != "train.steps" or not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise EngramError(
                f"--resume continues a run with its saved config; the one --set it takes is train.steps=N "
                f"(a whole number, to train longer), not {text!r}"
            )
        steps = value
    return steps


def cmd_run(args) -> int:
    from engramlab.experiments import get_experiment

    exp = get_experiment(args.experiment)  # before the heavy imports: an unknown name answers at once
    from engramlab.api import load_config, run_info
    from engramlab.config import describe, resolve
    from engramlab.engine import distributed as dist
    from engramlab.engine.rundir import run_dir_lock
    from engramlab.engine.runner import check_fits_in_memory, longer, record_longer, run_experiment

    old_steps = None
    if args.resume is not None:
        if args.preset or args.seed is not None:
            raise EngramError("--resume continues a run with its saved config: drop --preset/--seed")
        longer_steps = steps_to_train_longer(args.overrides)
        saved_exp, cfg = load_config(args.resume)
        if saved_exp.name != exp.name:
            raise EngramError(f"{args.resume} is a run of '{saved_exp.name}', not '{exp.name}'")
        if longer_steps is not None and longer_steps != cfg.train.steps:
            old_steps, cfg = cfg.train.steps, longer(cfg, longer_steps)
        info = run_info(args.resume)
        preset, overrides = info.get("preset"), info.get("overrides", [])
    else:
        preset = args.preset or "quick"
        if preset not in exp.presets:
            raise EngramError(f"unknown preset '{preset}' for {exp.name} (available: {', '.join(exp.presets)})")
        overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
        cfg = resolve(exp.Config, exp.presets[preset], overrides=overrides, renamed=exp.renamed_keys)
    if args.show_config:
        print(f"# {exp.name}, preset {preset}; every key can be changed with --set KEY=VALUE")
        for key, value, allowed, text in describe(cfg):
            print(f"{key} = {value}\n    {text} [{allowed}]")
        return 0

    # everything that can be refused is refused before a run directory exists
    if args.resume is None:
        cfg = exp.prepare(cfg)  # e.g. read a data set's vocabulary
        if args.out.exists() and not args.out.is_dir():
            raise EngramError(f"--out {args.out}: a file, not a directory")
        check_fits_in_memory(exp, cfg)
    device = pick_device(args.device)
    workers = args.workers or (1 if device == "cuda" else os.cpu_count() or 1)
    dist.init_from_env()
    run_dir, made = args.resume, []
    try:
        if run_dir is None:
            made = missing_folders(args.out / exp.name)  # removed again if the run fails at once
            run_dir = dist.broadcast_object(new_out_dir(args.out, exp.name) if dist.is_main() else None)
        with run_dir_lock(run_dir) if dist.is_main() else contextlib.nullcontext():  # refused before a word
            if dist.is_main():
                print(f"run directory: {run_dir}", file=sys.stderr)
                if old_steps is not None:
                    record_longer(exp, cfg, run_dir, old_steps)
                    overrides = run_info(run_dir)["overrides"]
                    print(f"training longer: {old_steps} -> {cfg.train.steps} updates", file=sys.stderr)
            summary = run_experiment(
                exp,
                cfg,
                run_dir,
                preset=preset,
                overrides=overrides,
                resume=args.resume is not None,
                workers=workers,
                threads=args.threads,
                device=device,
                progress=not args.no_progress,
            )
    except EngramError:
        if args.resume is None and run_dir is not None and dist.is_main():
            discard_untrained(Path(run_dir), made)
        raise
    except KeyboardInterrupt:
        if dist.is_main() and run_dir is not None:
            print(f"engram: interrupted; continue with: engram run {exp.name} --resume {run_dir}", file=sys.stderr)
        return 130
    finally:
        dist.shutdown()
    if summary:
        print_metrics(summary["metrics"])
        print(f"summary: {Path(run_dir) / 'summary.json'}")
    return 0


def new_out_dir(out: Path, experiment: str) -> Path:
    from engramlab.engine.rundir import new_run_dir

    try:
        return new_run_dir(out, experiment)
    except EngramError as exc:
        raise EngramError(f"--out {exc}") from None


def missing_folders(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first."""
    return [folder for folder in (path, *path.parents) if not folder.exists()]


def discard_untrained(run_dir: Path, made: list[Path]) -> None:
    """A new run that failed before any arm saved a checkpoint is removed, with the folders made for
    it: nothing is left half-written. A run with checkpoints is kept, to be resumed."""
    if any(run_dir.rglob("checkpoint*.safetensors")):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    for folder in made:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty


def cmd_eval(args) -> int:
    from engramlab.api import load_config
    from engramlab.engine.runner import torch_threads
    from engramlab.evaluate import evaluate_run

    overrides = list(args.overrides)
    if args.data_dir is not None:
        exp, cfg = load_config(args.run_dir)
        if "data_dir" not in type(cfg.eval).model_fields:
            raise EngramError(f"--data-dir applies to bAbI runs; {args.run_dir} is a run of '{exp.name}'")
        if not args.data_dir.is_dir():
            raise EngramError(f"--data-dir {args.data_dir}: not a directory")
        overrides.append(f"eval.data_dir={args.data_dir.resolve()}")
    with torch_threads(args.threads or os.cpu_count() or 1):
        summary, out_dir = evaluate_run(args.run_dir, overrides, allow_partial=args.allow_partial)
    print_metrics(summary["metrics"])
    print(f"results: {out_dir / 'summary.json'}")
    return 0


def cmd_sweep(args) -> int:
    from engramlab.sweep import parse_grid, plan, run_sweep

    grid, threads = parse_grid(args.grid), threads_per_run(args)
    # every config is resolved and checked before a backend starts or anything is written
    jobs = plan(
        args.experiment,
        preset=args.preset,
        seeds=args.seeds,
        out=args.out,
        grid=grid,
        overrides=args.overrides,
        threads=threads,
    )
    status = run_sweep(
        jobs, make_backend(args, args.out), args.out, retries=args.retries, progress=not args.no_progress
    )
    return print_sweep_status(status, args.out)


def print_sweep_status(status: dict, out: Path) -> int:
    print(f"sweep: {status['finished']} finished, {status['failed']} failed, {status['pending']} pending")
    for run in status["runs"]:
        if run["status"] == "failed":
            print(f"  failed: {run['run']} (log {run['log']})")
    print(f"status: {out / 'sweep.json'}" + (f"; report: {out / 'report.md'}" if status["finished"] else ""))
    return 0 if status["finished"] == len(status["runs"]) else 1


def cmd_bench(args) -> int:
    from engramlab.bench import SUITES, run_suite

    for name in args.experiments or []:
        if name not in SUITES[args.suite]:
            raise EngramError(
                f"unknown experiment '{name}' in suite {args.suite} (allowed: {', '.join(SUITES[args.suite])})"
            )
    threads = threads_per_run(args)
    status = run_suite(
        args.suite,
        preset=args.preset,
        seeds=args.seeds,
        out=args.out,
        publish=args.publish,
        experiments=args.experiments,
        overrides=args.overrides,
        backend=lambda: make_backend(args, args.out),
        threads=threads,
        retries=args.retries,
        progress=not args.no_progress,
    )
    return print_sweep_status(status, args.out)


def cmd_report(args) -> int:
    from engramlab.report import build_report

    if args.html is not None:
        from engramlab.site import build_site

        if args.html.exists() and not args.html.is_dir():
            raise EngramError(f"--html {args.html}: a file, not a directory")
        print(f"site written to {build_site(args.run_dirs or [Path('runs')], args.html)}")
        if args.out is None:
            return 0
    text = build_report(args.run_dirs or [Path("runs")])
    if args.out:
        args.out.write_text(text)
        print(f"report written to {args.out}")
    else:
        print(text)
    return 0


def print_metrics(metrics: dict[str, float]) -> None:
    for key, value in metrics.items():
        print(f"{key:40s} {value:.4f}" if isinstance(value, float) else f"{key:40s} {value}")


def pick_device(choice: str) -> str:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise EngramError("--device cuda: no CUDA device is available (use --device cpu)")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def main(argv: list[str] | None = None) -> int:
    code = run_command(argv)
    # a rank of a torchrun job leaves at once (see exit_after_group); nothing else imported it,
    # and a command that never needed PyTorch does not import it here
    dist = sys.modules.get("engramlab.engine.distributed")
    return dist.exit_after_group(code) if dist is not None else code


def run_command(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EngramError as exc:
        print(f"engram: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("engram: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
