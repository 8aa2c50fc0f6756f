"""The generalist's corpus and batches: rows are concatenated segments cut or padded to the
context, control windows start on timestep boundaries, prompts come from the same task, and only
action and target-text tokens are in the loss."""

import pytest
import torch

from engramlab.tasks import control
from engramlab.tasks import gato_tokens as tok
from engramlab.tasks import generalist as g


def test_rows_are_their_segments_end_to_end_then_padding():
    builder = g.CorpusBuilder()
    steps = tok.timesteps(torch.tensor([[11, 12], [13, 14]]), torch.tensor([[91], [92]]))
    at = builder.add(steps, g.kinds_of(steps))
    word = tok.text(tok.text_ids("hi"))
    hi = builder.add(word, g.kinds_of(word, text=True))
    corpus = builder.build()
    start = torch.tensor([[hi, at + 4, 0], [at, 0, hi]])
    length = torch.tensor([[3, 4, 0], [8, 0, 3]])
    batch = g.gather_rows(corpus, start, length, torch.tensor([[True] * 3, [False] * 3]), context=10)
    S, E, P = tok.SEPARATOR, tok.END, g.PAD
    assert batch.ids.tolist() == [
        [104, 105, E, 13, 14, S, 92, P, P, P],
        [11, 12, S, 91, 13, 14, S, 92, 104, 105],  # cut at the context
    ]
    assert batch.target.tolist() == [
        [True, True, True, False, False, False, True, False, False, False],
        [False, False, False, True, False, False, False, True, False, False],  # the text is not a target here
    ]
    assert batch.local.tolist()[1][:8] == [1, 2, 3, 0, 1, 2, 3, 0]


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
    cache = tmp_path_factory.mktemp("episodes")
    builder = g.CorpusBuilder()
    rows = [
        g.add_control_task(builder, control.load_or_generate(control.get_task(name), 3, 0, cache))
        for name in ["cartpole", "babyai-gotoredballgrey", "pendulum"]
    ]
    images = torch.rand(5, 1, 8, 8)
    captions = g.add_captions(builder, images, [f"digit {i}" for i in range(5)], patch=4)
    texts = g.add_texts(builder, ["go to the red ball"])
    return g.Sampler(builder.build(), g.episode_table(rows), captions, texts, context=64, prompt_fraction=0.5), images


def test_control_windows_start_on_a_timestep_and_prompts_come_from_the_same_task(sampler):
    sample, _ = sampler
    table = sample.episodes
    generator = torch.Generator().manual_seed(0)
    tasks = torch.randint(3, (2000,), generator=generator)
    start, length = g.control_segments(table, tasks, 64, 0.5, generator)
    episode_of = lambda token: torch.searchsorted(table.start, token, right=True) - 1  # noqa: E731
    for column in (1, 3):
        used = length[:, column] > 0
        episode = episode_of(start[used, column])
        assert (table.task[episode] == tasks[used]).all()
        assert ((start[used, column] - table.start[episode]) % table.step_tokens[episode] == 0).all()
        assert (length[used, column] % table.step_tokens[episode] == 0).all()
    prompted = (length[:, 1] > 0).float().mean().item()
    assert prompted == pytest.approx(0.5, abs=0.05)
    vectors = tasks != 1  # a BabyAI step (52 tokens) and mission overflow 64 tokens: the row is cut
    n = table.step_tokens[table.first[tasks[vectors]]]
    total = length[vectors].sum(dim=1)
    assert (total <= 64).all() and (total > 64 - 2 * n).all()  # whole steps fill the context


def test_batches_mix_the_three_kinds_and_target_only_actions_and_text(sampler):
    sample, images = sampler
    batch = sample(256, torch.Generator().manual_seed(1))
    assert set(batch.kind.tolist()) == {0, 1, 2}
    targets = batch.ids[batch.target]
    is_action = (targets >= tok.DISCRETE) & (targets < tok.SEPARATOR)
    is_text = (targets < tok.DISCRETE) | (targets == tok.END)
    assert (is_action | is_text).all()
    control_rows = batch.kind == 0
    control_targets = batch.ids[control_rows][batch.target[control_rows]]
    assert ((control_targets >= tok.DISCRETE) & (control_targets < tok.SEPARATOR)).all()  # never the mission
    assert (batch.ids[batch.is_patch] == tok.PATCH).all() and batch.is_patch[control_rows].sum() == 0
    assert len(batch.pixels) == len(batch.intervals) == int(batch.is_patch.sum())
    first_patches = tok.image_patches(images, 4)
    assert any(torch.equal(batch.pixels[:4], first_patches[i]) for i in range(5))


def test_a_babyai_row_without_prompt_starts_with_its_mission(sampler):
    sample, _ = sampler
    table = sample.episodes
    babyai = torch.ones(64, dtype=torch.long)
    start, length = g.control_segments(table, babyai, 64, 0.0, torch.Generator().manual_seed(2))
    assert (length[:, :2] == 0).all() and (length[:, 2] > 0).all()
    batch = g.gather_rows(sample.corpus, start, length, torch.zeros(64, 4, dtype=torch.bool), 64)
    assert tok.text_of(batch.ids[0]) == "go to the red ball"
