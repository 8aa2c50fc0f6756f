"""A 1-nearest-neighbour retrieval agent over expert (observation → action) pairs.

REGENT (Sridhar et al., ICLR 2025) shows that such a retrieval agent is a strong baseline on
in-distribution control, so it is reported beside the generalist (``../shared/reference/gato.md``).
Observations are the flat vectors of :func:`engramlab.tasks.control.flat_observation` (BabyAI: the
49 cell codes and the direction), searched by exact L2 distance with FAISS; for BabyAI only the
expert's observations under the same mission are searched (all of the task's when the mission
was never seen).
"""

from __future__ import annotations

import contextlib
import io

import faiss
import numpy as np

from engramlab.tasks import control


class NearestNeighbourAgent:
    def __init__(self, data: control.TaskData):
        e = data.episodes
        self.task = data.task
        self.continuous = control.action_space(data.task.make()).continuous
        self.actions = e.actions
        step_mission = np.repeat(np.array(e.missions, dtype=object), np.diff(e.starts))
        self.indices: dict[str, tuple[faiss.Index, np.ndarray]] = {}
        for mission in {*e.missions, ""}:
            rows = np.flatnonzero(step_mission == mission) if mission else np.arange(len(self.actions))
            index = faiss.IndexFlatL2(e.observations.shape[1])
            index.add(np.ascontiguousarray(e.observations[rows], dtype=np.float32))
            self.indices[mission] = (index, rows)

    def act(self, obs, mission: str):
        index, rows = self.indices.get(mission, self.indices[""])
        _, nearest = index.search(control.flat_observation(self.task, obs)[None], 1)
        action = self.actions[rows[nearest[0, 0]]]
        return action.astype(np.float32) if self.continuous else int(action[0])


def run_episodes(agent: NearestNeighbourAgent, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` episodes (env seeds ``seed`` …)."""
    env = agent.task.make()
    returns = []
    for i in range(episodes):
        with contextlib.redirect_stdout(io.StringIO()):
            obs, _ = env.reset(seed=seed + i)
        mission = control.mission_of(agent.task, obs)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs, mission))
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return np.array(returns)
