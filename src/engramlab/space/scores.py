"""Gridness scores of spatial units (Banino et al. 2018, Nature 557:429, Methods "Grid scores"; the algorithm of
DeepMind's released ``scores.py`` in the grid-cells repository, re-implemented and vectorised over units).

The pipeline, for every unit at once:

1. :func:`rate_maps` -- the unit's mean activation in each of ``bins`` x ``bins`` square bins of the box.
2. :func:`autocorrelograms` -- the spatial autocorrelogram (SAC): at every 2-D lag, the Pearson correlation of the
   map with its shifted self over the bins visited at both ends of the lag.
3. :class:`GridScorer` -- inside a ring around the SAC's centre, the SAC's correlation with itself rotated by 30, 45,
   60, 90, 120, 135 and 150 degrees. A hexagonal grid maps onto itself at 60 and 120 degrees and not at 30, 90 or
   150: ``score60 = (r60 + r120) / 2 - (r30 + r90 + r150) / 3``; a square grid at 90 and not at 45 or 135:
   ``score90 = r90 - (r45 + r135) / 2``. Each score is the best over ten rings.
4. :func:`grid_scale` -- the grid's spacing from the SAC's six peaks nearest its centre.
5. :func:`shuffle_null` and :func:`grid_summary` -- a per-unit chance level from activity shifted in time against
   the path, and the shares of units above score60 thresholds (default 0.3 and 0.37).

Maps are indexed ``[unit, x bin, y bin]`` (x along the first spatial axis), as DeepMind's
``scipy.stats.binned_statistic_2d(xs, ys, ...)`` lays them out; the scores do not depend on this (they are
invariant under the transpose, a reflection).

Where this differs from DeepMind's release:

- ``score60`` is DeepMind's default form, the one its released training script used: ``(r60 + r120) / 2 -
  (r30 + r90 + r150) / 3``; ``GridScorer(min_max=True)`` gives their stricter ``min(r60, r120) - max(r30, r90,
  r150)``. ``score90`` is always ``r90 - (r45 + r135) / 2``, as theirs. The forms agree on clean hexagons (both
  1.40 for a 0.5 m lattice of 20 x 20 bins) but not elsewhere (a noise map: 0.18 averaged, -0.02 min/max).
- ``r_a`` is DeepMind's ring correlation (both maps centred on the unrotated SAC's ring mean, divided by its ring
  variance + 1e-5), not a textbook Pearson r of the two rings; they differ only by interpolation and edge effects.
- Rings are in units of ``bins`` (outer 1.0 is a radius of 20 lags for 20 bins), as DeepMind's masks are.
- The grid scale and the shift null are not in DeepMind's ``scores.py``; see their docstrings.
- Otherwise the numbers match a per-map transcription of the algorithm to ~1e-12 (SAC by FFT, not ``convolve2d``;
  rotation by ``ndimage.rotate``'s own interpolation matrices, not one ``rotate`` call per map and angle).
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft, ndimage, sparse

ANGLES = (30, 45, 60, 90, 120, 135, 150)
"""The rotations (degrees) at which the SAC is compared with itself (DeepMind scores.py ``_corr_angles``)."""

DEFAULT_RINGS = [(0.2, float(outer)) for outer in np.linspace(0.4, 1.0, 10)]
"""DeepMind's ten ring masks (inner, outer radius) in units of ``bins``: inner 0.2, outer 0.4 to 1.0."""

VARIANCE_FLOOR = 1e-5
"""Added to the ring's variance, as DeepMind scores.py does, so a flat SAC (a silent unit) scores 0, not NaN."""

_UNITS_PER_CHUNK = 64  # shuffle_null's gather of shifted bin indices: 64 x N int64 (25 MB at N = 50,000)
_UNITS_PER_SCORING = 1024  # GridScorer.scores' rotated SACs: 1024 units x 7 angles x 1521 lags (87 MB at 20 bins)


# --------------------------------------------------------------------------------------------------- rate maps
def _bin_index(positions: np.ndarray, box: float, bins: int) -> np.ndarray:
    """(N, 2) positions -> (N,) flat bin index ``x_bin * bins + y_bin``; samples outside the box (or NaN) go to an
    extra bin ``bins**2`` that is dropped later, as ``binned_statistic_2d`` with a ``range`` ignores them."""
    positions = np.asarray(positions, dtype=float)
    scaled = (positions / box + 0.5) * bins  # 0 at the box's lower edge, ``bins`` at its upper edge
    inside = np.all((scaled >= 0) & (scaled <= bins), axis=1)
    # the upper edge belongs to the last bin (numpy.histogram's convention, which binned_statistic_2d follows)
    cell = np.minimum(np.floor(np.where(inside[:, None], scaled, 0)), bins - 1).astype(np.intp)
    return np.where(inside, cell[:, 0] * bins + cell[:, 1], bins * bins)


def _maps_from_sums(sums: np.ndarray, counts: np.ndarray, bins: int) -> np.ndarray:
    """(U, bins**2 + 1) per-bin sums and (bins**2 + 1,) counts (last: outside the box) -> (U, bins, bins) means,
    NaN where no sample fell."""
    counts = counts[: bins * bins]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums[:, : bins * bins] / counts
    means[:, counts == 0] = np.nan  # 0 / 0 is NaN already; this states the rule
    return means.reshape(len(sums), bins, bins)


def rate_maps(positions: np.ndarray, activations: np.ndarray, box: float = 2.2, bins: int = 20) -> np.ndarray:
    """Each unit's mean activation per spatial bin (Banino et al. 2018, Methods; DeepMind scores.py
    ``calculate_ratemap``, i.e. ``binned_statistic_2d(x, y, activation, 'mean', range=box)``).

    Args:
        positions: (N, 2) positions in metres; the box is centred on 0, coordinates in [-box/2, box/2]. Samples
            outside the box are ignored.
        activations: (N, U) the units' activations at those positions.
        box: the box's side (m).
        bins: bins per side.

    Returns:
        (U, bins, bins) mean activation per bin, indexed ``[unit, x bin, y bin]``; NaN where no sample fell.
    """
    activations = np.asarray(activations, dtype=float)
    index = _bin_index(positions, box, bins)
    n_cells = bins * bins + 1
    counts = np.bincount(index, minlength=n_cells)
    # The per-bin sums of all units in one sparse product: a (cells, N) one-hot matrix times the (N, U) activations
    # (a single weighted bincount would need an N x U index array).
    onehot = sparse.csr_matrix((np.ones(len(index)), (index, np.arange(len(index)))), shape=(n_cells, len(index)))
    sums = np.asarray(onehot @ activations).T
    return _maps_from_sums(sums, counts, bins)


# -------------------------------------------------------------------------------------------- autocorrelograms
def _lag_correlator(maps_shape: tuple[int, ...]):
    """A function ``(A_hat, B_hat) -> sum_i a[i] * b[i + lag]`` at every lag in [-(b-1), b-1]^2, given the maps'
    zero-padded real FFTs; the padding (>= 2b - 1) keeps the circular correlation from wrapping round."""
    side = maps_shape[-1]
    size = fft.next_fast_len(2 * side - 1, real=True)
    lags = np.arange(-(side - 1), side) % size  # negative lags sit at the end of the circular result

    def transform(x: np.ndarray) -> np.ndarray:
        return fft.rfft2(x, s=(size, size))

    def correlate(a_hat: np.ndarray, b_hat: np.ndarray) -> np.ndarray:
        full = fft.irfft2(np.conj(a_hat) * b_hat, s=(size, size))
        return full[..., lags[:, None], lags[None, :]]

    return transform, correlate


def autocorrelograms(maps: np.ndarray) -> np.ndarray:
    """Spatial autocorrelograms (Banino et al. 2018, Methods; DeepMind scores.py ``calculate_sac``).

    At lag ``d`` the SAC is the Pearson correlation of the pairs ``(map[i], map[i + d])`` over the bins ``i`` with
    both ends visited. As in DeepMind's code the sums over the overlap -- of x, x**2 at either end, of their product
    and of the visited mask -- come from correlations of the zero-filled map with the visited mask; here they are
    computed by FFT for all units at once.

    Args:
        maps: (U, b, b) rate maps, NaN for unvisited bins.

    Returns:
        (U, 2b - 1, 2b - 1) correlations in [-1, 1], the centre (lag 0) at ``[b - 1, b - 1]``; 0 where undefined
        (fewer than two overlapping bins, or a constant overlap), which DeepMind's ``nan_to_num`` also gives.
    """
    maps = np.asarray(maps, dtype=float)
    visited = ~np.isnan(maps)
    # Pearson correlation ignores a common offset and scale; standardising first keeps the sums' cancellation small.
    n_visited = visited.sum(axis=(1, 2), keepdims=True)
    zero_filled = np.where(visited, maps, 0.0)
    mean = zero_filled.sum(axis=(1, 2), keepdims=True) / np.maximum(n_visited, 1)
    centred = np.where(visited, maps - mean, 0.0)
    scale = np.sqrt((centred**2).sum(axis=(1, 2), keepdims=True) / np.maximum(n_visited, 1))
    x = centred / np.where(scale > 0, scale, 1.0)
    mask = visited.astype(float)

    transform, correlate = _lag_correlator(maps.shape)
    x_hat, x2_hat, mask_hat = transform(x), transform(x * x), transform(mask)
    n = np.rint(correlate(mask_hat, mask_hat))  # overlapping visited bins: an integer up to FFT round-off
    # sums of map[i] (the lag's lower end) over the overlap; those of map[i + d] are the same sums at lag -d
    sum_lo, sq_lo = correlate(x_hat, mask_hat), correlate(x2_hat, mask_hat)
    sum_hi, sq_hi = sum_lo[..., ::-1, ::-1], sq_lo[..., ::-1, ::-1]
    products = correlate(x_hat, x_hat)

    defined = n >= 2
    n_safe = np.where(defined, n, 1.0)
    mean_lo, mean_hi = sum_lo / n_safe, sum_hi / n_safe
    var_lo = sq_lo / n_safe - mean_lo**2
    var_hi = sq_hi / n_safe - mean_hi**2
    covariance = products / n_safe - mean_lo * mean_hi
    # A constant overlap has zero variance (DeepMind: 0/0 -> NaN -> 0); after standardising, round-off is ~1e-15.
    defined &= (var_lo > 1e-10) & (var_hi > 1e-10)
    denominator = np.sqrt(np.where(defined, var_lo * var_hi, 1.0))
    return np.where(defined, np.clip(covariance / denominator, -1.0, 1.0), 0.0)


# ------------------------------------------------------------------------------------------------ grid scores
def _ring_masks(bins: int, mask_parameters: list[tuple[float, float]]) -> np.ndarray:
    """(rings, (2b-1)**2) 0/1 masks on the flattened SAC: lags ``d`` with ``inner*b < |d| <= outer*b`` (DeepMind
    scores.py ``_get_ring_mask``: the outer disc minus the inner one, radii in units of ``bins``)."""
    lags = np.arange(-(bins - 1), bins)
    radius = np.hypot(lags[:, None], lags[None, :]).ravel()
    rings = [(radius <= outer * bins) & ~(radius <= inner * bins) for inner, outer in mask_parameters]
    return np.stack(rings).astype(float)


@functools.lru_cache(maxsize=8)
def _rotation_operators(bins: int, angles: tuple[float, ...]) -> tuple[sparse.csr_matrix, ...]:
    """Per angle, the sparse (P, P) matrix (P = (2b-1)**2) of ``scipy.ndimage.rotate(sac, angle, reshape=False)``'s
    cubic interpolation step, which DeepMind's ``rotated_sacs`` calls once per SAC and angle.

    ``rotate`` is linear in its input: cubic B-spline prefiltering (see :func:`_spline_coefficients`), then
    interpolation of the coefficients at the rotated grid (16 taps per output bin, mirrored at the edges, 0 outside).
    Rotating the identity basis with ``prefilter=False`` yields the interpolation matrix exactly, so one sparse
    product rotates every unit's SAC. Built once per (bins, angles), about a second."""
    side = 2 * bins - 1
    size = side * side
    basis = np.eye(size).reshape(size, side, side)
    operators = []
    for angle in angles:
        rotated = ndimage.rotate(basis, angle, axes=(1, 2), reshape=False, prefilter=False).reshape(size, size)
        operators.append(sparse.csr_matrix(rotated.T))  # row: output bin; column: input coefficient
    return tuple(operators)


def _spline_coefficients(sacs: np.ndarray) -> np.ndarray:
    """The cubic B-spline coefficients ``ndimage.rotate`` computes before interpolating (order 3, mode 'constant',
    whose prefilter mirrors at the edges), along the two spatial axes of the stacked (U, S, S) SACs."""
    coefficients = ndimage.spline_filter1d(sacs, order=3, axis=1, mode="constant")
    return ndimage.spline_filter1d(coefficients, order=3, axis=2, mode="constant")


def _rotate_sacs(sacs: np.ndarray, angles: tuple[float, ...] = ANGLES) -> np.ndarray:
    """(U, S, S) SACs -> (len(angles), U, S, S), each rotated about its centre as
    ``scipy.ndimage.rotate(sac, angle, reshape=False)`` would (cubic spline, 0 outside), all units in one product."""
    units, side = sacs.shape[0], sacs.shape[-1]
    bins = (side + 1) // 2
    coefficients = np.ascontiguousarray(_spline_coefficients(sacs).reshape(units, -1).T)  # (P, U)
    rotated = [operator @ coefficients for operator in _rotation_operators(bins, tuple(angles))]
    return np.stack([r.T.reshape(units, side, side) for r in rotated])


def _ring_correlations(flat_sacs: np.ndarray, flat_rotated: np.ndarray, rings: np.ndarray) -> np.ndarray:
    """(U, P) SACs, (A, U, P) rotated copies, (R, P) ring masks -> (A, R, U) correlations inside each ring.

    As DeepMind scores.py ``get_grid_scores_for_mask``: both the SAC and its rotated copy are centred on the
    *unrotated* SAC's mean over the ring and divided by its variance there (plus ``VARIANCE_FLOOR``); since a
    rotation about the centre maps the ring onto itself, this is Pearson's r up to interpolation and edge effects.
    Expanded into masked sums so that every (angle, ring, unit) is a matrix product:
    ``sum_ring (s - m)(r - m) = sum_ring s*r - m * sum_ring r`` because ``sum_ring (s - m) = 0``."""
    area = rings.sum(axis=1)[:, None]  # (R, 1)
    ring_sum = rings @ flat_sacs.T  # (R, U)
    mean = ring_sum / area
    variance = (rings @ (flat_sacs**2).T - area * mean**2) / area + VARIANCE_FLOOR
    cross = (flat_sacs[None] * flat_rotated) @ rings.T  # (A, U, R)
    rotated_sum = flat_rotated @ rings.T
    return (cross - mean.T * rotated_sum).transpose(0, 2, 1) / area / variance


def _gridness_60(r: dict[float, np.ndarray], min_max: bool) -> np.ndarray:
    """Six-fold symmetry (Banino et al. 2018, Methods): peaks at 60 and 120 degrees, troughs at 30, 90 and 150.
    DeepMind scores.py's default (its released training script's) averages each group; ``min_max`` takes the
    smaller peak less the larger trough (their ``min_max=True``, Sargolini et al. 2006's form)."""
    if min_max:
        return np.minimum(r[60], r[120]) - np.maximum(np.maximum(r[30], r[90]), r[150])
    return (r[60] + r[120]) / 2 - (r[30] + r[90] + r[150]) / 3


def _gridness_90(r: dict[float, np.ndarray]) -> np.ndarray:
    """Four-fold symmetry: a peak at 90 degrees less the mean of the troughs at 45 and 135 (DeepMind scores.py's
    ``grid_score_90``, in either form)."""
    return r[90] - (r[45] + r[135]) / 2


class GridScorer:
    """Scores 60- and 90-degree gridness of ``bins`` x ``bins`` rate maps (Banino et al. 2018, Methods; DeepMind
    scores.py ``GridScorer``), all units at once.

    Args:
        bins: the rate maps' bins per side; the SACs are (2*bins - 1) square.
        mask_parameters: ring masks ``(inner, outer)`` on the SAC, radii in units of ``bins`` (about the SAC's
            half-width); default DeepMind's ten rings, inner 0.2 and outer ``linspace(0.4, 1.0, 10)``.
    """

    def __init__(self, bins: int = 20, mask_parameters: list[tuple[float, float]] | None = None, min_max: bool = False):
        self.bins, self.min_max = bins, min_max
        rings = DEFAULT_RINGS if mask_parameters is None else mask_parameters  # any iterable, e.g. DeepMind's zip
        self.mask_parameters = [(float(inner), float(outer)) for inner, outer in rings]
        self.angles = ANGLES
        self.rings = _ring_masks(bins, self.mask_parameters)  # (R, P)
        _rotation_operators(bins, self.angles)  # build (or fetch) the rotation matrices now, not at the first score

    def _by_ring(self, sacs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(U, S, S) SACs -> score60 and score90 in every ring, each (R, U)."""
        units = len(sacs)
        flat_rotated = _rotate_sacs(sacs, self.angles).reshape(len(self.angles), units, -1)
        correlations = _ring_correlations(sacs.reshape(units, -1), flat_rotated, self.rings)  # (A, R, U)
        r = dict(zip(self.angles, correlations))
        return _gridness_60(r, self.min_max), _gridness_90(r)

    def scores(self, maps: np.ndarray) -> dict[str, np.ndarray]:
        """Gridness of every unit's rate map.

        Args:
            maps: (U, bins, bins) rate maps, NaN for unvisited bins.

        Returns:
            ``score60`` (U,): ``min(r60, r120) - max(r30, r90, r150)``; ``score90`` (U,): ``r90 - max(r45, r135)``;
            ``r_a`` the correlation inside a ring of the SAC with itself rotated by ``a`` degrees; each score the
            best (max) over the rings, whose indices into ``mask_parameters`` are ``mask60`` and ``mask90`` (U,);
            ``sac`` (U, 2b-1, 2b-1), the autocorrelograms.
        """
        maps = np.asarray(maps, dtype=float)
        if maps.ndim != 3 or maps.shape[1:] != (self.bins, self.bins):
            raise ValueError(f"maps must be (units, {self.bins}, {self.bins}), got {maps.shape}")
        sacs = autocorrelograms(maps)
        # the rotated copies take 7 x 1521 doubles a unit (85 kB at 20 bins): score a bounded number at a time
        chunks = [
            self._by_ring(sacs[start : start + _UNITS_PER_SCORING]) for start in range(0, len(sacs), _UNITS_PER_SCORING)
        ]
        by_ring_60 = np.concatenate([c[0] for c in chunks], axis=1) if chunks else np.zeros((len(self.rings), 0))
        by_ring_90 = np.concatenate([c[1] for c in chunks], axis=1) if chunks else np.zeros((len(self.rings), 0))
        return {
            "score60": by_ring_60.max(axis=0),
            "score90": by_ring_90.max(axis=0),
            "mask60": by_ring_60.argmax(axis=0),
            "mask90": by_ring_90.argmax(axis=0),
            "sac": sacs,
        }


# ------------------------------------------------------------------------------------------------------- scale
def _parabola_vertex(before: np.ndarray, at: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Offset (bins, within +-0.5) of the vertex of the parabola through three equally spaced samples around a
    local maximum; 0 where the samples are not concave (a plateau) or one is NaN (beyond the SAC's edge)."""
    curvature = before - 2 * at + after
    concave = curvature < 0
    offset = 0.5 * (before - after) / np.where(concave, curvature, -1.0)
    return np.clip(np.where(concave, offset, 0.0), -0.5, 0.5)


def grid_scale(sac: np.ndarray, box: float = 2.2, bins: int = 20) -> float:
    """The grid's scale in metres (Banino et al. 2018, Methods): the median distance from the SAC's centre of the
    (up to) six local maxima nearest it, the central peak excluded; NaN if there are none.

    A local maximum is a positive bin no lower than any bin in its 3 x 3 neighbourhood
    (``scipy.ndimage.maximum_filter``); positivity leaves out the flat zeros of undefined lags. Each maximum is then
    placed to a fraction of a bin by a parabola through it and its two neighbours along each axis: a 0.11 m bin
    would otherwise round a 0.6 m spacing by up to +-10 %. A bin is ``box / bins`` metres."""
    sac = np.asarray(sac, dtype=float)
    peaks = (sac == ndimage.maximum_filter(sac, size=3, mode="constant", cval=-np.inf)) & (sac > 0)
    centre = (np.array(sac.shape) - 1) / 2
    rows, cols = np.nonzero(peaks)
    off_centre = (rows != centre[0]) | (cols != centre[1])  # the central peak is lag 0, correlation 1
    rows, cols = rows[off_centre], cols[off_centre]
    if len(rows) == 0:
        return float("nan")
    padded = np.pad(sac, 1, constant_values=np.nan)  # a maximum on the SAC's edge stays on its bin
    r, c = rows + 1, cols + 1
    row_at = rows + _parabola_vertex(padded[r - 1, c], padded[r, c], padded[r + 1, c])
    col_at = cols + _parabola_vertex(padded[r, c - 1], padded[r, c], padded[r, c + 1])
    distance = np.sort(np.hypot(row_at - centre[0], col_at - centre[1]))[:6]
    return float(np.median(distance) * box / bins)


# -------------------------------------------------------------------------------------------- null and summary
def _shifted_bin_sums(index: np.ndarray, activations_t: np.ndarray, offsets: np.ndarray, n_cells: int) -> np.ndarray:
    """Per-bin sums of each unit's activation shifted circularly by its own offset: unit ``u`` at time ``t`` is
    paired with the position at ``t + offsets[u]`` (the same as ``np.roll(activation, offset)`` against the path).

    (N,) bin index, (U, N) activations (time contiguous), (U,) offsets -> (U, n_cells). The shifted index rows are
    views of the index repeated twice, gathered a chunk of units at a time; one weighted bincount per chunk sums
    every unit's bins (each unit's bins offset by ``u * n_cells``)."""
    n = len(index)
    windows = sliding_window_view(np.concatenate([index, index]), n)  # windows[s] = index rolled back by s
    sums = np.empty((len(activations_t), n_cells))
    for start in range(0, len(activations_t), _UNITS_PER_CHUNK):
        stop = min(start + _UNITS_PER_CHUNK, len(activations_t))
        cells = windows[offsets[start:stop]] + (np.arange(stop - start) * n_cells)[:, None]
        flat = np.bincount(cells.ravel(), weights=activations_t[start:stop].ravel(), minlength=(stop - start) * n_cells)
        sums[start:stop] = flat.reshape(stop - start, n_cells)
    return sums


def shuffle_null(
    positions: np.ndarray,
    activations: np.ndarray,
    scorer: GridScorer,
    shuffles: int = 100,
    rng: np.random.Generator | None = None,
    box: float = 2.2,
    min_shift: int | None = None,
) -> np.ndarray:
    """Each unit's chance distribution of score60: its activity shifted circularly in time against the path.

    The paper's null is not in DeepMind's release; this is the usual spike-train shift null for grid cells: a shift
    keeps the unit's temporal statistics and the path's coverage but breaks the tie between activity and place.

    Args:
        positions: (N, 2) positions in time order (m).
        activations: (N, U) activations in the same order.
        scorer: the :class:`GridScorer`; its ``bins`` sets the rate maps'.
        shuffles: null samples per unit.
        rng: draws the offsets; default ``np.random.default_rng(0)``, so the null is reproducible.
        box: the box's side (m).
        min_shift: the smallest shift in samples (default ``N // 20``); shifts are drawn uniformly from
            ``[min_shift, N - min_shift]``, each unit its own in each shuffle.

    Returns:
        (shuffles, U) score60 of the shifted activity.
    """
    activations = np.asarray(activations, dtype=float)
    n, units = activations.shape
    if len(positions) != n:
        raise ValueError(f"positions ({len(positions)}) and activations ({n}) differ in length")
    min_shift = n // 20 if min_shift is None else int(min_shift)
    if not 0 <= min_shift <= n - min_shift:
        raise ValueError(f"min_shift {min_shift} must lie in [0, N/2] for N = {n}")
    rng = np.random.default_rng(0) if rng is None else rng
    offsets = rng.integers(min_shift, n - min_shift, size=(shuffles, units), endpoint=True)

    bins = scorer.bins
    index = _bin_index(positions, box, bins)
    n_cells = bins * bins + 1
    counts = np.bincount(index, minlength=n_cells)  # a circular shift keeps each bin's number of samples
    activations_t = np.ascontiguousarray(activations.T)
    null = np.empty((shuffles, units))
    for shuffle in range(shuffles):
        sums = _shifted_bin_sums(index, activations_t, offsets[shuffle], n_cells)
        null[shuffle] = scorer.scores(_maps_from_sums(sums, counts, bins))["score60"]
    return null


def grid_summary(score60: np.ndarray, null: np.ndarray | None = None, thresholds=(0.3, 0.37)) -> dict[str, float]:
    """How grid-like a population is (Banino et al. 2018 call units with score60 > 0.37 grid-like).

    Args:
        score60: (U,) the units' score60; NaN counts as not above any threshold.
        null: optional (shuffles, U) per-unit null from :func:`shuffle_null`.
        thresholds: score60 thresholds.

    Returns:
        ``frac_above_<t>`` for each threshold (``{t:g}``: "frac_above_0.3", "frac_above_0.37"); ``top_score60``;
        with a null also ``frac_above_<max threshold>_and_null95`` (above the largest threshold and above the unit's
        own null 95th percentile) and ``null95_mean`` (the mean over units of that percentile).
    """
    score60 = np.asarray(score60, dtype=float)
    comparable = np.nan_to_num(score60, nan=-np.inf)  # NaN is above nothing
    summary = {f"frac_above_{t:g}": float(np.mean(comparable > t)) for t in thresholds}
    summary["top_score60"] = float(np.nanmax(score60)) if np.any(~np.isnan(score60)) else float("nan")
    if null is not None:
        null95 = np.percentile(np.asarray(null, dtype=float), 95, axis=0)
        strictest = max(thresholds)
        above_both = (comparable > strictest) & (comparable > null95)
        summary[f"frac_above_{strictest:g}_and_null95"] = float(np.mean(above_both))
        summary["null95_mean"] = float(np.mean(null95))
    return summary
