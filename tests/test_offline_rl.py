"""Offline RL: the losses against hand computations, the datasets and their errors, the arms' names,
and (slow tier) a tiny run that learns CartPole from offline data above the data's mean return."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engramlab.config import resolve
from engramlab.errors import ConfigError, DataError
from engramlab.experiments.offline.offline_rl import EXPERIMENT, METHODS, OfflineRLConfig, parse_arm, rows_of
from engramlab.models import offline_rl as agents
from engramlab.tasks import offline

# --------------------------------------------------------------------------------------------
# the pieces, by hand


def test_kl_to_anchor_matches_hand_computation():
    anchor = torch.tensor([[math.log(0.5), math.log(0.25), math.log(0.25)]])
    policy = torch.tensor([[math.log(0.25), math.log(0.25), math.log(0.5)]])
    # KL(p || q) = 0.5 ln(0.5/0.25) + 0.25 ln(1) + 0.25 ln(0.25/0.5) = 0.25 ln 2
    assert agents.kl_to_anchor(anchor, policy).item() == pytest.approx(0.25 * math.log(2), abs=1e-6)
    assert agents.kl_to_anchor(anchor, anchor).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_gradient_reaches_the_policy_only():
    anchor = torch.randn(4, 3, requires_grad=True)
    policy = torch.randn(4, 3, requires_grad=True)
    agents.kl_to_anchor(anchor, policy).sum().backward()
    assert anchor.grad is None and policy.grad is not None
    # d KL / d logits = softmax(policy) - softmax(anchor)
    torch.testing.assert_close(policy.grad, policy.softmax(-1).detach() - anchor.softmax(-1).detach())


def test_advantage_weights_by_hand():
    advantages = torch.tensor([-1.0, 0.0, 0.5, 10.0])
    weights = agents.advantage_weights(advantages, temperature=0.5, max_weight=20.0)
    expected = torch.tensor([math.exp(-2.0), 1.0, math.exp(1.0), 20.0])  # exp(A / 0.5), the last clipped
    torch.testing.assert_close(weights, expected)


def test_behaviour_advantages_by_hand():
    q = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    anchor_logits = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    actions = torch.tensor([1, 0])
    # V = [2, 2]: A = [[-1, 1], [0, 0]]; the data actions' advantages [1, 0] have std √½
    raw = agents.behaviour_advantages(q, anchor_logits, actions)
    torch.testing.assert_close(raw, torch.tensor([[-1.0, 1.0], [0.0, 0.0]]))
    normalised = agents.behaviour_advantages(q, anchor_logits, actions, normalise=True)
    torch.testing.assert_close(normalised, raw / math.sqrt(0.5), rtol=1e-5, atol=1e-6)


def test_improved_policy_and_expected_advantage_by_hand():
    anchor_logits = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    advantages = torch.tensor([[1.0, -1.0], [0.0, 0.0]])
    # π* ∝ π_BC exp(A / τ), τ = 1: [e, e⁻¹] / (e + e⁻¹); with A = 0 π* is π_BC
    e = math.e
    expected = torch.tensor([[e / (e + 1 / e), (1 / e) / (e + 1 / e)], [0.9, 0.1]])
    torch.testing.assert_close(agents.improved_policy(anchor_logits, advantages, 1.0), expected)
    logits = torch.zeros(1, 2, requires_grad=True)
    value = agents.expected_advantage(logits, advantages[:1])
    value.sum().backward()
    # d/dz_i Σ_a softmax(z)_a A_a = π_i (A_i − Σ_a π_a A_a) = 0.5 · [1, −1]
    torch.testing.assert_close(value, torch.tensor([0.0]))
    torch.testing.assert_close(logits.grad, torch.tensor([[0.5, -0.5]]))


@pytest.mark.parametrize("extraction", ["all-actions", "policy-gradient"])
def test_every_extraction_moves_the_policy_towards_the_better_action(extraction):
    """One state, Q^β fixed with action 1 better: after the switch, the unanchored policy's
    probability of action 1 rises above π_BC's."""
    torch.manual_seed(0)
    model = agents.AnchoredActorCritic(3, 2, hidden=8, betas=(0.0,), pretrain_steps=1, extraction=extraction)
    batch = {"observations": torch.ones(8, 3), "actions": torch.tensor([0, 1] * 4), "rewards": torch.zeros(8),
             "next_observations": torch.ones(8, 3), "terminals": torch.ones(8)}  # fmt: skip
    with torch.no_grad():
        model.q_target[-1].weight.zero_()
        model.q_target[-1].bias.copy_(torch.tensor([0.0, 1.0]))
    model(batch)  # the BC step; the next step copies π_BC into the policy
    optimiser = torch.optim.SGD(model.policies.parameters(), lr=0.1)
    bc_probability = model.anchor(batch["observations"][:1]).softmax(-1)[0, 1].item()
    for _ in range(20):
        loss, _ = model(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert model.policies[0](batch["observations"][:1]).softmax(-1)[0, 1].item() > bc_probability + 0.05


def test_unknown_extraction_is_refused():
    with pytest.raises(ValueError, match="extraction 'greedy'"):
        agents.AnchoredActorCritic(3, 2, extraction="greedy")


def test_expectile_loss_by_hand():
    diff = torch.tensor([2.0, -1.0])
    # τ = 0.7: 0.7·4 for the positive difference, 0.3·1 for the negative one; mean
    assert agents.expectile_loss(diff, 0.7).item() == pytest.approx((0.7 * 4 + 0.3 * 1) / 2)


def test_entropy_of_uniform_policy_is_log_actions():
    assert agents.entropy(torch.zeros(2, 4)).tolist() == pytest.approx([math.log(4)] * 2)


def test_anchored_actor_critic_starts_every_policy_from_bc_at_the_switch():
    torch.manual_seed(0)
    model = agents.AnchoredActorCritic(4, 2, hidden=8, pretrain_steps=2, betas=(0.0, 1.0))
    batch = {
        "observations": torch.randn(16, 4),
        "next_observations": torch.randn(16, 4),
        "actions": torch.randint(2, (16,)),
        "rewards": torch.ones(16),
        "terminals": torch.zeros(16),
    }
    for _ in range(2):  # phase 1: only π_BC and Q have a loss
        loss, logs = model(batch)
        loss.backward()
        assert all(p.grad is None for p in model.policies.parameters())
        assert "bc_loss" in logs
    anchor = model.anchor[0].weight.detach().clone()
    _, logs = model(batch)  # the first phase-2 update copies π_BC into every policy
    for policy in model.policies:
        torch.testing.assert_close(policy[0].weight, anchor)
    assert logs["kl_to_bc/beta0"] == pytest.approx(0.0, abs=1e-6)  # π = π_BC: no divergence yet
    assert set(model.modes) == {"beta0", "beta1", "inference", "anchor"}
    with pytest.raises(ValueError, match="mode 'beta2'"):
        model.act(batch["observations"], mode="beta2")


def test_inference_mode_is_greedy_on_q_among_likely_bc_actions():
    model = agents.AnchoredActorCritic(1, 3, hidden=4, layers=1, threshold=0.2)
    with torch.no_grad():
        for net in (model.anchor, model.q):
            for p in net.parameters():
                p.zero_()
        model.anchor[-1].bias.copy_(torch.log(torch.tensor([0.6, 0.3, 0.1])))  # π_BC = (0.6, 0.3, 0.1)
        model.q[-1].bias.copy_(torch.tensor([1.0, 2.0, 5.0]))  # Q prefers action 2, which π_BC rules out
    assert model.act(torch.zeros(5, 1), mode="inference").tolist() == [1] * 5


# --------------------------------------------------------------------------------------------
# data


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cache = tmp_path_factory.mktemp("offline")
    return offline.load_or_generate("cartpole", "mixed", 2000, 0, cache, score_episodes=3), cache


def test_mixed_data_come_from_every_behaviour_policy(small):
    data, _ = small
    policies = set(data.episode_policies.tolist())
    assert policies == {"expert", "medium", "bad", "random"}
    assert data.episode_starts[-1] == len(data) >= 2000
    assert data.meta["expert_score"] == 500.0 and data.meta["random_score"] < 50
    assert data.normalised(data.meta["expert_score"]) == pytest.approx(100.0)
    # a step's next observation is the following step's observation inside an episode
    first = slice(data.episode_starts[0], data.episode_starts[1])
    np.testing.assert_array_equal(data.next_observations[first][:-1], data.observations[first][1:])


def test_quantiles_and_filtering():
    data = offline.Dataset(
        *[np.zeros((6, 1), np.float32)] * 1,
        actions=np.zeros(6, np.int64),
        rewards=np.zeros(6, np.float32),
        next_observations=np.zeros((6, 1), np.float32),
        terminals=np.zeros(6, bool),
        timeouts=np.zeros(6, bool),
        episode_starts=np.array([0, 1, 3, 6]),
        episode_returns=np.array([5.0, 1.0, 5.0]),
        episode_policies=np.array(["a", "b", "c"]),
        meta={"expert_score": 5.0, "random_score": 1.0, "actions": 2},
    )
    assert data.return_quantiles().tolist() == [0.75, 0.0, 0.75]  # tied returns share their mean rank
    assert sorted(data.top_episodes(0.34).tolist()) == [0]  # one episode of three, ties by order
    sampler = offline.TransitionSampler(data, np.array([2]))
    assert sampler.size == 3  # only episode 2's steps
    batch = sampler(8, torch.Generator().manual_seed(0))
    assert batch["quantiles"].eq(0.75).all()


def test_cache_round_trip_and_errors(small, tmp_path):
    data, cache = small
    path = offline.cache_path(cache, "cartpole", "mixed", 2000, 0)
    again = offline.load(path)
    np.testing.assert_array_equal(again.actions, data.actions)
    assert again.meta == data.meta
    with pytest.raises(DataError, match="no such dataset file"):
        offline.load(tmp_path / "missing.npz")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="broken.npz: not a readable dataset"):
        offline.load(broken)
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(DataError, match="text.npz: not a readable dataset \\(not an .npz archive\\)"):
        offline.load(text)
    partial = tmp_path / "partial.npz"
    np.savez(partial, observations=data.observations)
    with pytest.raises(DataError, match="missing actions"):
        offline.load(partial)
    assert not list(cache.glob("*.tmp.npz"))  # the atomic write left no temporary file


def test_minari_round_trip(small, tmp_path, monkeypatch):
    pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    data, _ = small
    dataset_id = offline.to_minari(data)
    assert dataset_id == "engramlab/cartpole/mixed-v0"
    again = offline.from_minari(dataset_id)
    for key in offline.ARRAY_KEYS:
        np.testing.assert_array_equal(getattr(again, key), getattr(data, key), err_msg=key)
    assert again.normalised(data.meta["expert_score"]) == pytest.approx(100.0)
    with pytest.raises(DataError, match="Minari dataset 'engramlab/cartpole/none-v0'"):
        offline.from_minari("engramlab/cartpole/none-v0")


def test_evaluate_replays_a_policy_exactly():
    expert = offline.BEHAVIOURS["cartpole"]["expert"]
    rng = np.random.default_rng(0)
    act = lambda obs, gen: torch.tensor([expert(o.numpy(), rng) for o in obs])
    returns = offline.evaluate("cartpole", act, 3, 123)
    _, _, reference = offline.rollout("cartpole", expert, 3, 123)
    np.testing.assert_array_equal(returns, reference)


def test_babyai_features_one_hot_each_cell_by_hand():
    # cell code = object + 11 colour + 66 state: a red (colour 0) ball (object 6), then a grey
    # (colour 5) wall (object 2) in state 1; the last number is the direction, 3
    flat = torch.zeros(1, 50)
    flat[0, 0], flat[0, 1], flat[0, -1] = 6 + 11 * 0, 2 + 11 * 5 + 66 * 1, 3
    features = offline.features("babyai-gotoredball", flat)
    assert features.shape == (1, 49 * 11 + 49 * 6 + 49 * 3 + 4)
    objects, colours = features[0, : 49 * 11].view(49, 11), features[0, 49 * 11 : 49 * 17].view(49, 6)
    states, direction = features[0, 49 * 17 : 49 * 20].view(49, 3), features[0, 49 * 20 :]
    assert objects[0].argmax() == 6 and colours[0].argmax() == 0 and states[0].argmax() == 0
    assert objects[1].argmax() == 2 and colours[1].argmax() == 5 and states[1].argmax() == 1
    assert objects[2].argmax() == 0  # an empty code 0 is "unseen", object 0
    assert direction.tolist() == [0, 0, 0, 1] and features.sum() == 49 * 3 + 1
    vector = torch.randn(4, 4)
    assert offline.features("cartpole", vector) is vector  # vector observations pass as they are


def test_babyai_behaviours_rank_by_skill():
    """The bot reaches the red ball fastest; the tour of every distractor takes longer; the data
    carry the flat 50-number view, which the features expand."""
    scores = offline.behaviour_scores("babyai-gotoredball", 10, 0)
    assert scores["expert"] > scores["medium"] > scores["random"] and scores["expert"] > 0.85
    arrays, lengths, returns = offline.rollout(
        "babyai-gotoredball", offline.BEHAVIOURS["babyai-gotoredball"]["expert"], 2, 0
    )
    assert arrays["observations"].shape == (lengths.sum(), 50) and (returns > 0).all()


# --------------------------------------------------------------------------------------------
# the experiment's config and arms


def test_arm_names_parse_back():
    cfg = OfflineRLConfig(data={"envs": ["cartpole", "lunarlander"], "datasets": ["mixed", "random-heavy"]})
    arms = EXPERIMENT.arms(cfg)
    assert len(arms) == 2 * 2 * len(METHODS) * 3
    for arm in arms:
        env, name, method, seed = parse_arm(arm)
        assert arm == f"{env}-{name}-{method}-seed{seed}"
    assert parse_arm("lunarlander-random-heavy-filtered-bc-seed2") == ("lunarlander", "random-heavy", "filtered-bc", 2)
    assert rows_of(cfg, "offline-ac") == ["ac-beta0", "ac-beta0.1", "ac-beta1", "ac-inference", "ac-anchor"]


@pytest.mark.parametrize(
    "override, words",
    [
        ("data.datasets=[mixed, noisy]", "unknown name 'noisy'"),
        ("data.envs=[pong]", "unknown name 'pong'"),
        ("methods=[bc, cql]", "unknown method 'cql'"),
        ("agent.headline_beta=0.5", "must be one of agent.betas"),
    ],
)
def test_bad_config_is_one_line(override, words):
    with pytest.raises(ConfigError, match=words) as info:
        resolve(OfflineRLConfig, EXPERIMENT.presets["quick"], overrides=[override])
    assert "\n" not in str(info.value)


def test_a_missing_cache_file_is_an_error_when_generation_is_off(tmp_path):
    cfg = OfflineRLConfig(
        data={"envs": ["cartpole"], "datasets": ["mixed"], "cache_dir": str(tmp_path), "generate": False}
    )
    with pytest.raises(DataError, match="cartpole-mixed-100000-seed0.npz: no such dataset file"):
        EXPERIMENT.prepare(cfg)


# --------------------------------------------------------------------------------------------
# a tiny run learns


@pytest.mark.slow
def test_tiny_run_learns_cartpole_above_the_data(tmp_path):
    """Filtered BC and the anchored actor-critic, trained on the mixed data for 3000 updates, play
    CartPole better than the data's average episode."""
    from engramlab.engine.runner import run_experiment

    overrides = [
        "data.envs=[cartpole]", "data.datasets=[mixed]", "seeds=[0]", "methods=[filtered-bc, offline-ac]",
        "data.transitions=20000", "data.score_episodes=10", f"data.cache_dir={tmp_path / 'cache'}",
        "agent.hidden=64", "train.steps=3000", "train.eval_every=3000", "train.checkpoint_every=1000",
        "eval.episodes=10", "eval.monitor_episodes=2",
    ]  # fmt: skip
    cfg = resolve(OfflineRLConfig, EXPERIMENT.presets["quick"], overrides=overrides)
    (tmp_path / "run").mkdir()
    run_experiment(EXPERIMENT, cfg, tmp_path / "run", preset="quick", overrides=overrides, threads=1, progress=False)
    from engramlab.engine.rundir import read_json

    arm = read_json(tmp_path / "run" / "cartpole-mixed-offline-ac-seed0" / "summary.json")["results"]
    data_score = arm["data_normalised"]
    assert arm["rows"]["ac-beta0.1"]["normalised"] > data_score + 10
    fbc = read_json(tmp_path / "run" / "cartpole-mixed-filtered-bc-seed0" / "summary.json")["results"]
    assert fbc["rows"]["filtered-bc"]["normalised"] > data_score + 10
