"""The bucket grid (spec §1): formula, validation, index maps."""

import dataclasses

import numpy as np
import pytest

from metaq_utils.core.grid import Grid


def test_centres_follow_the_thesis_formula():
    g = Grid(w0=-0.11, r=1.114, C=6)
    b = np.arange(6)
    assert g.v.dtype == np.float64
    np.testing.assert_allclose(g.v, -0.11 - 1.114 + (2 * b + 1) * 1.114 / 6, rtol=0, atol=1e-15)
    assert g.delta == pytest.approx(2 * 1.114 / 6)
    assert g.lo == pytest.approx(-1.224) and g.hi == pytest.approx(1.004)
    assert np.all(np.diff(g.v) > 0)
    np.testing.assert_allclose(np.diff(g.v), g.delta, rtol=1e-12)
    # the centres are the midpoints of the bucket edges
    edges = np.linspace(g.lo, g.hi, 7)
    np.testing.assert_allclose(g.v, 0.5 * (edges[:-1] + edges[1:]), atol=1e-15)


def test_grid_is_frozen_and_v_read_only():
    g = Grid(0.0, 1.0, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.C = 5  # type: ignore[misc]
    with pytest.raises(ValueError):
        g.v[0] = 3.0
    assert Grid(0, 1, 4) == g and isinstance(Grid(0, 1, 4).w0, float)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(w0=0.0, r=1.0, C=1), "C must be >= 2"),
        (dict(w0=0.0, r=1.0, C=0), "C must be >= 2"),
        (dict(w0=0.0, r=0.0, C=4), "r must be > 0"),
        (dict(w0=0.0, r=-1.0, C=4), "r must be > 0"),
        (dict(w0=0.0, r=float("nan"), C=4), "r must be finite"),
        (dict(w0=0.0, r=float("inf"), C=4), "r must be finite"),
        (dict(w0=float("nan"), r=1.0, C=4), "w0 must be finite"),
        (dict(w0=float("-inf"), r=1.0, C=4), "w0 must be finite"),
    ],
)
def test_bad_grids_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Grid(**kwargs)


def test_non_integer_C_is_rejected():
    with pytest.raises(TypeError, match="C must be an int"):
        Grid(0.0, 1.0, 4.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="C must be an int"):
        Grid(0.0, 1.0, True)  # type: ignore[arg-type]


@pytest.mark.parametrize("C", [2, 3, 6, 256, 1024])
def test_interval_of_is_exact_on_grid_values_and_clamps(C):
    g = Grid(0.3, 0.7, C)
    v = g.v
    k = g.interval_of(v)
    np.testing.assert_array_equal(k, np.minimum(np.arange(C), C - 2))  # v_k → k, v_{C−1} → C−2
    mid = 0.5 * (v[:-1] + v[1:])
    np.testing.assert_array_equal(g.interval_of(mid), np.arange(C - 1))
    np.testing.assert_array_equal(g.interval_of([v[0] - 5.0, v[-1] + 5.0]), [0, C - 2])
    np.testing.assert_array_equal(g.clamp([v[0] - 5.0, 0.31, v[-1] + 5.0]), [v[0], 0.31, v[-1]])
    rng = np.random.default_rng(C)
    w = rng.uniform(g.lo - 0.1, g.hi + 0.1, 1000)
    k = g.interval_of(w)
    wc = g.clamp(w)
    assert np.all(v[k] <= wc) and np.all(wc <= v[k + 1])


def test_bucket_of_and_quantize():
    g = Grid(0.0, 1.0, 4)  # edges −1, −0.5, 0, 0.5, 1
    w = np.array([-2.0, -1.0, -0.75, -0.5, -1e-12, 0.0, 0.49, 0.5, 1.0, 7.0])
    np.testing.assert_array_equal(g.bucket_of(w), [0, 0, 0, 1, 1, 2, 2, 3, 3, 3])
    np.testing.assert_allclose(g.quantize(w), g.v[[0, 0, 0, 1, 1, 2, 2, 3, 3, 3]])


def test_index_maps_reject_non_finite_weights():
    g = Grid(0.0, 1.0, 4)
    for f in (g.interval_of, g.bucket_of, g.clamp):
        with pytest.raises(ValueError, match="w contains NaN or inf"):
            f(np.array([0.0, np.nan]))
        with pytest.raises(ValueError, match="w contains NaN or inf"):
            f(np.array([np.inf]))
