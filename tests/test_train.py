"""The training loop: resume equality, NaN guard, checkpoints, schedules."""

import json

import pytest
import torch
from torch import nn

from engramlab.engine import train as engine
from engramlab.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from engramlab.engine.rundir import read_metrics
from engramlab.engine.train import RMSpropTF1, TrainConfig, learning_rate, train
from engramlab.errors import NonFiniteLossError, RunDirError
from engramlab.models.parity import ParityModel
from engramlab.ponder.halting import PonderNet
from engramlab.ponder.steps import GRUStep
from engramlab.tasks.parity import ParityConfig, ParityTask

TASK = ParityTask(ParityConfig(n=8, train_k=(1, 8)))


def tiny_model():
    torch.manual_seed(0)
    return ParityModel(PonderNet(GRUStep(16, 16, 1), max_steps=5, lambda_p=0.3), "signs")


def sample(batch_size, generator):
    return TASK.sample(batch_size, generator)


class Crash(Exception):
    pass


def crashing_sampler(at_call):
    calls = {"n": 0}

    def fn(batch_size, generator):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise Crash
        return sample(batch_size, generator)

    return fn


CFG = TrainConfig(steps=40, batch_size=16, lr=3e-3, log_every=5, eval_every=10, checkpoint_every=10, decay="cosine")


def monitor(model):
    x = TASK.sample(64, torch.Generator().manual_seed(99))
    parity, steps = model.predict(x.x, generator=torch.Generator().manual_seed(1))
    return {"accuracy": (parity == x.y).float().mean().item(), "steps": steps.float().mean().item()}


def without_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_resume_after_a_crash_ends_exactly_like_an_uninterrupted_run(tmp_path):
    straight = tiny_model()
    result = train(straight, sample, CFG, tmp_path / "straight", seed=3, monitor=monitor)

    crashed = tiny_model()
    with pytest.raises(Crash):  # dies at step 27: the last checkpoint is step 20, metrics go to step 25
        train(crashed, crashing_sampler(27), CFG, tmp_path / "resumed", seed=3, monitor=monitor)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.safetensors").step == 20
    resumed = tiny_model()
    again = train(resumed, sample, CFG, tmp_path / "resumed", seed=3, monitor=monitor, resume=True)

    assert again.resumed_from == 20
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert without_time(read_metrics(tmp_path / "straight")) == without_time(read_metrics(tmp_path / "resumed"))
    assert result.monitor_metrics == again.monitor_metrics


def test_a_sampler_with_a_step_parameter_gets_each_update_once_in_order_across_a_resume(tmp_path):
    seen = []

    def stepped(batch_size, generator, step):
        seen.append(step)
        return sample(batch_size, generator)

    cfg = CFG.model_copy(update={"steps": 30})
    train(tiny_model(), stepped, cfg.model_copy(update={"steps": 20}), tmp_path, seed=3)
    train(tiny_model(), stepped, cfg, tmp_path, seed=3, resume=True)
    assert seen == list(range(1, 31))


def test_checkpoint_holds_model_optimizer_rng_and_step(tmp_path):
    model = tiny_model()
    train(model, sample, CFG.model_copy(update={"steps": 10}), tmp_path, seed=0)
    ckpt = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert ckpt.step == 10
    assert set(ckpt.model) == set(model.state_dict())
    assert ckpt.optimizer["state"] and "betas" in ckpt.optimizer["param_groups"][0]
    assert {"torch", "data0"} <= set(ckpt.rng)
    assert ckpt.extra["wall_time_s"] > 0
    weights_only = load_checkpoint(tmp_path / "checkpoint.safetensors", with_state=False)
    assert weights_only.optimizer is None and not weights_only.rng


def test_checkpoint_write_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    state = {"w": torch.arange(6.0).view(2, 3)}
    save_checkpoint(path, Checkpoint(step=5, model=state, extra={"note": "a"}))
    save_checkpoint(path, Checkpoint(step=6, model={"w": state["w"] + 1}))
    loaded = load_checkpoint(path)
    assert loaded.step == 6 and torch.equal(loaded.model["w"], state["w"] + 1)
    assert load_checkpoint(tmp_path / "checkpoint.previous.safetensors").step == 5  # the one before is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.previous.safetensors", "checkpoint.safetensors"]


def test_corrupt_or_missing_checkpoint_gives_one_clear_line(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, Checkpoint(step=1, model={"w": torch.ones(100)}))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(RunDirError) as err:
        load_checkpoint(path)
    assert "unreadable checkpoint" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(RunDirError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


class ExplodingModel(nn.Module):
    """A linear model whose loss turns NaN at a given step."""

    def __init__(self, at_step):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.calls, self.at_step = 0, at_step

    def forward(self, batch):
        self.calls += 1
        loss = (self.w * batch).sum() ** 2
        if self.calls == self.at_step:
            loss = loss * float("nan")
        return loss, {"loss": loss.item()}


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(steps=30, batch_size=4, log_every=5, checkpoint_every=10, eval_every=10)
    with pytest.raises(NonFiniteLossError) as err:
        train(ExplodingModel(at_step=15), lambda b, g: torch.randn(b, 3, generator=g), cfg, tmp_path, seed=0)
    assert "loss is nan at step 15" in str(err.value)
    assert "last good checkpoint kept" in str(err.value)
    assert load_checkpoint(tmp_path / "checkpoint.safetensors").step == 10


def test_learning_rate_schedules():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, decay="cosine", min_lr_ratio=0.1)
    assert learning_rate(cfg, 5) == pytest.approx(0.5)
    assert learning_rate(cfg, 10) == pytest.approx(1.0)
    assert learning_rate(cfg, 100) == pytest.approx(0.1)
    assert learning_rate(cfg, 55) == pytest.approx(0.55)
    linear = cfg.model_copy(update={"decay": "linear", "warmup_steps": 0, "min_lr_ratio": 0.0})
    assert learning_rate(linear, 50) == pytest.approx(0.5)
    assert learning_rate(TrainConfig(lr=0.3), 77) == 0.3
    # MemN2N's schedule: halve every 15 epochs (here every 10 steps)
    halving = TrainConfig(steps=100, lr=0.01, decay="step", decay_every=10, decay_factor=0.5)
    assert [learning_rate(halving, s) for s in (1, 10, 11, 20, 21, 35)] == pytest.approx(
        [0.01, 0.01, 0.005, 0.005, 0.0025, 0.00125]
    )
    # the authors' MemN2N code: the clock starts after the linear-start phase (here 25 steps)
    later = halving.model_copy(update={"decay_start": 25})
    assert [learning_rate(later, s) for s in (1, 25, 35, 36, 45, 46)] == pytest.approx(
        [0.01, 0.01, 0.01, 0.005, 0.005, 0.0025]
    )


def test_metrics_file_is_jsonl_with_train_and_eval_rows(tmp_path):
    train(tiny_model(), sample, CFG.model_copy(update={"steps": 20}), tmp_path, seed=0, monitor=monitor)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [5, 10, 15, 20]
    assert [r["step"] for r in rows if "eval/accuracy" in r] == [10, 20]
    assert list(tmp_path.glob("events.out.tfevents.*")), "TensorBoard events are written"


def test_rmsprop_tf1_follows_tensorflow_1s_update_by_hand():
    """ms starts at 1 and epsilon sits inside the square root (TensorFlow 1's RMSPropOptimizer)."""
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = RMSpropTF1([w], lr=0.1, decay=0.9, momentum=0.5, eps=1e-10)
    grads = [torch.tensor([0.5, -1.0]), torch.tensor([0.2, 0.3])]
    expected, ms, mom = torch.tensor([1.0, -2.0]), torch.ones(2), torch.zeros(2)
    for g in grads:
        w.grad = g.clone()
        optimizer.step()
        ms = 0.9 * ms + 0.1 * g**2
        mom = 0.5 * mom + 0.1 * g / torch.sqrt(ms + 1e-10)
        expected = expected - mom
        assert torch.allclose(w.detach(), expected, atol=1e-7)
    # the first step of a gradient of 1e-5 is about lr * 1e-5 (TensorFlow), not lr (PyTorch's RMSprop)
    v = torch.nn.Parameter(torch.zeros(1))
    tf1 = RMSpropTF1([v], lr=1.0)
    v.grad = torch.tensor([1e-5])
    tf1.step()
    assert abs(v.item()) == pytest.approx(1e-5 / 0.9**0.5, rel=1e-4)  # ms = 0.9 * 1 + 0.1 * 1e-10


def test_grad_value_clip_clips_every_element_after_the_norm_clip(tmp_path, monkeypatch):
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(3))

        def forward(self, batch):
            loss = (self.w * torch.tensor([1e-3, -2e-6, 5.0])).sum()
            return loss, {"loss": loss.item()}

    class Spy(torch.optim.SGD):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["params"][0].grad.clone())
            return super().step(closure)

    cfg = TrainConfig(steps=1, batch_size=1, optimizer="sgd", lr=0.1, grad_clip=0.0, grad_value_clip=1e-5,
                      log_every=1, eval_every=1, checkpoint_every=1)  # fmt: skip
    monkeypatch.setattr(engine, "make_optimizer", lambda m, c: Spy(m.parameters(), lr=c.lr))
    train(Probe(), lambda batch, generator: None, cfg, tmp_path, seed=0)
    assert torch.allclose(seen[0], torch.tensor([1e-5, -2e-6, 1e-5]))
