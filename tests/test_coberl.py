"""CoBERL's parts: the gate, the attention masks, acting equals replaying, the contrastive loss
against a hand computation, GAE, MinAtar's exact save/restore and its memory variant, PPO's
resume, matched parameters, and a tiny run that beats a random policy."""

import math

import numpy as np
import pytest
import torch

from engramlab.experiments.rl.coberl import (
    AGENTS,
    CoBERLConfig,
    build_agent,
    difference_interval,
    iqm,
    learning_curve,
    parse_arm,
)
from engramlab.models.coberl import ActorCritic, GRUGate, causal_window, relic_loss, whole_episode
from engramlab.rl.ppo import PPOConfig, PPOStepper, gae, play

minatar = pytest.importorskip("minatar")

from engramlab.rl.minatar import MinAtarBatch  # noqa: E402


def test_gru_gate_keeps_the_residual_when_its_bias_is_large_and_mixes_otherwise():
    torch.manual_seed(0)
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    closed = GRUGate(8, bias=50.0)
    assert torch.allclose(closed(x, y), x, atol=1e-6)  # z = σ(… − 50) ≈ 0: g(x, y) = x
    opened = GRUGate(8, bias=-50.0)  # z ≈ 1: g = tanh(W_g y + U_g (r ⊙ x))
    w_r, w_z, w_g = opened.w(y).chunk(3, dim=-1)
    r = torch.sigmoid(w_r + opened.u(x).chunk(2, dim=-1)[0])
    assert torch.allclose(opened(x, y), torch.tanh(w_g + opened.u_g(r * x)), atol=1e-6)
    assert GRUGate(8)(x, y).shape == (4, 8)


def test_causal_window_reads_the_last_steps_of_the_own_episode_only():
    # one env, a cache of 2 (the first of which does not exist), a segment of 4 whose step 2 starts an episode
    first = torch.tensor([[False, False, True, False]])
    cache_valid = torch.tensor([[False, True]])
    readable = causal_window(first, cache_valid, window=2)
    # keys: [c0, c1, s0, s1, s2, s3]
    expected = torch.tensor(
        [
            [0, 1, 1, 0, 0, 0],  # s0 reads c1 (c0 does not exist) and itself
            [0, 1, 1, 1, 0, 0],  # s1: c1, s0, s1 (window 2 back)
            [0, 0, 0, 0, 1, 0],  # s2 starts an episode: only itself
            [0, 0, 0, 0, 1, 1],  # s3: s2, s3
        ],
        dtype=torch.bool,
    )
    assert torch.equal(readable[0], expected)


def test_whole_episode_reading_is_bidirectional_within_an_episode():
    first = torch.tensor([[True, False, True]])
    assert torch.equal(whole_episode(first)[0], torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool))


@pytest.mark.parametrize("core", ["none", "lstm", "gtrxl", "coberl"])
def test_acting_step_by_step_equals_replaying_the_rollout(core):
    """PPO's first ratio is exactly 1 only if training recomputes what acting computed: the same
    window of earlier steps, the same resets at episode starts, the same carried state."""
    torch.manual_seed(0)
    n, length = 3, 30
    model = ActorCritic(3, 3, core, hidden=32, memory=5)
    frames = (torch.rand(n, length, 3, 10, 10) < 0.2).float()
    first = torch.rand(n, length) < 0.1
    warm = (torch.rand(n, 9, 3, 10, 10) < 0.2).float()
    with torch.no_grad():
        _, _, state0, _ = model.unroll(warm, torch.zeros(n, 9, dtype=torch.bool), model.initial_state(n))
        state, logits = state0, []
        for t in range(length):
            step_logits, _, state = model.step(frames[:, t], first[:, t], state)
            logits.append(step_logits)
        replay, _, replay_state, _ = model.unroll(frames, first, state0)
    assert torch.allclose(torch.stack(logits, 1), replay, atol=1e-5)
    for key in state:
        assert torch.allclose(state[key].float(), replay_state[key].float(), atol=1e-5), key


def test_relic_loss_matches_a_hand_computation():
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    y = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    tau, alpha = 0.5, 0.3
    loss, logs = relic_loss(x, y, tau, alpha)

    def unit(v):
        return v / np.linalg.norm(v)

    xs, ys = [unit(v) for v in x.numpy()], [unit(v) for v in y.numpy()]
    phi = np.array([[xs[i] @ ys[j] / tau for j in range(3)] for i in range(3)])  # φ(x_i, y_j)
    q_x = np.exp(phi) / np.exp(phi).sum(1, keepdims=True)  # q_x[t, m] ∝ exp φ(x_t, y_m)
    q_y = np.exp(phi.T) / np.exp(phi.T).sum(1, keepdims=True)  # q_y[t, m] ∝ exp φ(y_t, x_m)
    nce = -np.mean([math.log(q_x[t, t]) for t in range(3)]) - np.mean([math.log(q_y[t, t]) for t in range(3)])
    kl = lambda p, q: float(np.sum(p * np.log(p / q)))
    consistency = np.mean([kl(q_y[t], q_x[t]) + kl(q_x[t], q_y[t]) for t in range(3)])
    assert loss.item() == pytest.approx(nce + alpha * consistency, rel=1e-5)
    assert logs["nce"] == pytest.approx(nce, rel=1e-5)


def test_contrastive_loss_masks_some_steps_and_trains_the_transformer_and_the_mask_vector():
    torch.manual_seed(0)
    model = ActorCritic(3, 3, "coberl", hidden=16, contrastive=1.0, mask_rate=0.15)
    frames = (torch.rand(4, 40, 3, 10, 10) < 0.2).float()
    first = torch.zeros(4, 40, dtype=torch.bool)
    *_, y = model.unroll(frames, first, model.initial_state(4))
    loss, logs = model.auxiliary_loss(y, first)
    loss.backward()
    assert loss.item() > 0 and 0 <= logs["acc"] <= 1
    assert model.mask_vector.grad.abs().sum() > 0
    assert model.transformer.layers[0].attention.qkv.weight.grad.abs().sum() > 0
    assert model.lstm.weight_ih.grad is None  # the auxiliary loss does not reach the LSTM
    no_aux = ActorCritic(3, 3, "coberl", hidden=16)
    assert no_aux.auxiliary_loss(y.detach(), first)[0].item() == 0.0
    with pytest.raises(ValueError, match="trains CoBERL's transformer"):
        ActorCritic(3, 3, "lstm", contrastive=1.0)


def test_gae_matches_a_hand_computation_and_stops_at_episode_starts():
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 0.2, 0.1]])
    first = torch.tensor([[True, False, True]])  # step 2 starts a new episode: step 1 ended one
    gamma, lam = 0.9, 0.8
    adv, ret = gae(rewards, values, first, torch.tensor([0.3]), torch.tensor([False]), gamma, lam)
    d2 = 2.0 + gamma * 0.3 - 0.1
    d1 = 0.0 - 0.2  # no bootstrap across the episode start
    d0 = 1.0 + gamma * 0.2 - 0.5
    a2, a1 = d2, d1
    a0 = d0 + gamma * lam * a1
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2]]))
    assert torch.allclose(ret, adv + values)


def test_minatar_memory_variant_drops_the_trail_and_batches_reset_by_themselves():
    full = MinAtarBatch("breakout", 4, 0, memory=False)
    memory = MinAtarBatch("breakout", 4, 0, memory=True)
    assert full.observation().shape == (4, 4, 10, 10) and memory.observation().shape == (4, 3, 10, 10)
    assert torch.equal(memory.observation(), full.observation()[:, [0, 1, 3]])  # paddle, ball, brick
    generator = torch.Generator().manual_seed(0)
    ended = 0
    for _ in range(200):
        _, _, done = memory.step(torch.randint(memory.n_actions, (4,), generator=generator))
        ended += int(done.sum())
    assert ended == len(memory.episodes.returns) > 0


@pytest.mark.parametrize("game", ["breakout", "asterix", "space_invaders", "seaquest", "freeway"])
def test_minatar_state_restores_every_game_exactly_mid_episode(game):
    generator = torch.Generator().manual_seed(1)
    batch = MinAtarBatch(game, 3, 0, memory=True)
    for _ in range(60):
        batch.step(torch.randint(batch.n_actions, (3,), generator=generator))
    saved = batch.state()
    actions = [torch.randint(batch.n_actions, (3,), generator=generator) for _ in range(80)]
    straight = [batch.step(a) for a in actions]
    restored = MinAtarBatch(game, 3, 99, memory=True)
    restored.load_state(saved)
    for (f1, r1, d1), (f2, r2, d2) in zip(straight, (restored.step(a) for a in actions)):
        assert torch.equal(f1, f2) and torch.equal(r1, r2) and torch.equal(d1, d2)


def tiny_stepper(core: str, seed: int = 0):
    cfg = PPOConfig(frames=8 * 16 * 4, envs=8, rollout=16, minibatches=2, epochs=2, log_every=1, checkpoint_every=2)
    envs = MinAtarBatch("breakout", cfg.envs, seed, memory=True)
    torch.manual_seed(seed)
    model = ActorCritic(envs.n_channels, envs.n_actions, core, hidden=16, layers=1, memory=4,
                        contrastive=1.0 if core == "coberl" else 0.0, updates=cfg.updates)  # fmt: skip
    return PPOStepper(model, envs, cfg, seed=seed), cfg


@pytest.mark.parametrize("core", ["lstm", "coberl"])
def test_ppo_resumes_mid_run_to_the_same_weights(core):
    straight, cfg = tiny_stepper(core)
    for n in range(1, cfg.updates + 1):
        straight.step(n)
    first, _ = tiny_stepper(core)
    for n in (1, 2):
        first.step(n)
    saved = first.state()
    resumed, _ = tiny_stepper(core, seed=0)
    resumed.restore(saved)
    for n in range(3, cfg.updates + 1):
        resumed.step(n)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_learning_curve_bins_episodes_by_frames_and_carries_empty_bins():
    rows = np.array([[100, 2, 4.0], [200, 0, 0.0], [300, 1, 3.0], [400, 1, 1.0]])  # frames, episodes, sum
    assert learning_curve(rows, 400, 4) == [2.0, 2.0, 3.0, 1.0]
    assert learning_curve(rows, 400, 2) == [2.0, 2.0]


def test_difference_interval_covers_the_difference_and_iqm_trims():
    diff, low, high = difference_interval([3.0, 4.0, 5.0], [1.0, 1.5, 2.0], 2000)
    assert diff == pytest.approx(2.5) and low <= diff <= high and low > 0
    assert iqm([0.0, 1.0, 2.0, 100.0]) == pytest.approx(1.5)


def test_quick_agents_have_parameters_matched_within_ten_percent():
    cfg = CoBERLConfig()
    counts = {a: sum(p.numel() for p in build_agent(cfg, a, 3, 3).parameters()) for a in AGENTS}
    assert max(counts.values()) <= 1.1 * min(counts.values()), counts


def test_arm_names_round_trip():
    assert parse_arm("space_invaders-coberl-noaux-seed12") == ("space_invaders", "coberl-noaux", 12)
    assert parse_arm("breakout-lstm-seed0") == ("breakout", "lstm", 0)


@pytest.mark.slow
def test_a_tiny_ppo_run_beats_the_random_policy_on_breakout():
    """Memoryless PPO with the trail channel (a Markov game) for 60k frames against a random
    policy: Breakout's random return is about 0.4 per episode."""
    torch.manual_seed(0)
    cfg = PPOConfig(frames=60_000, envs=16, rollout=64, minibatches=4, epochs=4, lr=1e-3)
    envs = MinAtarBatch("breakout", cfg.envs, 0, memory=False)
    model = ActorCritic(envs.n_channels, envs.n_actions, "none", hidden=64, updates=cfg.updates)
    stepper = PPOStepper(model, envs, cfg, seed=0)
    random_policy = ActorCritic(envs.n_channels, envs.n_actions, "none", hidden=64)
    torch.nn.init.zeros_(random_policy.policy.weight)  # uniform logits
    random_return = np.mean(play(random_policy, MinAtarBatch("breakout", 16, 7, memory=False), 64))
    for n in range(1, cfg.updates + 1):
        stepper.step(n)
    trained_return = np.mean(play(model, MinAtarBatch("breakout", 16, 7, memory=False), 64))
    assert trained_return > 2 * random_return + 0.5, (trained_return, random_return)


def test_unknown_games_agents_and_repeated_seeds_are_one_clear_error():
    from engramlab.errors import ConfigError
    from engramlab.experiments.rl.coberl import EXPERIMENT

    with pytest.raises(ConfigError, match="unknown MinAtar game 'pong'; known: breakout"):
        EXPERIMENT.arms(CoBERLConfig(games=["pong"]))
    with pytest.raises(ConfigError, match="unknown agent 'r2d2'; known: memoryless"):
        EXPERIMENT.arms(CoBERLConfig(agents=["r2d2"]))
    with pytest.raises(ConfigError, match="each seed once"):
        EXPERIMENT.arms(CoBERLConfig(seeds=[1, 1]))
    assert EXPERIMENT.arms(CoBERLConfig(agents=["lstm"], seeds=[0, 1])) == [
        "breakout-lstm-seed0",
        "breakout-lstm-seed1",
    ]


def test_a_missing_minatar_is_one_line_that_says_how_to_install_it(monkeypatch, tmp_path):
    import sys

    from engramlab.errors import DataError
    from engramlab.experiments.rl.coberl import EXPERIMENT

    monkeypatch.setitem(sys.modules, "minatar", None)  # import minatar now raises ImportError
    with pytest.raises(DataError, match=r'MinAtar is not installed: pip install "engramlab\[coberl\]"'):
        EXPERIMENT.prepare(CoBERLConfig())
