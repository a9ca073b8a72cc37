"""Quantization to the METaQ grid and zero-order entropy."""

import time

import numpy as np
import pytest
import scipy.stats
import torch

from metaq_utils.core.grid import Grid
from metaq_utils.quant.quantization import (
    dequantize,
    entropy_bits,
    flatten,
    nearest_indices,
    quantize_array,
    quantize_indices,
    quantize_state_dict,
    quantize_tensors,
    unflatten,
)

THESIS = Grid(w0=-0.11, r=1.114, C=140)
EXACT = Grid(w0=0.0, r=1.0, C=8)  # every edge lo + bΔ is exact in binary: Δ = 0.25


def test_half_open_buckets_and_clamping():
    g = EXACT
    edges = g.lo + g.delta * np.arange(g.C + 1)  # -1, -0.75, ..., 1
    # an edge belongs to the bucket on its right; just below it, to the bucket on its left
    np.testing.assert_array_equal(quantize_indices(edges[:-1], g), np.arange(g.C))
    # (2^-20 below: exact in float32 and in w − lo; right at float resolution the floor of
    # (w − lo)/Δ is subject to float64 rounding, as documented)
    below = (edges[1:-1] - 2.0**-20).astype(np.float32)
    np.testing.assert_array_equal(quantize_indices(below, g), np.arange(g.C - 1))
    # the right end of the range (w == hi) and beyond: last bucket; below lo: bucket 0
    np.testing.assert_array_equal(quantize_indices([1.0, 1.5, 1e30, -1.0000001, -7.0, -1e30], g), [7, 7, 7, 0, 0, 0])


def test_matches_formula_and_grid_bucket_of():
    rng = np.random.default_rng(0)
    w = rng.normal(-0.1, 0.6, 20_000).astype(np.float32)
    idx = quantize_indices(w, THESIS)
    assert idx.dtype == np.int64 and idx.shape == w.shape
    delta = 2 * THESIS.r / THESIS.C
    ref = np.clip(np.floor((w.astype(np.float64) - (THESIS.w0 - THESIS.r)) / delta), 0, THESIS.C - 1)
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_array_equal(idx, THESIS.bucket_of(w))


@pytest.mark.parametrize("grid", [THESIS, EXACT, Grid(0.3, 0.01, 1024), Grid(-0.11, 1.114, 6)])
def test_dequantized_values_are_centres_within_half_a_bucket(grid):
    rng = np.random.default_rng(1)
    w = rng.uniform(grid.lo, grid.hi, 10_000)
    q = quantize_array(w, grid)
    assert q.dtype == np.float32 and q.shape == w.shape
    centres32 = grid.v.astype(np.float32)
    assert np.isin(q, centres32).all()
    # |w − q(w)| ≤ Δ/2 in range (q is a float32-rounded centre: allow its rounding error)
    slack = np.finfo(np.float32).eps * np.abs(grid.v).max() + 1e-12
    assert (np.abs(w - q.astype(np.float64)) <= grid.delta / 2 + slack).all()
    # outside the range: distance to the range + Δ/2
    out = np.array([grid.lo - 3.0, grid.hi + 2.0])
    err = np.abs(out - quantize_array(out, grid).astype(np.float64))
    np.testing.assert_allclose(err, [3.0 + grid.delta / 2, 2.0 + grid.delta / 2], atol=slack)


def test_idempotent_and_shape_preserving():
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.5, (7, 3, 5)).astype(np.float32)
    q = quantize_array(w, THESIS)
    assert q.shape == (7, 3, 5)
    np.testing.assert_array_equal(quantize_array(q, THESIS), q)
    np.testing.assert_array_equal(quantize_indices(q, THESIS), quantize_indices(w, THESIS))


def test_non_finite_weights_are_rejected():
    w = np.array([0.0, np.nan, np.inf, -np.inf, np.nan])
    with pytest.raises(ValueError, match="2 NaN and 2 infinite"):
        quantize_indices(w, THESIS)
    with pytest.raises(ValueError, match="0 NaN and 1 infinite"):
        quantize_array([0.1, np.inf], THESIS)


def test_dequantize_validates_indices():
    np.testing.assert_array_equal(dequantize(np.array([0, 7]), EXACT), np.float32([-0.875, 0.875]))
    with pytest.raises(ValueError, match=r"\[0, 7\]"):
        dequantize(np.array([0, 8]), EXACT)
    with pytest.raises(ValueError):
        dequantize(np.array([-1]), EXACT)
    with pytest.raises(ValueError, match="integers"):
        dequantize(np.array([0.5]), EXACT)


def test_quantize_44426_weights_fast():
    w = np.random.default_rng(3).normal(0, 0.2, 44_426).astype(np.float32)
    quantize_indices(w, THESIS)
    best = min(_timed(lambda: quantize_indices(w, THESIS)) for _ in range(30))
    assert best < 1e-3, f"quantize_indices took {best * 1e3:.2f} ms for 44,426 weights"


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def test_shared_grid_over_tensors_and_state_dict():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    params = [p for p in model.parameters()]
    qs, idx = quantize_tensors(params, THESIS)
    np.testing.assert_array_equal(idx, quantize_indices(flatten(params), THESIS))
    for q, p in zip(qs, params):
        assert q.shape == tuple(p.shape)
        np.testing.assert_array_equal(q, quantize_array(p.detach().numpy(), THESIS))

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    sd = model.state_dict()
    out = quantize_state_dict(sd, THESIS, keys=names)
    for k in sd:
        assert isinstance(out[k], torch.Tensor) and out[k].dtype == sd[k].dtype
        if k in names:
            np.testing.assert_array_equal(out[k].numpy(), quantize_array(sd[k].numpy(), THESIS))
        else:  # buffers (running stats, num_batches_tracked) untouched
            assert out[k] is sd[k]
    model.load_state_dict(out)  # still a valid state_dict
    with pytest.raises(KeyError):
        quantize_state_dict(sd, THESIS, keys=["nope"])
    bad = dict(sd)
    bad["0.weight"] = torch.full((4, 5), float("nan"))
    with pytest.raises(ValueError, match="0.weight: .*NaN"):
        quantize_state_dict(bad, THESIS, keys=names)


def test_flatten_unflatten_round_trip():
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.float32([7.0]), np.zeros((0, 4), np.float32)]
    flat = flatten(arrays)
    assert flat.dtype == np.float32 and flat.size == 7
    back = unflatten(flat, [a.shape for a in arrays])
    for a, b in zip(arrays, back):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        unflatten(flat, [(2, 2)])


def test_nearest_indices():
    table = np.array([0.5, -1.0, 0.0, 0.5, 2.0])  # unsorted, with a duplicate
    w = np.array([-5.0, -0.5, -0.4, 0.25, 0.3, 0.5, 1.25, 1.3, 9.0])
    # -0.5 is half-way between -1 and 0 -> smaller value (-1.0); 0.25 between 0 and 0.5 -> 0.0;
    # 1.25 half-way between 0.5 and 2 -> 0.5, the first-listed 0.5 (index 0)
    np.testing.assert_array_equal(nearest_indices(w, table), [1, 1, 2, 2, 0, 0, 0, 4, 4])
    np.testing.assert_array_equal(nearest_indices(w, np.array([3.0])), np.zeros(9))
    with pytest.raises(ValueError):
        nearest_indices(w, np.array([]))


def test_entropy_bits_against_scipy():
    rng = np.random.default_rng(4)
    for _ in range(20):
        s = rng.integers(0, int(rng.integers(1, 300)), int(rng.integers(1, 5000)))
        counts = np.unique(s, return_counts=True)[1]
        assert entropy_bits(s) == pytest.approx(scipy.stats.entropy(counts, base=2) * s.size, rel=1e-12, abs=1e-9)
    q = quantize_array(rng.normal(0, 0.3, 3000), THESIS)  # float values count like symbols
    assert entropy_bits(q) == pytest.approx(entropy_bits(quantize_indices(q, THESIS)), rel=1e-12)
    assert entropy_bits([]) == 0.0
    assert entropy_bits(np.full(100, 3)) == 0.0
    assert entropy_bits([0, 1]) == pytest.approx(2.0)
    assert entropy_bits(np.array([10**12, 5, 10**12])) == pytest.approx(3 * scipy.stats.entropy([2, 1], base=2))
