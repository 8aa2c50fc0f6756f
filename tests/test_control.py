"""Control tasks for the generalist: experts beat random, observations and actions as tokens,
action decoding stays legal, and the episode cache round-trips."""

import numpy as np
import pytest
import torch

from engramlab.errors import DataError
from engramlab.tasks import control
from engramlab.tasks import gato_tokens as tok


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown control task 'cartpol'; known: cartpole, acrobot"):
        control.get_task("cartpol")


@pytest.mark.parametrize("name", ["cartpole", "mountaincar", "babyai-gotoredballgrey"])
def test_the_expert_beats_the_random_policy_and_keeps_its_episodes(name):
    data = control.generate(control.get_task(name), episodes=3, seed=0, random_episodes=3)
    assert data.expert_score > data.random_score
    assert len(data.episodes) >= 2 and data.normalised(data.expert_score) == pytest.approx(1.0)
    e = data.episodes
    assert e.starts[-1] == len(e.observations) == len(e.actions)


def test_babyai_observations_are_49_cell_codes_and_a_direction_as_discrete_ids():
    task = control.get_task("babyai-gotoredballgrey")
    env = task.make()
    obs, _ = env.reset(seed=0)
    flat = control.flat_observation(task, obs)
    assert flat.shape == (50,) and flat[:49].max() < 198 and flat[49] == obs["direction"]
    i, j = 3, 6  # a cell of the view: column 3, row 6 is the agent's own square
    code = obs["image"][i, j, 0] + 11 * obs["image"][i, j, 1] + 66 * obs["image"][i, j, 2]
    assert flat[i * 7 + j] == code
    ids = control.observation_ids(task, torch.tensor(flat[None]))
    assert ((ids >= tok.DISCRETE) & (ids < tok.DISCRETE + tok.BINS)).all()
    assert control.mission_of(task, obs) == "go to the red ball"


def test_continuous_actions_decode_inside_the_bounds_and_discrete_ones_inside_n():
    pendulum = control.action_space(control.get_task("pendulum").make())
    assert pendulum.continuous and pendulum.tokens == 1 and pendulum.legal_ids() == (tok.CONTINUOUS, tok.SEPARATOR)
    for token in [tok.CONTINUOUS, tok.CONTINUOUS + 511, tok.SEPARATOR - 1]:
        action = pendulum.decode(torch.tensor([token]))
        assert action.dtype == np.float32 and -2 <= action[0] <= 2
    torques = torch.tensor([[-2.0], [0.3], [2.0]])
    decoded = np.stack([pendulum.decode(i) for i in pendulum.ids(torques)])
    assert np.abs(decoded - torques.numpy()).max() <= 2 / tok.BINS
    lander = control.action_space(control.get_task("lunarlander").make())
    assert lander.legal_ids() == (tok.DISCRETE, tok.DISCRETE + 4)
    assert [lander.decode(i) for i in lander.ids(torch.tensor([[0.0], [3.0]]))] == [0, 3]
    with pytest.raises(ValueError, match="action 4 outside the 4 legal actions"):
        lander.decode(torch.tensor([tok.DISCRETE + 4]))


def test_the_episode_cache_is_written_once_and_read_back(tmp_path):
    task = control.get_task("cartpole")
    first = control.load_or_generate(task, 2, 0, tmp_path)
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == ["cartpole-2ep-seed0.npz"]
    again = control.load_or_generate(task, 2, 0, tmp_path)
    np.testing.assert_array_equal(again.episodes.observations, first.episodes.observations)
    assert again.expert_score == first.expert_score and again.random_score == first.random_score
    files[0].write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cartpole-2ep-seed0.npz: not a readable episode cache"):
        control.load_or_generate(task, 2, 0, tmp_path)


def test_select_keeps_whole_episodes_in_order():
    observations = np.arange(6, dtype=np.float32)[:, None]
    e = control.Episodes(observations, np.zeros((6, 1)), np.array([0, 1, 3, 6]), np.array([1.0, 2, 3]), list("abc"))
    kept = e.select(np.array([True, False, True]))
    assert kept.observations[:, 0].tolist() == [0, 3, 4, 5] and kept.starts.tolist() == [0, 1, 4]
    assert kept.missions == ["a", "c"] and kept.returns.tolist() == [1.0, 3.0]
