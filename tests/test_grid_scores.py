"""Gridness scores (Banino et al. 2018, Methods; DeepMind scores.py's algorithm): hexagons score high at 60 degrees,
squares at 90, stripes and noise low; rate maps, autocorrelograms, the grid scale, the shift null and the summary."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from engramlab.space.scores import GridScorer, autocorrelograms, grid_scale, grid_summary, rate_maps, shuffle_null

BOX, BINS, PERIOD = 2.2, 20, 0.5
SPACING = PERIOD / np.cos(np.radians(30))  # three plane waves of period p make a hexagonal lattice of spacing p/cos 30


def plane_wave(x: np.ndarray, y: np.ndarray, degrees: float, period: float = PERIOD) -> np.ndarray:
    k = 2 * np.pi / period
    return np.cos(k * (np.cos(np.radians(degrees)) * x + np.sin(np.radians(degrees)) * y))


def hexagonal(x, y, turn: float = 0.0, period: float = PERIOD):
    return np.maximum(sum(plane_wave(x, y, a + turn, period) for a in (0, 60, 120)), 0)


def square(x, y, turn: float = 0.0):
    return np.maximum(plane_wave(x, y, turn) + plane_wave(x, y, turn + 90), 0)


def bin_centres() -> tuple[np.ndarray, np.ndarray]:
    """x, y at the centres of the rate map's bins, indexed [x bin, y bin] as rate_maps lays maps out."""
    centres = (np.arange(BINS) + 0.5) / BINS * BOX - BOX / 2
    return np.meshgrid(centres, centres, indexing="ij")


def random_walk(n: int, rng: np.random.Generator, speed: float = 0.04) -> np.ndarray:
    """(n, 2) positions of a walker with a drifting heading, reflected at the box's walls."""
    position, heading, path = np.zeros(2), 0.0, np.empty((n, 2))
    for t in range(n):
        heading += rng.normal(0, 0.4)
        position = position + speed * np.array([np.cos(heading), np.sin(heading)])
        for axis in range(2):
            if abs(position[axis]) > BOX / 2:
                position[axis] = np.sign(position[axis]) * BOX - position[axis]
                heading = np.pi - heading if axis == 0 else -heading
        path[t] = position
    return path


@pytest.fixture(scope="module")
def scorer() -> GridScorer:
    """The strict min/max form: its bounds below were measured on it."""
    return GridScorer(BINS, min_max=True)


# ------------------------------------------------------------------------------------------------ grid scores
@pytest.mark.parametrize("turn", [0, 10, 25, 45])
def test_hexagons_score_high_at_60_degrees_and_squares_at_90_whatever_their_orientation(scorer, turn):
    x, y = bin_centres()
    s = scorer.scores(np.stack([hexagonal(x, y, turn), square(x, y, turn), np.maximum(plane_wave(x, y, turn), 0)]))
    hexagon, square_grid, stripe = 0, 1, 2
    # measured at turn 0: hexagon 1.40 / 0.27, square -0.91 / 1.18, stripe 0.06 / 0.06
    assert s["score60"][hexagon] > 1.2 and s["score90"][hexagon] < 0.4
    assert s["score60"][square_grid] < -0.5 and s["score90"][square_grid] > 1.0
    assert s["score60"][stripe] < 0.2 and s["score90"][stripe] < 0.2


def test_noise_maps_score_near_zero(scorer):
    noise = np.random.default_rng(0).normal(size=(50, BINS, BINS))
    s60 = scorer.scores(noise)["score60"]
    assert abs(np.mean(s60)) < 0.12 and np.median(np.abs(s60)) < 0.15  # measured mean 0.05
    assert np.mean(s60 > 0.37) < 0.05


def test_scores_returns_every_unit_its_sac_and_best_rings(scorer):
    x, y = bin_centres()
    s = scorer.scores(np.stack([hexagonal(x, y), square(x, y)]))
    assert set(s) == {"score60", "score90", "mask60", "mask90", "sac"}
    assert s["score60"].shape == s["score90"].shape == s["mask60"].shape == (2,)
    assert s["sac"].shape == (2, 2 * BINS - 1, 2 * BINS - 1)
    assert np.issubdtype(s["mask60"].dtype, np.integer) and 0 <= s["mask60"].min() and s["mask60"].max() < 10
    assert len(scorer.mask_parameters) == 10 and scorer.mask_parameters[0] == (0.2, 0.4)
    assert scorer.mask_parameters[-1] == pytest.approx((0.2, 1.0))
    with pytest.raises(ValueError):
        scorer.scores(np.zeros((1, BINS + 1, BINS + 1)))


def reference_scores(rate_map: np.ndarray) -> tuple[float, float]:
    """One map at a time, the slow way: scipy.ndimage.rotate per angle and a loop over the rings, each ring's
    correlation as DeepMind's get_grid_scores_for_mask (centred on the unrotated ring mean, over its variance)."""
    sac = autocorrelograms(rate_map[None])[0]
    lags = np.arange(-(BINS - 1), BINS)
    radius = np.hypot(lags[:, None], lags[None, :])
    rotated = {a: ndimage.rotate(sac, a, reshape=False) for a in (30, 45, 60, 90, 120, 135, 150)}
    best60, best90 = -np.inf, -np.inf
    for outer in np.linspace(0.4, 1.0, 10):
        ring = (radius <= outer * BINS) & (radius > 0.2 * BINS)
        mean = sac[ring].mean()
        variance = ((sac[ring] - mean) ** 2).mean() + 1e-5
        r = {a: ((sac[ring] - mean) * (rot[ring] - mean)).mean() / variance for a, rot in rotated.items()}
        best60 = max(best60, min(r[60], r[120]) - max(r[30], r[90], r[150]))
        best90 = max(best90, r[90] - (r[45] + r[135]) / 2)
    return best60, best90


def test_the_vectorised_scores_equal_a_per_map_reference(scorer):
    rng = np.random.default_rng(3)
    x, y = bin_centres()
    maps = np.stack([hexagonal(x, y, 7, 0.6), square(x, y, 20), rng.normal(size=(BINS, BINS))])
    maps[rng.random(maps.shape) < 0.1] = np.nan
    s = scorer.scores(maps)
    for unit, rate_map in enumerate(maps):
        assert (s["score60"][unit], s["score90"][unit]) == pytest.approx(reference_scores(rate_map), abs=1e-9)


def test_the_default_form_averages_peaks_and_troughs_as_deepminds_released_script():
    x, y = bin_centres()
    maps = np.stack([hexagonal(x, y), square(x, y)])
    default, strict = GridScorer(BINS).scores(maps), GridScorer(BINS, min_max=True).scores(maps)
    assert default["score60"][0] == pytest.approx(strict["score60"][0], abs=0.05)  # clean hexagons: both forms agree
    assert default["score60"][1] > strict["score60"][1]  # a square's troughs are averaged, not maximised
    assert np.array_equal(default["score90"], strict["score90"])  # score90 has one form
    r = {a: np.array([v]) for a, v in {30: 0.1, 45: 0.2, 60: 0.9, 90: -0.3, 120: 0.7, 135: 0.4, 150: 0.2}.items()}
    from engramlab.space.scores import _gridness_60, _gridness_90

    assert _gridness_60(r, min_max=False)[0] == pytest.approx(0.8 - 0.0)  # (0.9 + 0.7) / 2 - (0.1 - 0.3 + 0.2) / 3
    assert _gridness_60(r, min_max=True)[0] == pytest.approx(0.7 - 0.2)
    assert _gridness_90(r)[0] == pytest.approx(-0.3 - 0.3)


# -------------------------------------------------------------------------------------------------- rate maps
def test_rate_maps_average_each_bin_and_leave_unvisited_bins_nan():
    # box 2, bins 2: x and y bins split at 0; maps are [unit, x bin, y bin]
    positions = np.array([[-0.5, -0.5], [-0.9, -0.1], [0.5, -0.5], [1.0, 1.0], [3.0, 0.0]])
    activations = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0], [7.0, 40.0], [100.0, 100.0]])
    maps = rate_maps(positions, activations, box=2.0, bins=2)
    assert maps.shape == (2, 2, 2)
    assert maps[0, 0, 0] == 2.0 and maps[1, 0, 0] == 15.0  # two samples in the low-x, low-y bin
    assert maps[0, 1, 0] == 5.0  # high x, low y: x is the first spatial axis
    assert maps[0, 1, 1] == 7.0  # the box's upper edge belongs to the last bin; (3, 0) is outside and ignored
    assert np.isnan(maps[:, 0, 1]).all()  # no sample at low x, high y


def test_rate_maps_of_a_dense_path_reproduce_the_function_sampled():
    rng = np.random.default_rng(0)
    positions = rng.uniform(-BOX / 2, BOX / 2, size=(40_000, 2))
    maps = rate_maps(positions, np.stack([positions[:, 0], 2 * positions[:, 1]], 1), BOX, BINS)
    x, y = bin_centres()
    assert np.allclose(maps[0], x, atol=0.015) and np.allclose(maps[1], 2 * y, atol=0.03)


# ------------------------------------------------------------------------------------------- autocorrelograms
def test_an_autocorrelogram_is_one_at_the_centre_symmetric_under_a_half_turn_and_bounded():
    x, y = bin_centres()
    field = hexagonal(x, y) + 0.3 * np.random.default_rng(1).normal(size=(BINS, BINS))
    field[3:5, 10:14] = np.nan  # unvisited bins are left out, not counted as zeros
    sac = autocorrelograms(field[None])[0]
    assert sac.shape == (2 * BINS - 1, 2 * BINS - 1)
    assert sac[BINS - 1, BINS - 1] == pytest.approx(1.0)
    assert np.allclose(sac, sac[::-1, ::-1], atol=1e-10)
    assert np.abs(sac).max() <= 1.0


def test_an_autocorrelogram_is_the_pearson_correlation_over_the_overlap_at_each_lag():
    rng = np.random.default_rng(2)
    field = rng.normal(size=(BINS, BINS))
    field[rng.random(field.shape) < 0.2] = np.nan
    sac = autocorrelograms(field[None])[0]
    for dx, dy in [(1, 0), (0, 3), (-4, 2), (7, -5), (15, 12)]:
        lower = field[max(0, -dx) : BINS - max(0, dx), max(0, -dy) : BINS - max(0, dy)]
        upper = field[max(0, dx) : BINS + min(0, dx), max(0, dy) : BINS + min(0, dy)]
        both = ~np.isnan(lower) & ~np.isnan(upper)
        expected = np.corrcoef(lower[both], upper[both])[0, 1]
        assert sac[BINS - 1 + dx, BINS - 1 + dy] == pytest.approx(expected, abs=1e-9)


def test_an_autocorrelogram_is_zero_where_undefined():
    sac = autocorrelograms(np.stack([np.full((BINS, BINS), 3.0), np.random.default_rng(0).normal(size=(BINS, BINS))]))
    assert not np.isnan(sac).any()
    assert (sac[0] == 0).all()  # a constant map has no variance at any lag
    assert sac[1, 0, 0] == 0 and sac[1, -1, -1] == 0  # a single bin overlaps at the corner lags


# ------------------------------------------------------------------------------------------------------ scale
@pytest.mark.parametrize("period, turn", [(0.4, 0), (0.5, 0), (0.5, 17), (0.7, 8)])
def test_the_grid_scale_is_the_hexagonal_lattice_spacing(scorer, period, turn):
    x, y = bin_centres()
    sac = scorer.scores(hexagonal(x, y, turn, period)[None])["sac"][0]
    # within 2 % measured (sub-bin peaks); a 0.11 m bin alone would allow about 10 %
    assert grid_scale(sac, BOX, BINS) == pytest.approx(period / np.cos(np.radians(30)), rel=0.05)


def test_the_grid_scale_is_nan_without_peaks():
    assert np.isnan(grid_scale(np.zeros((2 * BINS - 1, 2 * BINS - 1)), BOX, BINS))


# ------------------------------------------------------------------------------------------------------- null
def test_a_grid_unit_beats_its_shuffle_null_and_noise_units_do_not(scorer):
    rng = np.random.default_rng(0)
    path = random_walk(6000, rng)
    grid = hexagonal(path[:, 0], path[:, 1]) + 0.3 * rng.normal(size=len(path))
    activations = np.column_stack([grid, rng.normal(size=(len(path), 30))])
    real = scorer.scores(rate_maps(path, activations, BOX, BINS))["score60"]
    null = shuffle_null(path, activations, scorer, shuffles=30, rng=np.random.default_rng(1), box=BOX)
    assert null.shape == (30, 31)
    null95 = np.percentile(null, 95, axis=0)
    assert real[0] > 1.0 and real[0] > null95[0] + 0.5  # measured 1.41 against 0.31
    assert np.mean(real[1:] > null95[1:]) < 0.3  # noise beats its own null by chance only (5 % expected)
    assert null[:, 0].max() < 0.6  # shifted in time, the grid unit's activity no longer follows the lattice


def test_each_unit_is_shifted_by_its_own_offset_within_the_allowed_range(scorer):
    rng = np.random.default_rng(4)
    path = random_walk(2000, rng)
    activity = hexagonal(path[:, 0], path[:, 1])
    # with min_shift = N/2 the only shift is N/2: the null is the score of the activity rolled by half the path
    null = shuffle_null(path, activity[:, None], scorer, shuffles=2, rng=rng, box=BOX, min_shift=1000)
    rolled = scorer.scores(rate_maps(path, np.roll(activity, 1000)[:, None], BOX, BINS))["score60"]
    assert null[:, 0] == pytest.approx([rolled[0]] * 2, abs=1e-12)
    # two copies of one unit get different offsets, hence different nulls
    twins = shuffle_null(path, np.column_stack([activity, activity]), scorer, shuffles=5, rng=rng, box=BOX)
    assert not np.allclose(twins[:, 0], twins[:, 1])
    with pytest.raises(ValueError):
        shuffle_null(path, activity[:, None], scorer, shuffles=1, min_shift=1001)


# ---------------------------------------------------------------------------------------------------- summary
def test_grid_summary_counts_units_above_the_thresholds_and_their_own_null():
    score60 = np.array([0.1, 0.35, 0.5, 0.9, np.nan])
    null = np.tile(np.array([0.0, 0.0, 0.6, 0.2, 0.0]), (20, 1))
    null[:, 3] = np.linspace(0.0, 0.95, 20)  # unit 3's 95th percentile: 0.9025, just above its score
    out = grid_summary(score60)
    assert out == {"frac_above_0.3": 0.6, "frac_above_0.37": 0.4, "top_score60": 0.9}
    out = grid_summary(score60, null)
    assert out["frac_above_0.37_and_null95"] == 0.0  # 0.5 is below its null's 0.6, 0.9 below 0.9025
    assert out["null95_mean"] == pytest.approx((0.6 + 0.9025) / 5)
    null[:, 3] = 0.2
    assert grid_summary(score60, null)["frac_above_0.37_and_null95"] == pytest.approx(0.2)
