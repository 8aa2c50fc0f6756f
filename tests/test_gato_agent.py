"""Gato as an agent: cached lockstep decoding takes the actions a full recomputation takes, the
context window slides without breaking episodes, actions stay legal."""

import numpy as np
import pytest
import torch

from engramlab.models.gato import Gato, GatoConfig
from engramlab.models.gato_agent import prefix_of, reset, run_episodes
from engramlab.tasks import control
from engramlab.tasks import gato_tokens as tok


def tiny(rotary: bool = False) -> Gato:
    torch.manual_seed(3)
    return Gato(GatoConfig(layers=2, width=32, heads=4, mlp=64, dropout=0.0, rotary=rotary))


def reference_returns(model: Gato, task, episodes: int, seed: int) -> list[float]:
    """One environment at a time, the whole history recomputed at every step, greedy."""
    model.eval()
    returns = []
    for i in range(episodes):
        env = task.make()
        (obs,) = reset(task, [env], seed + i)
        space = control.action_space(env)
        low, high = space.legal_ids()
        history = prefix_of(task, obs, None)
        total, done = 0.0, False
        while not done:
            flat = torch.from_numpy(control.flat_observation(task, obs))[None]
            step = tok.timesteps(control.observation_ids(task, flat), torch.zeros(1, 0, dtype=torch.long))
            history = tok.Tokens.cat([history, step])
            chosen = []
            for _ in range(space.tokens):
                with torch.no_grad():
                    logits, _ = model(history.ids[None], history.local[None])
                chosen.append(low + logits[0, -1, low:high].argmax())
                history = tok.Tokens.cat(
                    [history, tok.Tokens(chosen[-1][None], torch.tensor([tok.ACTION_POSITION]), torch.tensor([True]))]
                )
            obs, reward, terminated, truncated, _ = env.step(space.decode(torch.stack(chosen)))
            total, done = total + reward, terminated or truncated
        returns.append(total)
    return returns


SLOW = pytest.mark.slow  # a BabyAI level at a 4096-token context: seconds per episode


@pytest.mark.parametrize(
    "name,rotary",
    [
        ("cartpole", False),
        pytest.param("babyai-gotoobj", False, marks=SLOW),
        pytest.param("babyai-gotoobj", True, marks=SLOW),
    ],
)
def test_cached_lockstep_decoding_acts_as_full_recomputation(name, rotary):
    model, task = tiny(rotary), control.get_task(name)
    rollouts = run_episodes(model, task, episodes=3, seed=5, context=4096)
    assert rollouts.returns.tolist() == pytest.approx(reference_returns(model, task, 3, 5))


def test_a_short_context_slides_and_episodes_still_finish():
    model, task = tiny(), control.get_task("pendulum")  # 200 steps of 5 tokens in a 40-token window
    rollouts = run_episodes(model, task, episodes=2, seed=0, context=40, greedy=False)
    assert rollouts.lengths.tolist() == [200, 200] and np.isfinite(rollouts.returns).all()


def test_prompts_and_recording():
    model, task = tiny(), control.get_task("cartpole")
    prompt = tok.timesteps(control.observation_ids(task, torch.zeros(3, 4)), tok.discrete_ids(torch.ones(3, 1)))
    rollouts = run_episodes(model, task, episodes=2, seed=0, context=256, prompts=[prompt, prompt], record=True)
    assert len(rollouts.frames) == rollouts.lengths[0] and rollouts.frames[0].ndim == 3


def test_captions_are_decoded_with_the_token_layout_of_training():
    """Greedy captioning with the cache picks, at every place, the text token that a full pass over
    the training layout (patches, then the text as its own timestep) ranks first."""
    from engramlab.models.gato_agent import caption_ids
    from engramlab.tasks import generalist as data_lib

    torch.manual_seed(0)
    model = Gato(GatoConfig(layers=2, width=32, heads=4, mlp=64, dropout=0.0, patch_groups=4), patch=4).eval()
    images = torch.rand(2, 1, 8, 8)
    written = caption_ids(model, images, patch=4, longest=6)
    allowed = torch.full((tok.VOCAB_SIZE,), float("-inf"))
    allowed[:256], allowed[tok.END] = 0, 0
    for image, text in zip(images, written):
        builder = data_lib.CorpusBuilder()
        data_lib.add_captions(builder, image[None], [""], patch=4)  # the layout, with an empty caption...
        corpus = builder.build((1, 4, 4))
        ids = torch.cat([corpus.ids[:4], text])  # ...then the written ids as the text timestep
        local = torch.cat([corpus.local[:4], torch.arange(1, len(text) + 1)])
        with torch.no_grad():
            logits, _ = model(ids[None], local[None], (ids == tok.PATCH)[None], corpus.pixels, corpus.intervals)
        chosen = (logits[0, 3:-1] + allowed).argmax(-1)  # each text token from the place before it
        assert len(text) == 6 and torch.equal(chosen, text)
