"""The compiled kernels (metaq_utils.core._kernels) against their NumPy/SciPy references.

* the O(n) aggregates and prefix sums: bit for bit against the NumPy formulation (np.bincount on
  the laned index), for every chunking, float32 and float64 weights, weights on grid values and
  outside the range;
* the hull: the block boundaries of scipy.optimize.isotonic_regression (an independent PAVA);
* the evaluation: the NumPy oracle to rounding, with identical hull vertices;
* FISTA: the compiled loop equals the Python loop over the same oracle bit for bit;
* the fused training step: equals solve_dual + the torch gradient arithmetic bit for bit.
The oracle itself is checked against HiGHS, CVXPY and brute force in test_dual.py.
"""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import isotonic_regression

from metaq_utils.core import _kernels
from metaq_utils.core.dual import DualOracle, NonFiniteWeightError, default_xi0, fista, solve_dual
from metaq_utils.core.grid import Grid
from metaq_utils.nn.networks import build_model
from metaq_utils.nn.regularizer import METaQConfig, METaQRegularizer, adjacent_relaxation


def _weights(rng, grid, n, dtype):
    w = np.concatenate([rng.normal(grid.w0, 0.6 * grid.r, n), grid.v, grid.v + 1e-17,
                        [grid.lo - 3.0, grid.hi + 3.0, grid.lo, grid.hi]])
    return rng.permutation(w).astype(dtype)


@pytest.mark.parametrize("C", [2, 3, 6, 257, 70_000])
@pytest.mark.parametrize("chunk", [1 << 16, 777, 7])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_aggregates_bit_identical_to_numpy(C, chunk, dtype):
    if C > 1000 and chunk < 777:
        pytest.skip("the NumPy reference is O(n/chunk · C): too slow for this pair")
    rng = np.random.default_rng(C + chunk)
    grid = Grid(-0.11, 1.114, C)
    w = _weights(rng, grid, 20_011 if chunk > 7 else 2_003, dtype)
    o = DualOracle(w, grid, chunk=chunk)
    N, U, k = o._aggregate_numpy(w)
    cum, counts = o._prefix_sums_numpy(N, U)
    np.testing.assert_array_equal(o._k, k)
    np.testing.assert_array_equal(o._cum, cum)
    np.testing.assert_array_equal(o.counts, counts)
    assert o.counts.sum() == w.shape[0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_first_non_finite_weight_is_reported(bad, dtype):
    grid = Grid(0.0, 1.0, 6)
    w = np.linspace(-1, 1, 1000).astype(dtype)
    w[[417, 900]] = bad
    with pytest.raises(NonFiniteWeightError, match=r"NaN or inf \(first at index 417\)") as e:
        DualOracle(w, grid)
    assert e.value.index == 417
    with pytest.raises(NonFiniteWeightError, match=r"NaN or inf \(first at index 417\)") as e:
        DualOracle(np.zeros_like(w), grid)._aggregate_numpy(w)
    assert e.value.index == 417


def test_large_finite_float64_weights_are_not_mistaken_for_inf():
    grid = Grid(0.0, 1.0, 6)
    w = np.array([1e308, -1e308, 0.3, 1.7e308])
    o = DualOracle(w, grid)
    assert o.counts.sum() == 4 and o.counts[0] == 1 and o.counts[-1] == 2


def _ties(rng, m):
    y = rng.integers(-3, 4, m).astype(np.float64)  # many exact ties
    return y


@pytest.mark.parametrize("seed", range(40))
def test_pava_blocks_match_scipy_isotonic_regression(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 60))
    y = _ties(rng, m) if seed % 2 else rng.normal(size=m)
    wt = rng.uniform(0.5, 2.0, m) if seed % 3 == 0 else np.ones(m)
    ref = isotonic_regression(y, weights=wt)
    r = np.empty(m + 1, dtype=np.intp)
    nb = _kernels.pava_blocks(y.copy(), wt.copy(), r)
    np.testing.assert_array_equal(r[: nb + 1], ref.blocks)


def _points(rng, C, n):
    yield default_xi0(n, C)                                   # flat: every point collinear
    yield rng.normal(0, 3, C) + 10                            # generic
    yield np.sort(rng.normal(0, 3, C)) + 10                   # convex-ish
    yield np.round(rng.normal(0, 2, C)) + 8                   # ties among slopes
    yield np.linspace(0, 1, C) ** 2 * 30                      # strictly convex: every point a vertex
    yield rng.normal(0, 1, C) * 1e3                           # c* clamped at both ends


@pytest.mark.parametrize("C", [2, 3, 6, 64, 1025])
def test_evaluate_matches_numpy_reference(C):
    rng = np.random.default_rng(C)
    grid = Grid(-0.11, 1.114, C)
    w = _weights(rng, grid, 10_000, np.float32)
    o = DualOracle(w, grid)
    for xi in _points(rng, C, w.shape[0]):
        value, g, c, x_mass, idx = o._eval(xi)
        v_ref, g_ref, c_ref, x_ref, idx_ref = o._eval_numpy(xi)
        np.testing.assert_array_equal(idx, idx_ref)
        scale = np.abs(c_ref).sum() + np.abs(x_ref).sum() + 1.0
        assert value == pytest.approx(v_ref, rel=1e-12, abs=1e-9 * scale)
        np.testing.assert_allclose(c, c_ref, rtol=1e-13)
        np.testing.assert_allclose(x_mass, x_ref, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-9)
        assert x_mass.sum() == pytest.approx(w.shape[0], rel=1e-12)


def _fista_in_python(o, xi0, iterations, zeta, sort_xi):
    """(82)–(84) as a Python loop over the oracle: (points, history)."""
    xi = np.sort(xi0) if sort_xi else xi0.copy()
    xi_prev, t_prev, t, points, history = xi, 1.0, 1.0, [], []
    for _ in range(iterations):
        sigma = xi + ((t_prev - 1.0) / t) * (xi - xi_prev)
        if sort_xi:
            sigma.sort()
        f, g = o(sigma)
        points.append(sigma)
        history.append(f)
        xi_prev, xi = xi, sigma + (1.0 / zeta) * g
        if sort_xi:
            xi.sort()
        t_prev, t = t, 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
    return np.array(points), np.array(history)


@pytest.mark.parametrize("sort_xi", [False, True])
@pytest.mark.parametrize("C", [6, 256])
def test_compiled_fista_equals_the_recursion_in_python_bit_for_bit(C, sort_xi):
    rng = np.random.default_rng(C)
    grid = Grid(-0.11, 1.114, C)
    w = rng.normal(0.2, 0.4, 30_000)
    o = DualOracle(w, grid)
    for zeta in (1e5, 50.0):
        xi0 = rng.normal(0, 2, C) + 11
        r = fista(o, xi0, 15, zeta, sort_xi)
        points, history = _fista_in_python(o, xi0, 15, zeta, sort_xi)
        np.testing.assert_array_equal(r.points, points)
        np.testing.assert_array_equal(r.history, history)
        k = int(np.argmax(history))
        assert r.value == history[k]
        np.testing.assert_array_equal(r.xi, points[k])
        np.testing.assert_array_equal(r.beta, o.beta(points[k]))
        assert np.abs(r.beta).max() > 0


def test_gather_scaled_is_the_torch_cast_then_scale():
    rng = np.random.default_rng(0)
    table = rng.normal(0, 50, 255)
    k = rng.integers(0, 255, 10_000).astype(np.uint16)
    for scale in (0.0015 * (1 - 0.533), -7.3e-4, 1.0):
        for dtype, tdtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
            out = _kernels.gather_scaled(table, k, scale, np.empty(k.shape[0], dtype=dtype))
            ref = torch.from_numpy(table[k.astype(np.intp)]).to(tdtype).mul_(scale).numpy()
            np.testing.assert_array_equal(out, ref)


def _pair(C, variant, zeta, dtype=torch.float32):
    torch.manual_seed(C)
    a = build_model("lenet5").to(dtype)
    with torch.no_grad():
        for p in a.parameters():
            p.normal_(0.1, 0.4)
    b = build_model("lenet5").to(dtype)
    b.load_state_dict(a.state_dict())
    cfg = METaQConfig(C=C, variant=variant, zeta=zeta)
    ra, rb = METaQRegularizer(a, cfg), METaQRegularizer(b, cfg)
    rb._fused = False                      # the general path: solve_dual + torch arithmetic
    xi0 = np.random.default_rng(C).normal(0, 2, C) + 12    # a non-flat warm start: β ≠ 0
    ra.xi, rb.xi = xi0.copy(), xi0.copy()
    return (a, ra), (b, rb)


def _step_both_and_compare(a, ra, b, rb, grad, lr):
    """One regularizer step on both models from the same gradient; the results must be the same
    floats. Then a gradient step on both, so that the next call sees new weights. Returns the
    weights of this step."""
    for m in (a, b):
        for p in m.parameters():
            p.grad = torch.full_like(p, grad)
    ra.after_backward(a)
    rb.after_backward(b)
    assert torch.equal(torch.cat([p.grad.reshape(-1) for p in a.parameters()]),
                       torch.cat([p.grad.reshape(-1) for p in b.parameters()]))
    np.testing.assert_array_equal(ra.last_beta, rb.last_beta)
    assert ra.last_value == rb.last_value
    w = torch.cat([p.detach().reshape(-1) for p in a.parameters()]).numpy().copy()
    with torch.no_grad():
        for p, q in zip(a.parameters(), b.parameters()):
            p.sub_(lr * p.grad)
            q.sub_(lr * q.grad)
    return w


@pytest.mark.parametrize("variant", ["thesis", "flipped", "sorted", "constant_best"])
@pytest.mark.parametrize("C,zeta", [(6, 1e5), (6, 30.0), (256, 1e5), (256, 30.0)])
def test_fused_training_step_equals_the_general_path_bit_for_bit(variant, C, zeta):
    (a, ra), (b, rb) = _pair(C, variant, zeta)
    assert ra._fused and not rb._fused
    for _ in range(3):
        _step_both_and_compare(a, ra, b, rb, grad=0.25, lr=0.5)
        np.testing.assert_array_equal(ra.xi, rb.xi)
    assert np.abs(ra.last_beta).max() > 0
    if variant == "sorted":
        assert (ra.last_beta >= 0).all()


def test_fused_step_float64_model_and_missing_grads():
    (a, ra), (b, rb) = _pair(6, "thesis", 1e3, dtype=torch.float64)
    ra.after_backward(a)                   # p.grad is None: the term becomes the gradient
    rb.after_backward(b)
    for p, q in zip(a.parameters(), b.parameters()):
        assert p.grad.dtype == torch.float64
        assert torch.equal(p.grad, q.grad)


@pytest.mark.parametrize("variant", ["thesis", "adjacent"])
@pytest.mark.parametrize("fused", [True, False])
def test_non_finite_parameter_is_named(fused, variant):
    torch.manual_seed(0)
    m = build_model("lenet5")
    reg = METaQRegularizer(m, METaQConfig(variant=variant))
    reg._fused = fused
    with torch.no_grad():
        dict(m.named_parameters())["conv2.weight"].view(-1)[7] = math.nan
    with pytest.raises(NonFiniteWeightError, match=r"'conv2.weight' contains NaN or inf .*element 7") as e:
        reg.after_backward(m)
    assert e.value.index == m.conv1.weight.numel() + m.conv1.bias.numel() + 7


@pytest.mark.parametrize("variant", ["thesis", "constant_best"])
def test_fused_step_matches_solve_dual_on_training_weights(variant):
    """β and ξ of the fused step are those of solve_dual(method='fista') on the same weights,
    under the variant's return rule (thesis: the last iterate; constant_best: the best point)."""
    (a, ra), _ = _pair(256, variant, 40.0)
    xi0 = ra.xi.copy()
    w = torch.cat([p.detach().reshape(-1) for p in a.parameters()]).numpy()
    ra.after_backward(a)
    ref = solve_dual(w, ra.grid, method="fista", iterations=15, zeta=40.0, xi0=xi0,
                     xi_return=ra.config.return_rule)
    np.testing.assert_array_equal(ra.xi, ref.xi)
    np.testing.assert_array_equal(ra.last_beta, ref.beta)
    assert ra.last_value == ref.value


@pytest.mark.parametrize("C", [2, 3, 6, 257])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adjacent_pass_bit_identical_to_numpy(C, dtype):
    rng = np.random.default_rng(C)
    grid = Grid(0.0, 0.5, C)
    w = _weights(rng, grid, 20_011, dtype)
    k = np.empty(w.shape[0], dtype=np.uint16)
    c, bad = _kernels.adjacent_pass(w, grid.v, grid.delta, k)
    assert bad == -1
    F_ref, dF_ref, c_ref = adjacent_relaxation(w, grid)
    np.testing.assert_array_equal(c, c_ref)
    w64 = w.astype(np.float64)
    wc = np.clip(w64, grid.v[0], grid.v[-1])
    k_ref = np.minimum(((wc - grid.v[0]) / grid.delta).astype(np.int64), C - 2)
    outside = (w64 < grid.v[0]) | (w64 > grid.v[-1])
    assert outside.any()
    k_ref[outside] = C - 1                 # off-range marker: their direction is 0
    np.testing.assert_array_equal(k, k_ref)
    w[123] = np.nan
    assert _kernels.adjacent_pass(w, grid.v, grid.delta, k)[1] == 123


@pytest.mark.parametrize("C", [6, 64])
@pytest.mark.parametrize("alpha", [0.533, 0.0])
def test_fused_adjacent_step_equals_the_general_path_bit_for_bit(C, alpha):
    torch.manual_seed(C)
    a = build_model("lenet5")
    with torch.no_grad():
        for p in a.parameters():
            p.normal_(0.0, 0.3)            # some weights outside [v_0, v_{C−1}]
    b = build_model("lenet5")
    b.load_state_dict(a.state_dict())
    cfg = METaQConfig(C=C, variant="adjacent", w0=0.0, r=0.5, lam=1e-3, alpha=alpha)
    ra, rb = METaQRegularizer(a, cfg), METaQRegularizer(b, cfg)
    rb._fused = False                      # the general path: adjacent_relaxation + torch arithmetic
    assert ra._fused
    for _ in range(3):
        w = _step_both_and_compare(a, ra, b, rb, grad=-0.125, lr=0.05)
    outside = (w < ra.grid.v[0]) | (w > ra.grid.v[-1])
    assert outside.any() and (ra.last_beta[outside] == 0).all() and np.abs(ra.last_beta).max() > 0


@pytest.mark.parametrize("c_lo,c_hi", [(5.0, 1.0), (-1.0, None), (0.01, math.inf)])
def test_regularizer_rejects_bad_c_bounds_like_the_oracle(c_lo, c_hi):
    m = build_model("lenet5")
    with pytest.raises(ValueError, match=r"need finite 0 <= c_lo < c_hi"):
        METaQRegularizer(m, METaQConfig(c_lo=c_lo, c_hi=c_hi))
    with pytest.raises(ValueError, match=r"need finite 0 <= c_lo < c_hi"):
        DualOracle(np.zeros(10), Grid(0.0, 1.0, 6), c_lo, c_hi)


@pytest.mark.parametrize("xi_return", ["best", "last"])
def test_fista_solver_object_equals_solve_dual_and_warm_starts(xi_return):
    """FistaSolver (the one fused path) against solve_dual + the β gather, over three warm starts."""
    from metaq_utils.core.dual import FistaSolver
    rng = np.random.default_rng(7)
    grid = Grid(-0.11, 1.114, 6)
    w = rng.normal(0.2, 0.4, 5000).astype(np.float32)
    xi0 = rng.normal(12, 2, 6)
    solver = FistaSolver(grid, w.size, xi0, zeta=40.0, xi_return=xi_return)
    xi = xi0.copy()
    out = np.empty(w.size)
    for _ in range(3):
        value = solver.step(w, 1.0, out)
        ref = solve_dual(w, grid, method="fista", iterations=15, zeta=40.0, xi0=xi, xi_return=xi_return)
        np.testing.assert_array_equal(solver.xi, ref.xi)
        np.testing.assert_array_equal(out, ref.beta)
        np.testing.assert_array_equal(solver.beta(), ref.beta)
        assert value == ref.value
        xi = ref.xi
    w[3] = np.nan
    with pytest.raises(NonFiniteWeightError) as e:
        solver.step(w, 1.0, out)
    assert e.value.index == 3
    with pytest.raises(ValueError, match="xi must have shape"):
        solver.restart(np.zeros(5))


def test_fista_solver_writes_into_the_callers_buffers_and_checks_them():
    """index_out / table_out: the solver uses the caller's buffers as given (the same floats as its
    own, entry C − 1 of the table untouched), and a buffer of the wrong shape or dtype is refused."""
    from metaq_utils.core.dual import FistaSolver, index_dtype_for
    rng = np.random.default_rng(11)
    grid = Grid(-0.11, 1.114, 6)
    w = rng.normal(0.2, 0.4, 3000)
    xi0 = rng.normal(12, 2, 6)
    index = np.empty(w.size, dtype=index_dtype_for(grid.C))
    table = np.zeros(grid.C)
    table[-1] = -0.0
    own = FistaSolver(grid, w.size, xi0, zeta=40.0)
    given = FistaSolver(grid, w.size, xi0, zeta=40.0, index_out=index, table_out=table)
    assert given.index is index and given.table is table
    a, b = np.empty(w.size), np.empty(w.size)
    for _ in range(2):
        assert own.step(w, 0.5, a) == given.step(w, 0.5, b)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(index, own.index)
        np.testing.assert_array_equal(table[:-1], own.table[:-1])
        assert math.copysign(1.0, table[-1]) == -1.0
        np.testing.assert_array_equal(_kernels.gather(table, index, np.empty(w.size)), own.beta())
    bad = [dict(index_out=np.empty(w.size - 1, dtype=index.dtype)),
           dict(index_out=np.empty(w.size, dtype=np.int64)),
           dict(index_out=np.empty(2 * w.size, dtype=index.dtype)[::2]),
           dict(index_out=list(range(w.size))),
           dict(table_out=np.zeros(grid.C + 1)),
           dict(table_out=np.zeros(grid.C, dtype=np.float32)),
           dict(table_out=np.zeros((1, grid.C)))]
    for kw in bad:
        name = next(iter(kw))
        with pytest.raises(ValueError, match=f"{name} must be a writeable contiguous"):
            FistaSolver(grid, w.size, xi0, **kw)
