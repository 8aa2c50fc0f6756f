"""Gato's tokenisation: μ-law and bins, id ranges, the timestep layout, local positions and the
loss mask on hand-built examples, image patches."""

import pytest
import torch

from engramlab.tasks import gato_tokens as tok


def test_mu_law_matches_the_formula_is_monotonic_and_inverts():
    x = torch.tensor([-256.0, -1.0, 0.0, 0.5, 256.0], dtype=torch.float64)
    expected = torch.sign(x) * torch.log(x.abs() * 100 + 1) / torch.log(torch.tensor(256 * 100 + 1.0))
    torch.testing.assert_close(tok.mu_law(x), expected.to(torch.float64))
    assert tok.mu_law(x)[[0, 2, 4]].tolist() == [-1.0, 0.0, 1.0]
    grid = torch.linspace(-300, 300, 10_001, dtype=torch.float64)
    assert (tok.mu_law(grid).diff() > 0).all()
    torch.testing.assert_close(tok.inverse_mu_law(tok.mu_law(grid)), grid)


def test_bins_are_monotonic_and_round_trip_exactly_to_the_bin():
    y = torch.linspace(-1.5, 1.5, 20_001)
    bins = tok.to_bin(y)
    assert bins.min() == 0 and bins.max() == tok.BINS - 1 and (bins.diff() >= 0).all()
    every = torch.arange(tok.BINS)
    assert torch.equal(tok.to_bin(tok.bin_centre(every)), every)
    inside = y[y.abs() <= 1]
    assert (tok.bin_centre(tok.to_bin(inside)) - inside).abs().max() <= 1 / tok.BINS + 1e-6


def test_continuous_actions_decode_exactly_to_the_bin_within_the_bounds():
    low, high = torch.tensor([-2.0]), torch.tensor([2.0])  # Pendulum's torque
    ids = tok.CONTINUOUS + torch.arange(tok.BINS)[:, None]
    values = tok.continuous_values(ids, low, high)
    assert values.min() > -2 and values.max() < 2
    assert torch.equal(tok.continuous_ids(values, low, high), ids)
    x = torch.linspace(-2, 2, 5001)[:, None]
    assert (tok.continuous_values(tok.continuous_ids(x, low, high), low, high) - x).abs().max() <= 2 / tok.BINS + 1e-6


def test_continuous_observations_go_through_mu_law_and_keep_their_order():
    x = torch.linspace(-20, 20, 4001)
    ids = tok.continuous_ids(x)
    assert (ids.diff() >= 0).all()
    step = lambda v: (tok.continuous_values(tok.continuous_ids(torch.tensor([v])) + 1) - v).item()  # noqa: E731
    assert step(0.01) < step(10.0) / 50  # μ-law spends its bins where values are small
    decoded = tok.continuous_values(ids)
    assert ((decoded - x).abs() <= 0.01 * x.abs() + 0.05).all()


def test_id_ranges_never_overlap_and_cover_the_vocabulary():
    ranges = {
        "text": range(tok.TEXT, tok.TEXT + 256),
        "discrete": range(tok.DISCRETE, tok.DISCRETE + tok.BINS),
        "continuous": range(tok.CONTINUOUS, tok.CONTINUOUS + tok.BINS),
        "special": range(tok.SEPARATOR, tok.PATCH + 1),
    }
    every = [i for r in ranges.values() for i in r]
    assert len(every) == len(set(every)) == tok.VOCAB_SIZE and min(every) == 0 and max(every) == tok.VOCAB_SIZE - 1
    assert tok.text_ids("z").item() in ranges["text"]
    assert tok.discrete_ids(torch.tensor([0, 1023])).tolist() == [ranges["discrete"][0], ranges["discrete"][-1]]
    assert set(tok.continuous_ids(torch.tensor([-1e9, 0.0, 1e9])).tolist()) <= set(ranges["continuous"])


def test_out_of_range_values_are_an_error_naming_the_range():
    with pytest.raises(ValueError, match=r"discrete value ids must lie in \[0, 1024\); got \[0, 1024\]"):
        tok.discrete_ids(torch.tensor([0, 1024]))
    with pytest.raises(ValueError, match="continuous ids must lie in"):
        tok.continuous_values(torch.tensor([5]))


def test_a_hand_built_episode_is_laid_out_observation_separator_action():
    obs = torch.tensor([[11, 12, 13], [21, 22, 23]])
    act = torch.tensor([[91, 92], [93, 94]])
    seq = tok.timesteps(obs, act)
    S = tok.SEPARATOR
    assert seq.ids.tolist() == [11, 12, 13, S, 91, 92, 21, 22, 23, S, 93, 94]
    assert seq.local.tolist() == [1, 2, 3, 4, 0, 0] * 2  # both action tokens share ACTION_POSITION
    assert seq.target.tolist() == [False, False, False, False, True, True] * 2


def test_text_round_trips_through_bytes_and_stops_at_end():
    mission = "go to the red ball — é"
    seq = tok.text(tok.text_ids(mission))
    assert seq.ids[-1].item() == tok.END and seq.target.all()
    assert seq.local.tolist() == list(range(1, len(seq.ids) + 1))
    assert tok.text_of(seq.ids) == mission
    assert tok.text_of(torch.cat([seq.ids, tok.text_ids("ignored")])) == mission
    context = tok.text(tok.text_ids("hi"), end=False, target=False)
    assert context.ids.tolist() == [104, 105] and not context.target.any()
    both = tok.Tokens.cat([context, seq])
    assert len(both.ids) == 2 + len(seq.ids) and both.target.sum() == len(seq.ids)


def test_image_patches_are_raster_ordered_and_scaled():
    image = torch.zeros(1, 1, 4, 6)
    image[0, 0, :2, 2:4] = 1.0  # top row, middle patch
    image[0, 0, 2:, 4:] = 0.5  # bottom row, last patch
    patches = tok.image_patches(image, 2)
    assert patches.shape == (1, 6, 1, 2, 2)
    means = patches.mean(dim=(2, 3, 4))[0]
    assert means.tolist() == pytest.approx([-0.25, 0.25, -0.25, -0.25, -0.25, 0.0])
    with pytest.raises(ValueError, match="not a multiple of the patch size 4"):
        tok.image_patches(image, 4)


def test_patch_intervals_split_the_image_into_quantised_rows_and_columns():
    iv = tok.patch_intervals(28, 28, 7)  # 4 x 4 patches
    assert iv.shape == (16, 2, 2)
    assert iv[0].tolist() == [[0, 32], [0, 32]]
    assert iv[5].tolist() == [[32, 64], [32, 64]]  # second row, second column
    assert iv[15].tolist() == [[96, 128], [96, 128]]
