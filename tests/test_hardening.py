"""Bad inputs to `engram run` and `engram eval` give one line and exit 2 with nothing half-written;
runs cannot collide; an interrupted run says how to continue (issue #19)."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import sets

from engramlab.cli import main
from engramlab.engine.progress import Bar
from engramlab.engine.rundir import run_dir_lock
from engramlab.engine.runner import out_of_memory_is_one_line
from engramlab.errors import EngramError

TINY = sets(
    "task.n=4",
    "task.train_k=[1,2]",
    "task.test_k=[3,4]",
    "model.hidden=4",
    "model.halting.max_steps=3",
    "train.steps=4",
    "train.log_every=2",
    "train.checkpoint_every=2",
    "eval.samples_per_k=4",
    "eval.monitor_samples=4",
)


def engram(capsys, *args) -> tuple[int, list[str]]:
    """``engram ARGS`` in this process: its exit status and the lines it printed on stderr."""
    try:
        status = main(list(args))
    except SystemExit as exit:  # argparse's usage errors
        status = exit.code
    return status, capsys.readouterr().err.strip().splitlines()


def tiny_run(tmp_path, capsys, *extra: str):
    status, _ = engram(
        capsys, "run", "pondernet-parity", "--out", str(tmp_path), "--workers", "1", "--no-progress", *TINY, *extra
    )
    assert status == 0
    (run_dir,) = (tmp_path / "pondernet-parity").iterdir()
    return run_dir


def assert_one_line(status, lines, *words):
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith(("engram: error: ", "engram run: error: ")) and all(w in lines[0] for w in words), lines


# --- 1. --out -------------------------------------------------------------------------------


def test_out_naming_a_file_or_an_impossible_place_is_one_line_and_writes_nothing(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert_one_line(*engram(capsys, "run", "pondernet-parity", "--out", str(a_file), *TINY), "a file, not a directory")
    assert a_file.read_text() == "x"
    below_a_file = a_file / "runs"
    assert_one_line(*engram(capsys, "run", "pondernet-parity", "--out", str(below_a_file), *TINY), "cannot create")
    assert_one_line(*engram(capsys, "run", "pondernet-parity", "--out", "/proc/engram-runs", *TINY), "cannot create")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


# --- 2. a model too large for the machine ----------------------------------------------------


def test_a_model_that_cannot_fit_is_refused_before_anything_is_written(tmp_path, capsys):
    status, lines = engram(
        capsys, "run", "pondernet-parity", "--out", str(tmp_path), *TINY, "--set", "model.hidden=100000000"
    )
    assert_one_line(status, lines, "arm 'pondernet' needs", "GB for its weights alone", "parameters", "available")
    assert not any(tmp_path.iterdir())


def test_an_allocation_that_fails_while_running_is_one_line_naming_the_size():
    error = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
        "allocate 76800000000 bytes. Error code 12 (Cannot allocate memory)"
    )
    with pytest.raises(EngramError) as err, out_of_memory_is_one_line("act"):
        raise error
    assert str(err.value) == "arm 'act': out of memory (76.8 GB asked for at once): make the model or batch smaller"
    with pytest.raises(ValueError), out_of_memory_is_one_line("act"):  # other errors pass through
        raise ValueError("not about memory")


def test_a_new_run_that_fails_before_any_checkpoint_leaves_nothing(tmp_path, capsys, monkeypatch):
    from engramlab.engine import runner

    def fail(*args, **kwargs):
        raise EngramError("arm 'pondernet' failed: something")

    monkeypatch.setattr(runner, "train_arms", fail)
    out = tmp_path / "new" / "runs"
    status, lines = engram(capsys, "run", "pondernet-parity", "--out", str(out), *TINY)
    assert status == 2 and lines[-1] == "engram: error: arm 'pondernet' failed: something"
    assert not (tmp_path / "new").exists(), "the run directory and the folders made for it are gone"


# --- 3. options --------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--workers", "--threads"])
@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_workers_and_threads_must_be_whole_numbers_from_one(tmp_path, capsys, option, value):
    status, lines = engram(capsys, "run", "pondernet-parity", "--out", str(tmp_path), option, value)
    assert_one_line(status, lines, f"argument {option}")
    assert not any(tmp_path.iterdir())


# --- 4. eval of an unfinished run --------------------------------------------------------------


def test_eval_refuses_an_unfinished_run_before_any_work_unless_allow_partial(tmp_path, capsys):
    run_dir = tiny_run(tmp_path, capsys)
    (run_dir / "summary.json").unlink()  # as if killed after the pondernet arm's last checkpoint,
    (run_dir / "pondernet" / "summary.json").unlink()  # before its evaluation
    status, lines = engram(capsys, "eval", str(run_dir))
    assert_one_line(status, lines, "is not finished: pondernet (checkpoint at step 4)", "--resume", "--allow-partial")
    assert not (run_dir / "evals").exists()

    assert engram(capsys, "eval", str(run_dir), "--allow-partial")[0] == 0
    (evaluation,) = (run_dir / "evals").iterdir()
    summary = json.loads((evaluation / "summary.json").read_text())
    assert summary["unfinished_arms"] == {"pondernet": 4}
    assert set(summary["results"]) == {"pondernet", "act", "fixed", "repeat"}

    shutil.rmtree(run_dir / "act")  # an arm that never saved a checkpoint: left out
    assert engram(capsys, "eval", str(run_dir), "--allow-partial")[0] == 0
    latest = max((run_dir / "evals").iterdir())
    summary = json.loads((latest / "summary.json").read_text())
    assert summary["unfinished_arms"] == {"pondernet": 4, "act": None}
    assert set(summary["results"]) == {"pondernet", "fixed", "repeat"}
    for arm in ("pondernet", "fixed", "repeat"):
        shutil.rmtree(run_dir / arm)
    assert_one_line(*engram(capsys, "eval", str(run_dir), "--allow-partial"), "no arm has saved a checkpoint yet")


# --- 5. the wall time of a resumed run ----------------------------------------------------------


def test_a_resumed_runs_wall_time_counts_every_stretch(tmp_path, capsys):
    run_dir = tiny_run(tmp_path, capsys, "--set", "methods=[fixed]")
    info = json.loads((run_dir / "run.json").read_text())
    (stretch,) = info["stretches"]
    assert stretch["ended"] == "finished" and stretch["seconds"] > 0
    del stretch["seconds"], stretch["ended"]  # as if killed before it could say how it ended
    (run_dir / "run.json").write_text(json.dumps(info))
    for summary in (run_dir / "summary.json", run_dir / "fixed" / "summary.json"):
        summary.unlink()
    assert (
        engram(capsys, "run", "pondernet-parity", "--resume", str(run_dir), "--workers", "1", "--no-progress")[0] == 0
    )
    first, second = json.loads((run_dir / "run.json").read_text())["stretches"]
    assert first["ended"].startswith("killed") and first["seconds"] > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["wall_time_s"] == first["seconds"] + second["seconds"]
    assert summary["started"] == first["started"]


# --- 7. one process per run directory -----------------------------------------------------------


def test_a_second_process_cannot_resume_a_run_another_one_holds(tmp_path, capsys, subprocess_env):
    run_dir = tiny_run(tmp_path, capsys)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, time
                from engramlab.engine.rundir import run_dir_lock
                with run_dir_lock({str(run_dir)!r}):
                    print("locked", flush=True)
                    time.sleep(60)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        status, lines = engram(capsys, "run", "pondernet-parity", "--resume", str(run_dir), "--no-progress")
        assert_one_line(status, lines, "is in use by another engram process", f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    with run_dir_lock(run_dir):  # released by the system when its holder died
        with run_dir_lock(run_dir):  # and the holder may ask again
            pass


# --- 8. small ones ----------------------------------------------------------------------------------


def test_ctrl_c_names_the_exact_command_that_continues_the_run(tmp_path, capsys, monkeypatch):
    from engramlab.engine import runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "train_arms", interrupted)
    status, lines = engram(capsys, "run", "pondernet-parity", "--out", str(tmp_path), *TINY)
    (run_dir,) = (tmp_path / "pondernet-parity").iterdir()
    assert status == 130
    assert lines[-1] == f"engram: interrupted; continue with: engram run pondernet-parity --resume {run_dir}"
    (stretch,) = json.loads((run_dir / "run.json").read_text())["stretches"]
    assert stretch["ended"] == "interrupted"


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(capsys):
    bar = Bar("pondernet", interval=0.0)
    bar.start(total=4)
    for step in range(1, 5):
        bar.update(step, {"loss": "0.5"})
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and "\r" not in "".join(lines)
    assert lines[-1].startswith("pondernet: 4/4 (100 %), ") and lines[-1].endswith(", loss 0.5")


def test_an_unknown_experiment_is_answered_without_importing_pytorch(subprocess_env):
    code = "import sys; from engramlab.cli import main; print(main(['run', 'nosuch']), 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env)
    assert proc.stdout.split() == ["2", "False"]
    assert proc.stderr.startswith("engram: error: unknown experiment 'nosuch'") and proc.stderr.count("\n") == 1


def test_the_checkpoints_of_a_run_have_its_other_files_mode(tmp_path, capsys):
    run_dir = tiny_run(tmp_path, capsys, "--set", "methods=[fixed]")
    modes = {p.name: p.stat().st_mode & 0o777 for p in (run_dir / "fixed").iterdir()}
    assert modes["checkpoint.safetensors"] == modes["checkpoint.previous.safetensors"] == modes["metrics.jsonl"]


def test_torch_is_still_here():  # the subprocess test above must not have been fooled by a broken install
    assert torch.tensor([1.0]).sum().item() == 1.0
