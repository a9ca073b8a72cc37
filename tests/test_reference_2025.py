"""The `reference_2025` variant against the code of cardiaa/METaQ at commit 1b7583f.

``_knapsack_pruning_ref`` and ``_fista_ref`` below are a line-by-line NumPy transcription, written
for this test, of ``utils/knapsack.py::knapsack_specialized_pruning`` (lines 92–285) and
``utils/optimization.py::FISTA`` (lines 22–82) at that commit (dense n × C, float32 like the
reference's tensors). The package's fast path (:mod:`metaq_utils.core.reference_2025`: weights
grouped by grid interval, exactness and sign; per-group counts and sums) must agree with them on real weights.
"""
import itertools

import numpy as np
import pytest
import torch

from metaq_utils.core.dual import NonFiniteWeightError
from metaq_utils.core.reference import sorted_uniform_xi
from metaq_utils.core.reference_2025 import (Reference2025Solver, grid_2025, quantize_center, reference_entropy,
                                             reference_size, zero_bucket_share)

F32 = np.float32
CKPT = "runs/dense_reference/protocol/lenet5/adam_cos_aug_seed0/best.pt"


def _knapsack_pruning_ref(xi, v, w, C, delta):
    """knapsack.py 92–285 transcribed (float32)."""
    xi = (xi - F32(delta)).astype(F32)                                        # 111
    M = w.shape[0]                                                            # 112
    b_list, b = [], 0                                                         # 115–116
    while True:
        delta_xi = xi[b + 1:] - xi[b]                                         # 118
        delta_v = v[b + 1:] - v[b]                                            # 119
        b = int(np.argmin(delta_xi / delta_v)) + 1 + b_list[-1] if b_list else 0   # 120
        if b != C - 1:                                                        # 121
            b_list.append(int(b))
        if b + 1 > C - 1:                                                     # 123
            break
    b_list.append(C - 1)                                                      # 125
    x_plus = np.zeros(C, dtype=np.int32)
    x_plus[np.asarray(b_list)] = 1                                            # 126–127
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = xi / v                                                        # 130
    neg_indices = np.flatnonzero(v < 0)                                       # 131
    pos_indices = np.flatnonzero(v >= 0)                                      # 132
    neg_sorted = neg_indices[np.argsort(-ratio[neg_indices], kind="stable")]  # 133 (descending)
    pos_sorted = pos_indices[np.argsort(ratio[pos_indices], kind="stable")]   # 134
    b_vector = np.concatenate([neg_sorted, pos_sorted])                       # 135
    mask_small, mask_large = w < v[0], w > v[-1]                              # 138–139
    mask_mid = ~mask_small & ~mask_large                                      # 140
    mask_edge = mask_small | mask_large                                       # 141
    x = np.zeros((M, C), dtype=F32)                                           # 144
    if mask_edge.any():                                                       # 149
        w_edge = w[mask_edge]
        x_edge = np.zeros((w_edge.shape[0], C), dtype=F32)
        w_div_v0, w_div_v_last = w_edge / v[0], w_edge / v[-1]                # 154–155
        edge_small, edge_large = w_edge < v[0], w_edge > v[-1]                # 158–159
        cond_small = (w_div_v0 >= 0) & (w_div_v0 <= 1) & edge_small           # 162
        else_small = edge_small & ~cond_small
        for cond, else_ in ((cond_small, else_small),
                            ((w_div_v_last >= 0) & (w_div_v_last <= 1) & edge_large, None)):
            if cond.any():                                                    # 165–182, 191–198
                div_mat = w_edge[cond][:, None] / v[None, :]
                i_min = np.argmin(div_mat * xi[None, :], axis=1)
                x_edge[cond, :] = 0
                x_edge[np.flatnonzero(cond), i_min] = div_mat[np.arange(i_min.shape[0]), i_min]
        x_edge[else_small, 0] = 1.0                                           # 184–185
        else_large = edge_large & ~((w_div_v_last >= 0) & (w_div_v_last <= 1) & edge_large)   # 188–189
        x_edge[else_large, -1] = 1.0                                          # 200–201
        x[mask_edge] = x_edge                                                 # 203
    if mask_mid.any():                                                        # 207
        w_mid = w[mask_mid]
        M_mid = w_mid.shape[0]
        ratio_b = w_mid[:, None] / v[b_vector]                                # 212
        valid = (ratio_b >= 0) & (ratio_b <= 1) & (x_plus[b_vector] == 1)[None, :]   # 213
        valid_i0 = np.where(valid, np.arange(C)[None, :], np.inf)             # 214
        i0 = b_vector[valid_i0.argmin(axis=1)]                                # 215–216
        x1_sol = np.zeros((M_mid, C), dtype=F32)                              # 218
        theta1 = w_mid / v[i0]                                                # 219
        x1_sol[np.arange(M_mid), i0] = theta1                                 # 220
        obj1 = x1_sol @ xi                                                    # 221
        obj1[theta1 < 0] = np.inf                                             # 222
        one_indices = np.flatnonzero(x_plus)                                  # 225
        i_right = np.clip(np.searchsorted(v[one_indices], w_mid, side="left"), 1, one_indices.shape[0] - 1)  # 226–227
        idx_right_mid, idx_left_mid = one_indices[i_right], one_indices[i_right - 1]   # 228–229
        v_left, v_right = v[idx_left_mid], v[idx_right_mid]                   # 230–231
        theta2 = (w_mid - v_right) / (v_left - v_right + F32(1e-8))           # 232
        x2_sol = np.zeros((M_mid, C), dtype=F32)                              # 234
        x2_sol[np.arange(M_mid), idx_left_mid] = theta2                       # 235
        x2_sol[np.arange(M_mid), idx_right_mid] = F32(1) - theta2             # 236
        obj2 = x2_sol @ xi                                                    # 237
        better_first = obj1 < obj2                                            # 240
        x[mask_mid] = np.where(better_first[:, None], x1_sol, x2_sol)         # 241–242
    idx_left = np.zeros(M, dtype=np.int64)                                    # 247
    idx_right = np.zeros(M, dtype=np.int64)
    if mask_mid.any():                                                        # 251–263
        idx_left[mask_mid] = np.where(better_first, i0, idx_left_mid)
        idx_right[mask_mid] = np.where(better_first, i0, idx_right_mid)
    if mask_edge.any():                                                       # 266–270
        idx_edge = np.nonzero(x[mask_edge])[1]
        idx_left[mask_edge] = idx_edge
        idx_right[mask_edge] = idx_edge
    denominator = v[idx_right] - v[idx_left]                                  # 273
    with np.errstate(divide="ignore", invalid="ignore"):
        lambda_opt_nonzero = -(xi[idx_right] - xi[idx_left]) / denominator    # 276
        lambda_opt_zero = (-(xi + F32(delta)) / v)[idx_left]                  # 277–278
    lambda_opt = np.where(denominator == 0, lambda_opt_zero, lambda_opt_nonzero)   # 280
    return x, lambda_opt.astype(F32)


def _fista_ref(xi, v, w, C, upper_c, lower_c, delta, subgradient_step, max_iterations):
    """optimization.py 22–82 transcribed (float32, pruning='Y')."""
    xi_prev = xi.copy()                                                       # 41
    t_prev = F32(1.0)                                                         # 42
    for _ in range(max_iterations):                                           # 44
        x_i_star, lambda_plus = _knapsack_pruning_ref(xi, v, w, C, delta)     # 47
        sum_x_star = x_i_star.sum(axis=0, dtype=F32)                          # 51
        c_star = np.exp(F32(np.log(F32(2.0))) * xi - F32(1)).astype(F32)      # 54
        c_star = np.clip(c_star, F32(lower_c), F32(upper_c))                  # 55
        g = -(c_star - sum_x_star)                                            # 58
        t_current = (F32(1) + np.sqrt(F32(1) + F32(4) * t_prev ** 2)) / F32(2)   # 67
        y = xi + ((t_prev - F32(1)) / t_current) * (xi - xi_prev)             # 68
        xi_next = y + F32(1 / subgradient_step) * g                           # 71
        xi_prev = xi.copy()                                                   # 74
        xi = np.sort(xi_next.astype(F32))                                     # 75, 79
        t_prev = t_current
    return xi, lambda_plus                                                    # 82


def _weights():
    sd = torch.load(CKPT, map_location="cpu", weights_only=False)["state_dict"]
    return np.concatenate([t.detach().numpy().reshape(-1) for t in sd.values()]).astype(F32)


def test_grid_logged():
    g = grid_2025(64, 1.1)
    assert (g.bucket_zero, g.w0) == (32, -0.017)           # the log's bucket_zero=32, w0=-0.017
    assert g.v[32] < 0 < g.v[33] and abs(g.centers[32]) < 1e-3
    assert g.centers[-1] == g.v[-1]


@pytest.mark.parametrize("kw", [dict(C=1), dict(C=64, r=0.0), dict(C=64, r=-1.0), dict(C=64, r=float("nan")),
                                dict(C=64, bucket_zero=63), dict(C=64, bucket_zero=-1), dict(C=2.5),
                                dict(C=64, w0=5.0)])
def test_bad_grid(kw):
    with pytest.raises(ValueError):
        grid_2025(**kw)


def test_bad_solver_input():
    g = grid_2025(8, 1.0)
    with pytest.raises(ValueError):
        Reference2025Solver(g.v, 10, float("nan"))
    with pytest.raises(ValueError):
        Reference2025Solver(g.v[::-1], 10, 1.0)
    s = Reference2025Solver(g.v, 4, 1.0)
    with pytest.raises(NonFiniteWeightError):
        s.solve(np.array([0.1, np.nan, 0.0, 0.2]))
    with pytest.raises(ValueError):
        s.solve(np.zeros(5))


@pytest.mark.parametrize("delta", [10.53, 10.465, 0.5])
def test_against_transcription_on_real_weights(delta):
    """Three warm-started solves on a shipped LeNet-5 (n = 44,426, C = 64, the logged grid), 5 FISTA
    iterations each. (Over 15 iterations the two drift apart: the transcription sums Σ_i x*_i in
    float32 — 0.12 off the exact sum on these weights — and a ~1e−6 change of ξ flips near-equal
    chord slopes, hence the breakpoints and β of almost every weight; torch's own summation order
    differs again. The per-iterate test below covers all 15 iterates.)"""
    w = _weights()
    g = grid_2025(64, 1.1)
    n = w.shape[0]
    xi0 = np.sort(np.random.default_rng(1).uniform(0, 1, 64)).astype(F32)
    s = Reference2025Solver(g.v, n, delta, xi0=xi0, iterations=5)
    xi_ref = xi0.copy()
    rng = np.random.default_rng(2)
    for step in range(3):
        ws = (w + rng.normal(0, 1e-3, n)).astype(F32) if step else w
        beta = s.solve(ws)
        xi_ref, lam = _fista_ref(xi_ref, g.v, ws, 64, n, 1e-2, delta, 1e5, 5)
        np.testing.assert_allclose(s.xi, xi_ref, rtol=0, atol=1e-5)
        agree = np.isclose(beta, -lam.astype(np.float64), rtol=1e-5, atol=1e-6)
        assert agree.mean() > 0.999, (step, agree.mean())
        xi_ref = s.xi.copy()   # keep both on the same ξ
    k = s.kind_shares()
    assert k["prune"] + k["split"] + k["below"] + k["above"] == pytest.approx(1.0)


def test_knapsack_at_every_iterate_on_real_weights():
    """At each of the 15 iterates of the transcribed FISTA (logged δ), the fast path's knapsack (one
    evaluation from that ξ) gives the transcription's β and Σ_i x*_i."""
    w = _weights()[::4].copy()
    g = grid_2025(64, 1.1)
    n = w.shape[0]
    xi = np.sort(np.random.default_rng(4).uniform(0, 1, 64)).astype(F32)
    xi_prev, t_prev = xi.copy(), F32(1.0)
    for it in range(15):
        x, lam = _knapsack_pruning_ref(xi, g.v, w, 64, 10.53)
        s = Reference2025Solver(g.v, n, 10.53, xi0=xi, iterations=1)
        beta = s.solve(w)
        np.testing.assert_allclose(beta, -lam, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s.xm, x.sum(axis=0, dtype=np.float64), rtol=1e-5, atol=1e-3)
        xi_prev, t_prev, xi = (*_fista_ref_one(xi, xi_prev, t_prev, x, g, n),)


def _fista_ref_one(xi, xi_prev, t_prev, x, g, n):
    """One pass of optimization.py 51–79 (float32), from the knapsack's x."""
    sum_x_star = x.sum(axis=0, dtype=F32)
    c_star = np.clip(np.exp(F32(np.log(F32(2.0))) * xi - F32(1)).astype(F32), F32(1e-2), F32(n))
    gg = -(c_star - sum_x_star)
    t_current = (F32(1) + np.sqrt(F32(1) + F32(4) * t_prev ** 2)) / F32(2)
    y = xi + ((t_prev - F32(1)) / t_current) * (xi - xi_prev)
    return xi.copy(), t_current, np.sort((y + F32(1e-5) * gg).astype(F32))


def _brute_knapsack(xi_s, v, w, delta):
    """min δ(1 − Σx) + Σ x_j ξ_j  s.t.  Σ x_j v_j = w, Σ x ≤ 1, x ≥ 0, by enumerating the LP's vertices
    (at most two non-zeros; or one plus the zero slack)."""
    xi = xi_s + delta
    best = delta if w == 0 else np.inf
    C = v.shape[0]
    for j in range(C):
        t = w / v[j]
        if 0 <= t <= 1:
            best = min(best, delta * (1 - t) + t * xi[j])
    for a, b in itertools.combinations(range(C), 2):
        if v[a] <= w <= v[b]:
            t = (w - v[b]) / (v[a] - v[b])
            best = min(best, t * xi[a] + (1 - t) * xi[b])
    return best


def test_pruning_knapsack_tiny_brute_force():
    """On tiny grids the reference's knapsack is *not* the LP optimum in general (it only considers
    breakpoints of the ξ' hull); we check that its value is never below the brute-force optimum and
    equals it when ξ is convex in v (every point a breakpoint) — the case the rule is built for."""
    rng = np.random.default_rng(0)
    for trial in range(30):
        C = int(rng.integers(3, 7))
        v = np.sort(rng.uniform(-1, 1, C)).astype(F32)
        v[0], v[-1] = -abs(v[0]) - 0.1, abs(v[-1]) + 0.1
        v = np.sort(v).astype(F32)
        delta = float(rng.uniform(0.1, 2))
        xi = np.sort(rng.uniform(0, 3, C)).astype(F32)
        convex = 2.0 * v.astype(np.float64) ** 2 + 0.3 + delta * 0.5   # strictly convex in v
        for xi_case, exact in ((xi, False), (convex.astype(F32), True)):
            w = rng.uniform(v[0], v[-1], 7).astype(F32)
            x, lam = _knapsack_pruning_ref(xi_case, v, w, C, delta)
            for i in range(w.shape[0]):
                obj = delta * (1 - float(x[i].sum())) + float(x[i] @ xi_case.astype(np.float64))
                assert abs(float(x[i] @ v) - w[i]) < 1e-5 and x[i].sum() <= 1 + 1e-6
                opt = _brute_knapsack(xi_case.astype(np.float64) - delta, v.astype(np.float64), float(w[i]), delta)
                assert obj >= opt - 1e-5
                if exact:
                    assert obj == pytest.approx(opt, abs=1e-4)


def test_fast_path_tiny_equals_transcription():
    rng = np.random.default_rng(3)
    for _ in range(20):
        g = grid_2025(int(rng.integers(4, 12)), float(rng.uniform(0.3, 2)))
        n = int(rng.integers(5, 60))
        w = rng.uniform(-1.3 * g.r, 1.3 * g.r, n).astype(F32)
        w[:2] = 0.0
        w[2] = g.v[1]
        delta = float(rng.uniform(0.1, 3))
        xi0 = np.sort(rng.uniform(0, 1, g.C)).astype(F32)
        s = Reference2025Solver(g.v, n, delta, xi0=xi0, iterations=3)
        beta = s.solve(w)
        xi_ref, lam = _fista_ref(xi0, g.v, w, g.C, n, 1e-2, delta, 1e5, 3)
        np.testing.assert_allclose(s.xi, xi_ref, atol=1e-6)
        np.testing.assert_allclose(beta, -lam, rtol=1e-6, atol=1e-7)


def test_center_quantization_and_size():
    g = grid_2025(64, 1.1)
    w = np.array([-5, g.v[0], g.v[0] + 1e-4, 0.0, 1e-4, g.v[-1], 5], dtype=F32)
    k, q = quantize_center(w, g.v)
    assert list(k) == [0, 0, 0, 32, 32, 62, 63]     # bucketize(right=False) − 1, clamped: w = v_63 is in (v_62, v_63]
    assert q[-1] == g.v[-1] and q[3] == g.centers[32]
    assert zero_bucket_share(w, g) == pytest.approx(2 / 7)
    rs = reference_size(q)
    assert rs["sparsity"] == pytest.approx(2 / 7)
    import zstandard as zstd
    mask = [1 if abs(float(x)) > 1e-3 else 0 for x in q]
    byte = 0
    for j, bit in enumerate(mask):
        byte |= bit << (7 - j)
    cctx = zstd.ZstdCompressor(level=22)
    nz = b"".join(np.float32(x).tobytes() for x in q if abs(float(x)) > 1e-3)
    assert rs["sparse_bytes"] == len(cctx.compress(bytes([byte]))) + len(cctx.compress(nz))
    assert reference_entropy(np.array([1, 1, 2, 2], dtype=F32)) == 5


def test_beta_kept_and_scaled_output():
    w = _weights()
    g = grid_2025(64, 1.1)
    s = Reference2025Solver(g.v, w.size, 10.53, iterations=3)
    out = np.empty(w.size, dtype=F32)
    s.step(w, 7e-4, out)
    b = s.beta()
    np.testing.assert_array_equal(out, (b.astype(F32) * F32(7e-4)))   # (1 − α)λ·β in float32


def test_regularizer_hook_reference_2025():
    """variant='reference_2025' in METaQConfig/METaQRegularizer: grad += λ(1−α)β + λα·w, β from the solver."""
    from metaq_utils.nn.networks import build_model
    from metaq_utils.nn.regularizer import METaQConfig, METaQRegularizer
    cfg = METaQConfig.reference_2025()
    assert (cfg.w0, cfg.bucket_zero, cfg.delta) == (-0.017, 32, 10.53)
    with pytest.raises(ValueError):
        METaQConfig(C=64, r=1.1, w0=0.0, bucket_zero=32, variant="reference_2025")
    with pytest.raises(ValueError):
        METaQConfig(bucket_zero=2)           # not reference_2025
    with pytest.raises(ValueError):
        METaQConfig.reference_2025(delta=float("inf"))
    torch.manual_seed(0)
    m = build_model("lenet5")
    reg = METaQRegularizer(m, cfg)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    reg.after_backward(m)
    w = torch.cat([p.detach().reshape(-1) for p in m.parameters()]).numpy()
    s = Reference2025Solver(grid_2025().v, w.size, 10.53, xi0=cfg.initial_xi(w.size).astype(F32))
    beta = s.solve(w)
    g = torch.cat([p.grad.reshape(-1) for p in m.parameters()]).numpy()
    expect = (beta.astype(F32) * F32(cfg.lam * (1 - cfg.alpha))) + F32(cfg.lam * cfg.alpha) * w
    np.testing.assert_allclose(g, expect, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(reg.last_beta, beta)
    met = reg.epoch_metrics(m)
    assert 0 <= met["zero_bucket_share"] <= 1 and "knapsack_prune" in met
    reg2 = METaQRegularizer(m, cfg)
    reg2.load_state_dict(reg.state_dict())
    np.testing.assert_array_equal(reg2._ref.xi, reg._ref.xi)


# -- the regularizer hook (variant 'reference_2025') -------------------------------------------
def test_config_validation():
    from metaq_utils.nn.regularizer import METaQConfig

    cfg = METaQConfig.reference_2025()
    assert (cfg.C, cfg.r, cfg.w0, cfg.bucket_zero, cfg.delta) == (64, 1.1, -0.017, 32, 10.53)
    for bad in (dict(method="dss"), dict(R="l1"), dict(xi_return="best"), dict(delta=float("nan")),
                dict(delta=float("inf"))):
        with pytest.raises(ValueError):
            METaQConfig.reference_2025(**bad)
    with pytest.raises(ValueError, match="needs w0"):       # bucket_zero fixes w0 (train.py 66)
        METaQConfig(C=64, r=1.1, w0=0.0, bucket_zero=32, variant="reference_2025")
    with pytest.raises(ValueError, match="applies to variant .reference_2025. only"):
        METaQConfig(C=64, r=1.1, w0=-0.017, bucket_zero=32, variant="reference")
    with pytest.raises(ValueError):                         # bucket_zero out of [0, C − 2]
        METaQConfig.reference_2025(C=64, bucket_zero=63)
    with pytest.raises(ValueError):                         # C < 2
        METaQConfig.reference_2025(C=1)
    with pytest.raises(ValueError):                         # a grid without v_0 < 0 < v_(C−1)
        METaQConfig(C=64, r=1.1, w0=2.0, variant="reference_2025")
    # zero bucket off: a given w0 without bucket_zero is accepted (the ablation's grid)
    assert METaQConfig(C=64, r=1.1, w0=0.0, variant="reference_2025").bucket_zero is None


def _lenet_with_grads(seed=0):
    from metaq_utils.nn.checkpoints import load_checkpoint

    model = load_checkpoint(CKPT).build_model()
    torch.manual_seed(seed)
    x = torch.randn(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return model


def test_hook_gradient_against_transcription():
    """The hook adds (1 − α)λ·(−λ_knap) (trainer.py 85) and λα·w (Adam's coupled weight decay,
    trainer.py 22) to ∇loss, with λ_knap from the transcribed FISTA/knapsack, warm-started over two
    steps on the shipped LeNet-5."""
    from metaq_utils.nn.regularizer import METaQConfig, METaQRegularizer

    model = _lenet_with_grads()
    cfg = METaQConfig.reference_2025(iterations=5)
    reg = METaQRegularizer(model, cfg)
    g = grid_2025(64, 1.1)
    xi_ref = sorted_uniform_xi(64, 0.0, 1.0, 0)
    for step in range(2):
        w = np.concatenate([p.detach().numpy().reshape(-1) for p in model.parameters()]).astype(F32)
        g_loss = np.concatenate([p.grad.numpy().reshape(-1) for p in model.parameters()]).astype(np.float64)
        reg.after_backward(model)
        got = np.concatenate([p.grad.numpy().reshape(-1) for p in model.parameters()]).astype(np.float64)
        xi_ref, lam = _fista_ref(xi_ref, g.v, w, 64, w.size, 1e-2, 10.53, 1e5, 5)
        np.testing.assert_allclose(reg.xi, xi_ref, rtol=0, atol=1e-5)
        want = g_loss + (1 - 0.533) * 0.0015 * (-lam.astype(np.float64)) + 0.0015 * 0.533 * w
        agree = np.isclose(got, want, rtol=1e-5, atol=1e-9)
        assert agree.mean() > 0.999, (step, agree.mean())
        np.testing.assert_allclose(reg.last_beta[agree], -lam[agree], rtol=1e-5, atol=1e-6)
        xi_ref = reg._ref.xi.copy()      # keep both on the same ξ
        with torch.no_grad():            # move the weights a little, fresh gradients
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 1e-3)
                p.grad.normal_(0, 1e-2)


def test_hook_metrics_and_resume():
    from metaq_utils.nn.regularizer import METaQConfig, METaQRegularizer

    model = _lenet_with_grads()
    cfg = METaQConfig.reference_2025(iterations=3)
    reg = METaQRegularizer(model, cfg)
    reg.after_backward(model)
    m = reg.epoch_metrics(model)
    w = np.concatenate([p.detach().numpy().reshape(-1) for p in model.parameters()])
    zero = quantize_center(w, grid_2025(64, 1.1).v)[0] == 32
    assert m["zero_bucket"] == 32 and m["zero_bucket_share"] == pytest.approx(zero.mean())
    assert m["beta_zero_bucket_mean"] == pytest.approx(float(reg.last_beta[zero].mean()))
    assert sum(m[f"knapsack_{k}"] for k in ("below", "above", "prune", "split")) == pytest.approx(1.0)
    # a saved state resumes the warm start: the next step equals the uninterrupted one
    state = reg.state_dict()
    reg.after_backward(model)
    want = reg._ref.xi.copy()
    other = METaQRegularizer(model, cfg)
    other.load_state_dict(state)
    other.after_backward(model)
    np.testing.assert_array_equal(other._ref.xi, want)
    with pytest.raises(ValueError):
        METaQRegularizer(model, METaQConfig.reference_2025(delta=5.0)).load_state_dict(state)
