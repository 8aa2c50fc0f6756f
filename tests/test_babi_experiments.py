"""The bAbI and PAI experiments end to end on tiny data written by the test: training, the saved
vocabulary, `engram eval --data-dir`, the qa3 fallback, and a tiny task learned above chance."""

import json
import random
import shutil
import subprocess

import pytest
from conftest import engram_cmd, sets

from engramlab.cli import main
from engramlab.config import resolve
from engramlab.experiments import get_experiment
from engramlab.experiments.babi import common as babi_common

PEOPLE = ["mary", "john", "sandra", "daniel"]
PLACES = ["kitchen", "garden", "office", "bathroom", "hallway"]


def where_is_stories(count: int, seed: int) -> str:
    """Task-1-like stories: four moves, then 'where is X?' answered by X's last place."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        location = {}
        for n in range(1, 5):
            person, place = rng.choice(PEOPLE), rng.choice(PLACES)
            location[person] = (place, n)
            lines.append(f"{n} {person.capitalize()} went to the {place}.")
        person = rng.choice(sorted(location))
        place, line = location[person]
        lines.append(f"5 Where is {person.capitalize()}? \t{place}\t{line}")
    return "\n".join(lines) + "\n"


def write_release(directory, tasks=(1, 2), train=True, test=True, seed=0):
    directory.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        if train:
            (directory / f"qa{task}_fixture_train.txt").write_text(where_is_stories(300, seed + task))
        if test:
            (directory / f"qa{task}_fixture_test.txt").write_text(where_is_stories(100, seed + 100 + task))
    return directory


MEMN2N_TINY = sets(
    "task.tasks=[1,2]",
    "model.d=20",
    "train.steps=600",
    "train.optimizer=adam",
    "train.lr=0.01",
    "train.decay=constant",
    "train.log_every=100",
    "train.eval_every=100",
    "train.checkpoint_every=100",
    "model.linear_start=false",
)


@pytest.fixture(scope="module")
def memn2n_run(tmp_path_factory):
    data = write_release(tmp_path_factory.mktemp("babi"))
    out = tmp_path_factory.mktemp("runs")
    args = ["run", "memn2n-babi", "--out", str(out), "--no-progress", *MEMN2N_TINY, "--set", f"task.data_dir={data}"]
    assert main(args) == 0
    (run_dir,) = (out / "memn2n-babi").iterdir()
    return run_dir, data


@pytest.mark.slow  # shares a MemN2N run that learns a tiny task
def test_memn2n_learns_the_tiny_where_is_task_and_reports_per_task_errors(memn2n_run):
    run_dir, _ = memn2n_run
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = summary["metrics"]
    assert set(metrics) >= {"memn2n/mean_error", "memn2n/failed_tasks", "memn2n/task1_error", "memn2n/task2_error"}
    # chance is 80 % error (five places); the answer is the place of the person's last move
    assert metrics["memn2n/mean_error"] < 40
    assert (run_dir / "plots" / "task_errors.png").exists()


@pytest.mark.slow  # shares a MemN2N run that learns a tiny task
def test_the_run_config_holds_the_vocabulary(memn2n_run):
    run_dir, _ = memn2n_run
    from engramlab.api import load_config

    _, cfg = load_config(run_dir)
    assert {"mary", "kitchen", "where"} <= set(cfg.task.words)
    assert set(cfg.task.answers) == set(PLACES)


@pytest.mark.slow  # shares a MemN2N run that learns a tiny task
def test_eval_data_dir_evaluates_on_another_copy_of_the_test_files(memn2n_run, tmp_path, capsys):
    run_dir, data = memn2n_run
    copy = tmp_path / "my-copy"
    copy.mkdir()
    for path in data.glob("*_test.txt"):
        shutil.copy(path, copy / path.name)  # test files only: no training data needed
    assert main(["eval", str(run_dir), "--data-dir", str(copy)]) == 0
    (evaluation,) = (run_dir / "evals").iterdir()
    again = json.loads((evaluation / "summary.json").read_text())
    original = json.loads((run_dir / "summary.json").read_text())["metrics"]
    assert again["results"]["memn2n"]["test"]["data_dir"] == str(copy.resolve())
    assert again["metrics"]["memn2n/mean_error"] == pytest.approx(original["memn2n/mean_error"])


@pytest.mark.slow  # shares a MemN2N run that learns a tiny task
def test_eval_data_dir_errors_name_the_missing_file(memn2n_run, tmp_path, subprocess_env):
    run_dir, _ = memn2n_run
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        engram_cmd() + ["eval", str(run_dir), "--data-dir", str(empty)],
        capture_output=True,
        text=True,
        env=subprocess_env,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "qa1_*_test.txt" in lines[0] and str(empty) in lines[0], proc.stderr


def test_a_task_missing_from_the_training_directory_comes_from_the_fallback(tmp_path):
    main_dir = write_release(tmp_path / "en-10k", tasks=(1,))
    write_release(main_dir, tasks=(3,), train=False)  # like en-10k: qa3 test file only
    fallback = write_release(tmp_path / "en", tasks=(3,), seed=7)
    task = babi_common.BabiDataConfig(data_dir=str(main_dir), tasks=[1, 3])
    with pytest.raises(Exception, match="qa3_\\*_train.txt"):
        babi_common.training_examples(task)
    task = task.model_copy(update={"fallback_dir": str(fallback)})
    examples = babi_common.training_examples(task)
    assert {e.task for e in examples} == {1, 3}


def tiny_babi_run(tmp_path, experiment: str, tasks: tuple[int, ...], *settings: str) -> dict:
    """Train ``experiment`` on a tiny release of ``tasks`` (one worker); its summary's metrics."""
    data = write_release(tmp_path / "babi", tasks=tasks)
    base = sets(
        f"task.data_dir={data}",
        "task.fallback_dir=null",
        f"task.tasks=[{','.join(map(str, tasks))}]",
        "task.memory_size=6",
        "eval.monitor_examples=50",
        *settings,
    )
    assert main(["run", experiment, "--out", str(tmp_path / "runs"), "--no-progress", "--workers", "1", *base]) == 0
    (run_dir,) = (tmp_path / "runs" / experiment).iterdir()
    return json.loads((run_dir / "summary.json").read_text())["metrics"]


def test_pondernet_babi_tiny_run_reports_steps_and_the_headline_without_qa3(tmp_path):
    metrics = tiny_babi_run(
        tmp_path,
        "pondernet-babi",
        (1, 3),
        "model.d=16",
        "model.heads=2",
        "model.ff=16",
        "model.halting.max_steps=3",
        "train.steps=10",
        "train.log_every=5",
        "train.eval_every=5",
        "train.checkpoint_every=5",
    )
    for arm in ("ut-pondernet", "ut-act"):
        assert 1 <= metrics[f"{arm}/mean_steps"] <= 3
        assert metrics[f"{arm}/mean_error"] == metrics[f"{arm}/task1_error"]  # headline: qa3 left out
        assert "task3_error" in " ".join(metrics)


def test_memo_pai_tiny_run_reports_accuracy_and_hops_per_query_type(tmp_path):
    args = [
        "run",
        "memo-pai",
        "--out",
        str(tmp_path / "runs"),
        "--no-progress",
        "--workers",
        "1",
        *sets(
            "task.sequences=4",
            "task.item_dim=8",
            "task.train_items=200",
            "task.test_items=100",
            "model.hidden=16",
            "model.halting.max_steps=3",
            "model.ut_steps=2",
            "train.steps=10",
            "train.log_every=5",
            "train.eval_every=5",
            "train.checkpoint_every=5",
            "eval.samples=200",
            "eval.monitor_samples=50",
        ),
    ]
    assert main(args) == 0
    (run_dir,) = (tmp_path / "runs" / "memo-pai").iterdir()
    metrics = json.loads((run_dir / "summary.json").read_text())["metrics"]
    for arm in ("memo-pondernet", "memo-reinforce", "ut"):
        for query in ("A-B", "B-C", "A-C"):
            assert 0 <= metrics[f"{arm}/accuracy_{query}"] <= 1
            assert 1 <= metrics[f"{arm}/hops_{query}"] <= 3
    assert metrics["ut/hops_A-C"] == 2  # fixed depth
    assert {p.name for p in (run_dir / "plots").iterdir()} >= {"accuracy_by_query.png", "hops_by_query.png"}


def test_babi_config_rejects_unknown_tasks():
    with pytest.raises(Exception, match="tasks must be distinct numbers from 1 to 20"):
        resolve(get_experiment("memn2n-babi").Config, overrides=["task.tasks=[0,21]"])


@pytest.mark.slow  # learning test
def test_memo_babi_learns_the_tiny_where_is_task_with_both_halting_rules(tmp_path):
    metrics = tiny_babi_run(
        tmp_path,
        "memo-babi",
        (1, 2),
        "headline_tasks=[1,2]",
        "model.hidden=32",
        "model.halting.max_steps=3",
        "train.steps=300",
        "train.lr=0.003",
        "train.log_every=100",
        "train.eval_every=100",
        "train.checkpoint_every=100",
    )
    for arm in ("memo-pondernet", "memo-reinforce"):
        assert 1 <= metrics[f"{arm}/mean_steps"] <= 3
        # chance is 80 % error (five places)
        assert metrics[f"{arm}/mean_error"] < 40, metrics


def test_halting_models_skip_the_slots_no_story_of_the_batch_fills():
    """Dropping the front padding shared by a batch changes no prediction (UT and MEMO mask empty
    slots and count ages from the end), it only saves compute."""
    import torch

    from engramlab.models.babi_ut import BabiUTStep, pack_story
    from engramlab.models.memo import BabiMEMOStep
    from engramlab.ponder.halting import FixedDepth

    torch.manual_seed(0)
    story = torch.randint(1, 30, (3, 8, 5))
    story[:, :5] = 0  # the three stories fill only the last three slots...
    story[0, 3:5] = torch.randint(1, 30, (2, 5))  # ...except the first, which fills five
    batch = babi_common.BabiBatch(story, torch.randint(1, 30, (3, 5)), torch.zeros(3, dtype=torch.long), story[:, 0, 0])
    assert babi_common.packed_story(batch).shape == (3, 1 + 5, 5)
    for step in (BabiUTStep(30, 7, 5, 8, d=16, heads=2, ff=16), BabiMEMOStep(30, 7, 5, 8, hidden=16, heads=2)):
        model = babi_common.HaltingQA(FixedDepth(step.eval(), 2))
        untrimmed, _ = model.halting.predict(pack_story(batch.story, batch.question))
        trimmed, _ = model.halting.predict(babi_common.packed_story(batch))
        torch.testing.assert_close(trimmed, untrimmed)


def test_the_monitor_samples_every_task_of_the_validation_split(tmp_path):
    """The validation split is ordered by task; the monitor's subset must not be its first tasks only."""
    import torch

    data = write_release(tmp_path / "babi", tasks=(1, 2))
    exp = get_experiment("pondernet-babi")
    cfg = exp.prepare(
        resolve(exp.Config, overrides=[f"task.data_dir={data}", "task.tasks=[1,2]", "task.fallback_dir=null"])
    )
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"monitor_examples": 20})})

    class ReportsTheTask(torch.nn.Module):
        def predict(self, batch):
            return batch.answer, {"task": batch.task}

    metrics = babi_common.monitor(cfg)(ReportsTheTask())
    assert metrics["valid_accuracy"] == 1.0
    assert metrics["valid_task"] == pytest.approx(1.5, abs=0.05)  # both tasks, equally


@pytest.mark.parametrize(
    ("experiment", "width"), [("memo-babi", "hidden"), ("memo-pai", "hidden"), ("pondernet-babi", "d")]
)
def test_configs_reject_heads_that_do_not_divide_the_width(experiment, width):
    with pytest.raises(Exception, match=f"model.{width} \\(30\\) must be a multiple of model.heads \\(4\\)"):
        resolve(get_experiment(experiment).Config, overrides=[f"model.{width}=30", "model.heads=4"])


def test_fact_embedding_starts_its_position_mask_at_the_chosen_encoding():
    """Default: MemN2N §4.1 over all `max_words` places (the last word weighs only k/d on dimension k);
    `centred`: the authors' code form, every weight within 1 ± 1 and the mask's mean exactly 1."""
    import torch

    from engramlab.memory.memn2n import position_weights
    from engramlab.models.babi_ut import FactEmbedding

    places = torch.ones(1, 11, dtype=torch.long)
    paper, centred = (
        FactEmbedding(30, 11, 8, 16).word_position,
        FactEmbedding(30, 11, 8, 16, centred=True).word_position,
    )
    torch.testing.assert_close(paper.data, position_weights(places, 16)[0])
    assert paper[-1, 0].item() == pytest.approx(1 / 16)  # l_kj at j = J, k = 1: 0 − (1/16)(1 − 2)
    torch.testing.assert_close(centred.data, position_weights(places, 16, span=11)[0])
    assert centred.min() > 0 and centred.max() < 2 and centred.mean().item() == pytest.approx(1.0)
