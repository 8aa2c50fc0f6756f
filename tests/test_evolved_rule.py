"""The evolved-rule experiment: online episodes, the gradient baselines by hand, a tiny run."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import sets, write_digits, write_omniglot

from engramlab.cli import main
from engramlab.errors import ConfigError
from engramlab.models.online_learners import gradient_online_logits
from engramlab.publish import publish_run
from engramlab.tasks import few_shot


def pool() -> few_shot.ImagePool:
    g = torch.Generator().manual_seed(0)
    return few_shot.ImagePool("toy", torch.rand(40, 6, generator=g), torch.arange(4).repeat_interleave(10))


def test_episodes_show_each_class_shots_times_in_a_random_order():
    e = few_shot.episodes(pool(), count=5, ways=3, shots=4, generator=torch.Generator().manual_seed(1))
    assert e.images.shape == (5, 12, 6) and e.labels.shape == e.seen.shape == (5, 12)
    for images, labels, seen in zip(e.images, e.labels, e.seen):
        assert torch.bincount(labels, minlength=3).tolist() == [4, 4, 4]
        for unit in range(3):
            assert seen[labels == unit].tolist() == [0, 1, 2, 3]  # earlier images of the same class
            assert len(torch.unique(images[labels == unit], dim=0)) == 4  # distinct images
        # one class per unit: every image of a unit is an image of one and the same class
        toy = pool()
        classes = {int(toy.labels[(toy.images == x).all(1)][0]) for x in images[labels == 0]}
        assert len(classes) == 1
    assert not torch.equal(e.labels[0], e.labels[1])


def test_episode_errors_name_the_problem():
    with pytest.raises(ConfigError, match="toy: 5 ways asked for, but it has 4 classes"):
        few_shot.episodes(pool(), 1, 5, 2, torch.Generator())
    with pytest.raises(ConfigError, match="toy: 11 shots asked for, but a class has only 10 images"):
        few_shot.episodes(pool(), 1, 2, 11, torch.Generator())
    with pytest.raises(ConfigError, match=r"no images of class\(es\) \[7\]"):
        pool().only([1, 7])


def test_accuracy_after_n_examples():
    correct = torch.tensor([[True, False, True, True]])
    seen = torch.tensor([[0, 0, 1, 1]])
    assert few_shot.accuracy_after(correct, seen, [0, 1, 2]) == {0: 0.5, 1: 1.0}


def test_online_sgd_by_hand():
    """From zero weights: the first prediction is uniform; one SGD step on (x0, y0) moves the
    weights by -lr * [x0, 1] (softmax - one-hot), which the second prediction shows."""
    x = torch.tensor([[[1.0, 2.0], [0.5, -1.0]]])
    y = torch.tensor([[1, 0]])
    logits = gradient_online_logits(x, y, ways=3, optimizer="sgd", lr=0.5)
    assert torch.equal(logits[0, 0], torch.zeros(3))
    error = torch.softmax(torch.zeros(3), 0) - F.one_hot(torch.tensor(1), 3)
    weights = -0.5 * torch.outer(torch.tensor([1.0, 2.0, 1.0]), error)
    torch.testing.assert_close(logits[0, 1], torch.tensor([0.5, -1.0, 1.0]) @ weights)


def test_online_sgd_learns_held_out_digits():
    """The protocol itself: plain SGD is well above chance after 20 examples of each of 5 digits."""
    digits = few_shot.sklearn_digits().only([5, 6, 7, 8, 9])
    e = few_shot.episodes(digits, 20, 5, 21, torch.Generator().manual_seed(0))
    correct = gradient_online_logits(e.images, e.labels, 5, "sgd", 0.3).argmax(-1) == e.labels
    assert few_shot.accuracy_after(correct, e.seen, [20])[20] > 0.6


TINY = [
    "evolve.generations=3",
    "evolve.population=4",
    "evolve.eval_every=2",
    "evolve.checkpoint_every=2",
    "fitness.shots=3",
    "eval.episodes=3",
    "eval.shots=6",
    "eval.after=[0,1,5]",
    "eval.select_after=2",
    "train.steps=10",
    "train.log_every=5",
    "train.eval_every=5",
    "train.checkpoint_every=5",
    "baselines.select_episodes=3",
    "baselines.sgd_lrs=[0.1,1.0]",
    "baselines.adam_lrs=[0.01]",
]


def test_a_tiny_run_of_every_arm_then_an_eval_on_mnist_and_omniglot(tmp_path):
    assert main(["run", "evolved-rule", "--out", str(tmp_path), "--no-progress", "--workers", "1", *sets(*TINY)]) == 0
    (run_dir,) = (tmp_path / "evolved-rule").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    for arm in ("evolved-rule", "sgd", "adam", "meta-rnn"):
        for n in (0, 1, 5):
            assert 0 <= summary["metrics"][f"{arm}/held_out/after_{n}"] <= 1
    assert summary["metrics"]["adam/lr"] == pytest.approx(0.01)
    assert summary["metrics"]["sgd/lr"] in (pytest.approx(0.1), pytest.approx(1.0))
    assert {"plots/accuracy_after_n.png", "plots/evolution.png"} <= set(summary["plots"])
    lines = (run_dir / "evolved-rule" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines if "fitness/best" in line] == [1, 2, 3]

    mnist = tmp_path / "mnist"
    mnist.mkdir()
    write_digits(mnist)
    omniglot = write_omniglot(tmp_path / "omniglot.zip", characters=6, drawings=4)
    extra = sets(f"data.mnist_dir={mnist}", f"data.omniglot={omniglot}", "eval.omniglot_shots=4")
    assert main(["eval", str(run_dir), "--threads", "1", *extra]) == 0
    (eval_dir,) = (run_dir / "evals").iterdir()
    again = json.loads((eval_dir / "summary.json").read_text())["metrics"]
    for arm in ("evolved-rule", "sgd", "adam", "meta-rnn"):
        assert 0 <= again[f"{arm}/mnist_held_out/after_1"] <= 1
        assert 0 <= again[f"{arm}/omniglot/after_1"] <= 1
        assert f"{arm}/omniglot/after_5" not in again  # 4 drawings: nothing is seen 5 times before
        # the digits' episodes come from the same seed: the same numbers as the run
        assert again[f"{arm}/held_out/after_1"] == summary["metrics"][f"{arm}/held_out/after_1"]

    published = publish_run(run_dir, tmp_path / "docs")  # the eval travels with the run
    assert json.loads((published / "evals" / eval_dir.name / "summary.json").read_text())["metrics"] == again
    assert (published / "evals" / eval_dir.name / "plots" / "accuracy_after_n.png").exists()
    assert not list(published.rglob("*.safetensors"))


def test_overlapping_classes_are_refused(tmp_path, capsys):
    args = ["run", "evolved-rule", "--out", str(tmp_path), *sets("data.test_classes=[4,5,6,7,8]")]
    assert main(args) == 2
    assert "data.test_classes [4, 5, 6, 7, 8] overlap data.train_classes" in capsys.readouterr().err
    assert not tmp_path.joinpath("evolved-rule").exists()
