"""The `reference` variant against the rules of the reference implementation.

Reference: public repository cardiaa/METaQ at commit ebd4355 (thesis-era code). The functions
``_knapsack_ref`` and ``_fista_ref`` below are a line-by-line NumPy transcription of
``utils/knapsack.py::knapsack_specialized`` (lines 4–91) and ``utils/optimization.py::FISTA``
(lines 5–62), written for this test (dense n × C, float32 like the reference's tensors); the
package's fast path (:mod:`metaq_utils.core.reference`, compiled kernels) must agree with them.
"""
import math

import numpy as np
import pytest
import torch

from metaq_utils.core import _kernels
from metaq_utils.core.dual import NonFiniteWeightError
from metaq_utils.core.reference import ReferenceSolver, reference_grid, sorted_uniform_xi

F32 = np.float32


def _knapsack_ref(xi, v, w, C):
    """knapsack.py 4–91 transcribed (float32)."""
    b_list, b = [], 0
    while True:                                                       # 22
        delta_xi = xi[b + 1:] - xi[b]                                 # 23
        delta_v = v[b + 1:] - v[b]                                    # 24
        b = int(np.argmin(delta_xi / delta_v)) + 1 + b_list[-1] if b_list else 0   # 25
        if b != C - 1:                                                # 27
            b_list.append(int(b))
        if b + 1 > C - 1:                                             # 30
            break
    b_list.append(C - 1)                                              # 32
    x_plus = np.zeros(C, dtype=np.int32)
    x_plus[np.asarray(b_list)] = 1                                    # 33–35
    w_idx = np.searchsorted(v, w, side="left")                        # 38
    bps = np.flatnonzero(x_plus == 1)                                 # 39
    mask_right, mask_left = w > v[-1], w < v[0]                       # 42–43
    search_idx = np.clip(np.searchsorted(bps, w_idx, side="left"), 1, len(bps) - 1)   # 46–49
    idx_right, idx_left = bps[search_idx], bps[search_idx - 1]        # 52–53
    idx_right = np.where(mask_right, bps[-1], idx_right)              # 56
    idx_left = np.where(mask_right, bps[-1], idx_left)                # 57
    idx_right = np.where(mask_left, bps[0], idx_right)                # 60
    idx_left = np.where(mask_left, bps[0], idx_left)                  # 61
    n = len(w)
    x1 = np.zeros((n, C), dtype=F32)
    x2 = np.zeros((n, C), dtype=F32)
    x1[np.arange(n), idx_left] = 1                                    # 66
    x2[np.arange(n), idx_right] = 1                                   # 67
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = (w - x2 @ v) / ((x1 - x2) @ v)                        # 69–71
        x_opt = np.where(x1 == x2, x1, x1 * theta[:, None] + x2 * (1 - theta[:, None]))   # 73–75
        denominator = v[idx_right] - v[idx_left]                      # 78
        lam_nonzero = (xi[idx_right] - xi[idx_left]) / denominator    # 81
    with np.errstate(divide="ignore", invalid="ignore"):
        lam_zero_full = xi / v                                        # 82
    lam_zero_full[0] = 0                                              # 83
    lam = np.where(denominator == 0, lam_zero_full[idx_left], lam_nonzero)   # 84–86
    return x_opt.astype(F32), lam.astype(F32), np.asarray(b_list)


def _fista_ref(xi, v, w, C, subgradient_step, max_iterations):
    """optimization.py 5–62 transcribed (float32); also returns the φ of each evaluation."""
    upper_c = w.shape[0]                                              # 23
    xi_prev = xi.copy()                                               # 26
    t_prev = F32(1.0)                                                 # 27
    phis = []
    for _ in range(max_iterations):                                   # 29
        x_star, lam, bps = _knapsack_ref(xi, v, w, C)                 # 31
        sum_x = x_star.sum(axis=0, dtype=F32)                         # 32
        c_star = np.exp(F32(math.log(2)) * xi - F32(1)).astype(F32)   # 35
        c_star = np.clip(c_star, 0, upper_c).astype(F32)              # 36
        g = -(c_star - sum_x)                                         # 39
        phi = (np.sum(c_star.astype(float) * np.log(c_star.astype(float)) / math.log(2))
               - np.sum(xi.astype(float) * c_star) + np.sum(xi.astype(float) * sum_x))   # 42–45
        phis.append(phi)
        t = (F32(1) + np.sqrt(F32(1) + F32(4) * t_prev ** 2)) / F32(2)   # 48
        y = xi + ((t_prev - F32(1)) / t) * (xi - xi_prev)             # 49
        xi_next = y + F32(1 / subgradient_step) * g                   # 52
        xi_prev = xi.copy()                                           # 55
        xi = np.sort(xi_next.astype(F32))                             # 56, 59–60
        t_prev = t                                                    # 57
    return xi, lam, bps, np.asarray(phis)


def _real_like_weights(n=3000, seed=0):
    """Weights like a trained LeNet-5 on the thesis range: mostly in range, a tail above v_{C−1}."""
    rng = np.random.default_rng(seed)
    w = np.concatenate([rng.normal(-0.05, 0.25, n - n // 8), rng.uniform(0.6, 1.3, n // 16),
                        rng.uniform(-1.5, -1.2, n // 16)])
    return rng.permutation(w).astype(F32)


def test_grid_is_torch_linspace_of_the_left_edges():
    for C in (2, 3, 6, 7, 12, 48, 256):
        min_w, max_w = -0.11 - 1.114, -0.11 + 1.114
        ref = torch.linspace(min_w, max_w - (max_w - min_w) / C, steps=C).numpy()   # trainer.py 43–44
        if C <= 7:      # ATen's scalar rule, reproduced bit for bit
            np.testing.assert_array_equal(reference_grid(-0.11, 1.114, C), ref)
        else:           # torch's vectorised kernel rounds differently: a few ulp
            np.testing.assert_allclose(reference_grid(-0.11, 1.114, C), ref, rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="C must be"):
        reference_grid(0.0, 1.0, 1)
    with pytest.raises(ValueError, match="r must be > 0"):
        reference_grid(0.0, 0.0, 6)


def test_flat_xi_keeps_every_point_and_gives_hand_checked_betas():
    # C = 4 on edges v = [-1, -0.5, 0, 0.5]; ξ flat: every point is a breakpoint (knapsack.py 25)
    v = reference_grid(-0.25, 1.0, 4)
    np.testing.assert_allclose(v, [-1.25, -0.75, -0.25, 0.25])
    xi = np.full(4, 0.7, dtype=F32)
    bp = np.empty(4, dtype=np.intp)
    nb = _kernels.reference_breakpoints(xi, v, bp)
    assert list(bp[:nb]) == [0, 1, 2, 3]
    # in range → slope 0; above v_3 → ξ_3/v_3 = 0.7/0.25 = 2.8; below v_0 → 0
    w = np.array([-1.0, 0.0, 0.25, 0.26, 3.0, -2.0], dtype=F32)
    s = ReferenceSolver(v, w.size, iterations=1, xi0=xi)
    table_beta, _ = s.solve(w)
    np.testing.assert_allclose(table_beta, [0, 0, 0, F32(0.7) / F32(0.25), F32(0.7) / F32(0.25), 0], rtol=1e-7)
    assert s.off_grid_shares() == (2 / 6, 1 / 6)


def test_breakpoints_hand_checked():
    v = np.array([0, 1, 2, 3, 4], dtype=F32)
    bp = np.empty(5, dtype=np.intp)
    # a "V": the lower hull is {0, 2, 4}; points 1 and 3 lie on the chords (ties → first index kept)
    xi = np.array([2, 1, 0, 1, 2], dtype=F32)
    nb = _kernels.reference_breakpoints(xi, v, bp)
    assert list(bp[:nb]) == [0, 1, 2, 3, 4]
    xi = np.array([0, 3, 1, 3, 2], dtype=F32)          # hull {0, 2, 4}
    nb = _kernels.reference_breakpoints(xi, v, bp)
    assert list(bp[:nb]) == [0, 2, 4]
    _, _, bps = _knapsack_ref(xi, v, np.array([0.5], dtype=F32), 5)
    assert list(bps) == [0, 2, 4]


def test_bracketing_at_grid_values_follows_searchsorted_left():
    # a weight exactly on v_k (k ≥ 1) belongs to interval k − 1 (knapsack.py 38: searchsorted left)
    v = np.array([0, 1, 2, 3], dtype=F32)
    w = np.array([0.0, 1.0, 1.5, 2.0, 3.0], dtype=F32)
    k = np.empty(5, dtype=np.uint16)
    N, S, bad = _kernels.reference_pass(w, v.astype(float), k)
    assert bad == -1 and list(k) == [0, 0, 1, 1, 2]
    assert list(N) == [2, 2, 1, 0, 0]


@pytest.mark.parametrize("C", [6, 12, 48])
def test_one_solve_matches_the_transcription(C):
    w = _real_like_weights()
    v = reference_grid(-0.11, 1.114, C)
    xi0 = sorted_uniform_xi(C, 0.0, 1.0, seed=3)
    xi_ref, lam_ref, bps_ref, phis_ref = _fista_ref(xi0.copy(), v, w, C, 1e5, 15)
    s = ReferenceSolver(v, w.size, xi0=xi0)
    beta, st = s.solve(w)
    # Σ_i x*_i is a float32 sum of n terms in the reference (order: NumPy's here, torch's there),
    # ours a float64 sum: the two differ by ~1e-3 on masses of ~10^3, i.e. 1e-8 on ξ per step,
    # which FISTA's momentum grows to ~1e-6 over 15 iterations
    np.testing.assert_allclose(st.xi, xi_ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(beta, lam_ref, rtol=1e-4, atol=1e-5)
    assert list(st.breakpoints) == list(bps_ref)
    np.testing.assert_allclose(st.history, phis_ref, rtol=1e-5)
    assert np.abs(beta).max() > 0.1                   # the term acts: β is not zero


def _lenet5_weights(which):
    """The 44,426 weights of a real LeNet-5: the shipped reproduction checkpoint (trained), or the
    thesis' start (every parameter uniform in [w0 − r, w0 + r], trainer.py 45)."""
    from metaq_utils.nn.checkpoints import BEFORE_DIR, load_checkpoint
    from metaq_utils.nn.networks import build_model
    if which == "trained":
        path = BEFORE_DIR / "metaq_thesis_repro_seed0.pt"
        if not path.exists():
            pytest.skip(f"{path} is not in this checkout")
        tensors = load_checkpoint(path).state_dict.values()
    else:
        torch.manual_seed(0)
        model = build_model("lenet5")
        with torch.no_grad():
            for p in model.parameters():
                p.uniform_(-0.11 - 1.114, -0.11 + 1.114)
        tensors = [p.detach() for p in model.parameters()]
    w = np.concatenate([np.asarray(t, dtype=F32).reshape(-1) for t in tensors])
    assert w.size == 44_426
    return w


@pytest.mark.parametrize("which", ["trained", "initial"])
def test_warm_started_solves_match_the_transcription_on_real_weights(which):
    """20 successive warm-started solves (trainer.py 73) on a real LeNet-5's weights."""
    w = _lenet5_weights(which)
    C = 6
    v = reference_grid(-0.11, 1.114, C)
    xi = sorted_uniform_xi(C, 0.0, 1.0, seed=0)
    s = ReferenceSolver(v, w.size, xi0=xi)
    xi_ref = xi.copy()
    for step in range(20):
        xi_ref, lam_ref, _, _ = _fista_ref(xi_ref, v, w, C, 1e5, 15)
        beta, st = s.solve(w)
        # float32 sums in a different order (see test_one_solve_matches_the_transcription): ξ
        # agrees to a few float32 ulp at every step, β to 1e-4
        np.testing.assert_allclose(st.xi, xi_ref, rtol=2e-5, atol=1e-5, err_msg=f"step {step}")
        np.testing.assert_allclose(beta, lam_ref, rtol=1e-4, atol=1e-4, err_msg=f"step {step}")
        assert np.abs(beta).min() > 0.01               # β is non-zero for every weight at every step
    top, low = w > v[-1], w < v[0]
    if which == "initial":   # 16 % of the uniform start lies above the last left edge v_5 = 0.633
        assert 0.15 < top.mean() < 0.17 and not low.any()
        assert np.all(beta[top] == beta[top][0])                 # one multiplier ξ_{C−1}/v_{C−1}
        assert beta[top][0] > 5 * np.median(beta[~top])        # ξ_{C−1}/v_{C−1}: the large push
    else:
        assert not top.any() and not low.any()


def test_nan_weight_is_named_and_bad_inputs_rejected():
    v = reference_grid(-0.11, 1.114, 6)
    w = _real_like_weights(100)
    w[17] = np.nan
    s = ReferenceSolver(v, 100)
    with pytest.raises(NonFiniteWeightError) as e:
        s.solve(w)
    assert e.value.index == 17
    with pytest.raises(ValueError, match="1-D array of 100 weights"):
        s.solve(np.zeros(99, dtype=F32))
    with pytest.raises(ValueError, match="strictly increasing"):
        ReferenceSolver(np.array([0.0, 0.0, 1.0]), 10)
    with pytest.raises(ValueError, match="xi0 must be 6 finite"):
        ReferenceSolver(v, 10, xi0=np.zeros(5))


def test_fista_rules_by_hand_two_buckets():
    """Two iterations on v = [0, 1], w = [0.25, 0.25], ξ0 = [0, 0], ζ = 1, worked out by hand.

    Each weight sends 0.75 to v_0 and 0.25 to v_1, so Σx* = [1.5, 0.5] at every ξ (two points are
    always both breakpoints). c* = exp(ln2·ξ − 1) (optimization.py 35).
    k = 1: at ξ0 = [0, 0]: g = Σx* − c* = [1.5 − e⁻¹, 0.5 − e⁻¹]; t = (1 + √5)/2, coefficient
           (t_prev − 1)/t = 0 (t_prev = 1, line 27), so ξ1 = ξ0 + g/ζ = [1.132, 0.132], which the
           re-sort (59–60) turns into [0.132, 1.132].
    k = 2: at ξ1 (the iterate, not an extrapolated point, line 31): β = slope (ξ1[1] − ξ1[0])/1 =
           1; t2 = (1 + √(1 + 4t²))/2; y = ξ1 + ((t − 1)/t2)(ξ1 − ξ0); ξ2 = sort(y + g(ξ1)/ζ).
    Returned: ξ2 (the last iterate, never evaluated) and β from the evaluation at ξ1 (line 62).
    """
    v = reference_grid(1.0, 1.0, 2)
    np.testing.assert_array_equal(v, [0.0, 1.0])
    w = np.array([0.25, 0.25], dtype=F32)
    s = ReferenceSolver(v, 2, iterations=2, zeta=1.0, xi0=np.zeros(2, dtype=F32))
    beta, st = s.solve(w)
    e1 = math.exp(-1.0)
    g0 = np.array([1.5 - e1, 0.5 - e1])
    xi1 = np.sort(g0)
    c1 = np.exp(math.log(2) * xi1 - 1)
    g1 = np.array([1.5, 0.5]) - c1
    t1 = (1 + math.sqrt(5)) / 2
    t2 = (1 + math.sqrt(1 + 4 * t1 * t1)) / 2
    y = xi1 + ((t1 - 1) / t2) * (xi1 - 0.0)
    xi2 = np.sort(y + g1)
    np.testing.assert_allclose(st.xi, xi2, rtol=1e-6)
    np.testing.assert_allclose(beta, [xi1[1] - xi1[0]] * 2, rtol=1e-6)     # = 1.0, from ξ1, not ξ2
    assert abs((xi2[1] - xi2[0]) - beta[0]) > 0.5                           # ξ2's slope would differ
    phi1 = float(np.sum(c1 * np.log2(c1)) - np.sum(xi1 * c1) + np.sum(xi1 * [1.5, 0.5]))
    np.testing.assert_allclose(st.phi, phi1, rtol=1e-6)                    # φ of the last evaluation
