"""Compiled (numba) kernels of the dual oracle: the O(n) pass, the O(C) evaluation, FISTA, β.

These are the hot loops of one METaQ training step (spec §2.4). The NumPy formulation of the same
computations is kept in :mod:`metaq_utils.core.dual` (``DualOracle._aggregate_numpy`` and
``DualOracle._eval_numpy``) as the readable reference; ``tests/test_kernels.py`` checks the
kernels against it (the O(n) aggregates bit for bit, the evaluation to rounding) and, through
the rest of the suite, against HiGHS, CVXPY and brute force.

Why compiled code: at n = 44,426 and C = 6 the NumPy oracle spends its time in call overhead —
about 25 NumPy calls per evaluation on length-6 arrays (15 µs each, 15 per step) and eight
O(n) passes over temporaries for the aggregates — which made a METaQ epoch cost 1.36× a plain
one (``results/bench_training.json``, before this module). Here the O(n) pass is one loop that
reads each weight once, and a whole FISTA solve runs without returning to Python.

Conventions shared with the NumPy reference (so that the aggregates are identical):

* u_i = (float64(w_i)·(1/Δ)) − v_0·(1/Δ), clamped to [0, C − 1]; k_i = min(trunc(u_i), C − 2);
* per chunk of ``chunk`` weights, weight j of the chunk is accumulated into lane j mod 8 of a
  laned histogram (index k + lane·(C − 1)), starting from zero; chunk histograms are added to the
  running totals in order. This is exactly what ``np.bincount`` does on the laned index.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

LANES = 8
LN2 = math.log(2.0)
INV_LN2 = 1.0 / LN2


@njit(cache=True, nogil=True)
def _u(x, v0_scaled, inv_delta, hi):  # pragma: no cover - compiled
    """u = (x − v_0)/Δ as (x·(1/Δ)) − v_0/Δ in float64, clamped to [0, C − 1]."""
    u = np.float64(x) * inv_delta
    u = u - v0_scaled
    return min(max(u, 0.0), hi)


@njit(cache=True, nogil=True)
def intervals(w, v0_scaled, inv_delta, C, k_out):  # pragma: no cover - compiled
    """k_out[i] = min(trunc(u_i), C − 2) for every weight; returns True iff every weight is finite.

    Kept free of scatter stores so that it vectorizes (a loop mixing the two ran 3× slower).
    """
    hi = C - 1.0
    kmax = C - 2
    ok = True
    for i in range(w.shape[0]):
        x = np.float64(w[i])
        ok &= (x - x) == 0.0  # False for NaN and ±inf
        k_out[i] = min(int(_u(x, v0_scaled, inv_delta, hi)), kmax)
    return ok


@njit(cache=True, nogil=True)
def _scatter(w, k, s, e, v0_scaled, inv_delta, C, Nc, Uc):  # pragma: no cover - compiled
    """Weights w[s:e] into the zeroed laned histograms Nc, Uc (lane = (i − s) mod 8)."""
    nbins = C - 1
    hi = C - 1.0
    full = s + ((e - s) // LANES) * LANES
    for i0 in range(s, full, LANES):
        for lane in range(LANES):  # constant lanes: no store-to-load chains between neighbours
            j = lane * nbins + k[i0 + lane]
            Nc[j] += 1.0
            Uc[j] += _u(w[i0 + lane], v0_scaled, inv_delta, hi)
    for i in range(full, e):
        j = (i - full) * nbins + k[i]
        Nc[j] += 1.0
        Uc[j] += _u(w[i], v0_scaled, inv_delta, hi)


@njit(cache=True, nogil=True)
def aggregate(w, v0_scaled, inv_delta, C, chunk, k_out):  # pragma: no cover - compiled
    """The O(n) pass: laned per-interval counts and Σu, and each weight's interval in ``k_out``.

    Returns ``(N, U, bad)``: laned arrays of length 8·(C − 1) and the index of the first NaN/inf
    weight (−1 if none; otherwise N and U are empty and must not be used).
    """
    n = w.shape[0]
    if not intervals(w, v0_scaled, inv_delta, C, k_out):
        for i in range(n):
            if not math.isfinite(w[i]):
                return np.zeros(0), np.zeros(0), i
    N = np.zeros(LANES * (C - 1))
    U = np.zeros(LANES * (C - 1))
    Nc = np.empty(LANES * (C - 1))
    Uc = np.empty(LANES * (C - 1))
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        Nc[:] = 0.0
        Uc[:] = 0.0
        _scatter(w, k_out, s, e, v0_scaled, inv_delta, C, Nc, Uc)
        for j in range(LANES * (C - 1)):
            N[j] += Nc[j]
            U[j] += Uc[j]
    return N, U, -1


@njit(cache=True, nogil=True)
def prefix_sums(N, U, C):  # pragma: no cover - compiled
    """(cum, counts) from the laned N, U: lanes summed in order, then the three prefix sums.

    cum[0, b] = Σ_{k<b} N_k; cum[1, b] = Σ_{k<b} (U_k − k·N_k) = Σ_{k<b} Σ_{i∈k} (w_i − v_k)/Δ;
    cum[2, b] = Σ_{k<b} k·N_k. The same operations, in the same order, as
    ``DualOracle._prefix_sums_numpy``.
    """
    nbins = C - 1
    counts = np.empty(nbins)
    cum = np.zeros((3, C))
    c0 = 0.0
    c1 = 0.0
    c2 = 0.0
    for k in range(nbins):
        n_k = N[k]
        u_k = U[k]
        for lane in range(1, LANES):
            n_k += N[lane * nbins + k]
            u_k += U[lane * nbins + k]
        counts[k] = n_k
        kn = n_k * k
        c0 += n_k
        c1 += u_k - kn
        c2 += kn
        cum[0, k + 1] = c0
        cum[1, k + 1] = c1
        cum[2, k + 1] = c2
    return cum, counts


@njit(cache=True, nogil=True)
def pava_blocks(y, wt, r):  # pragma: no cover - compiled
    """Block boundaries of the weighted isotonic (non-decreasing) regression of ``y``, in O(m).

    Busing (2022), "Monotone Regression: A Simple and Fast O(n) PAVA Implementation", J. Stat.
    Softw. 102(1), Algorithm 1, with ties pooled (a block is merged with its neighbour when the
    neighbour's value is >=, so equal slopes form one block). ``y`` and ``wt`` are overwritten
    (block values and weights); on return r[0..nb] are the boundaries: block b is y[r[b]:r[b+1]].
    Returns nb. The same recursion as ``scipy.optimize.isotonic_regression``'s, so the blocks agree.
    """
    m = y.shape[0]
    r[0] = 0
    r[1] = 1
    b = 0
    y_last = y[0]
    w_last = wt[0]
    i = 1
    while i < m:
        b += 1
        yb = y[i]
        wb = wt[i]
        if y_last >= yb:  # the new element violates monotonicity: pool it with the last block
            b -= 1
            s = w_last * y_last + wb * yb
            wb += w_last
            yb = s / wb
            while i < m - 1 and yb >= y[i + 1]:  # absorb following elements that still violate
                i += 1
                s += wt[i] * y[i]
                wb += wt[i]
                yb = s / wb
            while b > 0 and y[b - 1] >= yb:  # and earlier blocks that now violate
                b -= 1
                s += wt[b] * y[b]
                wb += wt[b]
                yb = s / wb
        y[b] = yb
        y_last = yb
        wt[b] = wb
        w_last = wb
        r[b + 1] = i + 1
        i += 1
    return b + 1


@njit(cache=True, nogil=True)
def evaluate(xi, cum, ln_c_lo, ln_c_hi, d, wt, r, g, c, x_mass):  # pragma: no cover - compiled
    """φ_w(ξ) (16) in O(C) from the prefix sums ``cum`` (3 × C); fills g, c*, Σx* and r (vertices).

    Returns ``(value, nv)``: the dual value and the number of hull vertices r[0..nv−1].
    ``d``, ``wt`` (length C − 1) are scratch.
    """
    C = xi.shape[0]
    for b in range(C - 1):
        d[b] = xi[b + 1] - xi[b]
        wt[b] = 1.0
    nseg = pava_blocks(d, wt, r)
    for b in range(C):
        x_mass[b] = 0.0
    env_lo = 0.0  # Σ_segments N·ξ_a
    env_t = 0.0  # Σ_segments (Σθ)·(ξ_b − ξ_a)
    carry = 0.0  # mass sent to the left vertex of this segment by the previous one
    for s in range(nseg):
        a = r[s]
        bb = r[s + 1]
        N = cum[0, bb] - cum[0, a]
        tsum = ((cum[1, bb] - cum[1, a]) + (cum[2, bb] - cum[2, a]) - a * N) / (bb - a)
        xa = xi[a]
        env_lo += N * xa
        env_t += tsum * (xi[bb] - xa)
        x_mass[a] = (N - tsum) + carry
        carry = tsum
    x_mass[C - 1] += carry
    value = 0.0
    for b in range(C):
        t = xi[b] * LN2 - 1.0  # ln c* (29), clamped
        if t > ln_c_hi:
            t = ln_c_hi
        if t < ln_c_lo:
            t = ln_c_lo
        cb = math.exp(t)
        c[b] = cb
        g[b] = x_mass[b] - cb
        value += cb * (t * INV_LN2 - xi[b])
    return value + (env_lo + env_t), nseg + 1


@njit(cache=True, nogil=True)
def fista(xi0, cum, iterations, inv_zeta, sort_xi, ln_c_lo, ln_c_hi, points, history,
          use_last=False, xi_out=None):  # pragma: no cover
    """FISTA (82)–(84) on φ_w, entirely compiled; the same recursion as ``dual.fista``.

    Fills ``points[k]`` (σ_k, the k-th evaluated point) and ``history[k]`` (φ_w(σ_k)). Returns
    (kept index, its g, c*, Σx* and hull vertices): the best evaluated point, or with
    ``use_last`` the last one. ``xi_out`` (if given) receives the final iterate ξ_{K+1}.
    """
    C = xi0.shape[0]
    d = np.empty(C - 1)
    wt = np.empty(C - 1)
    r = np.empty(C, dtype=np.intp)
    g = np.empty(C)
    c = np.empty(C)
    xm = np.empty(C)
    best_g = np.empty(C)
    best_c = np.empty(C)
    best_xm = np.empty(C)
    best_r = np.empty(C, dtype=np.intp)
    best_nv = 0
    best_k = -1
    best_val = -np.inf
    xi = xi0.copy()
    if sort_xi:
        xi.sort()
    xi_prev = xi.copy()
    t_prev = 1.0
    t = 1.0
    for k in range(iterations):
        coef = (t_prev - 1.0) / t
        sigma = points[k]
        for b in range(C):
            sigma[b] = xi[b] + coef * (xi[b] - xi_prev[b])  # (83)
        if sort_xi:
            sigma.sort()
        val, nv = evaluate(sigma, cum, ln_c_lo, ln_c_hi, d, wt, r, g, c, xm)
        history[k] = val
        if use_last or val > best_val:
            best_val = val
            best_k = k
            best_g[:] = g
            best_c[:] = c
            best_xm[:] = xm
            best_r[:nv] = r[:nv]
            best_nv = nv
        for b in range(C):
            xi_prev[b] = xi[b]
            xi[b] = sigma[b] + inv_zeta * g[b]  # (84)
        if sort_xi:
            xi.sort()
        t_prev, t = t, 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))  # (82)
    if xi_out is not None:
        xi_out[:] = xi
    return best_k, best_g, best_c, best_xm, best_r[:best_nv].copy()


@njit(cache=True, nogil=True)
def slope_table(xi, r, nv, v, table):  # pragma: no cover - compiled
    """table[k] = slope of the hull segment containing grid interval k (C − 1 entries)."""
    for s in range(nv - 1):
        a = r[s]
        b = r[s + 1]
        slope = (xi[b] - xi[a]) / (v[b] - v[a])
        for k in range(a, b):
            table[k] = slope
    return table


@njit(cache=True, nogil=True)
def gather(table, k, out):  # pragma: no cover - compiled
    """out[i] = table[k[i]] (β_i = slope of weight i's hull segment)."""
    for i in range(k.shape[0]):
        out[i] = table[k[i]]
    return out


@njit(cache=True, nogil=True)
def gather_scaled(table, k, scale, out):  # pragma: no cover - compiled
    """out[i] = out.dtype(table[k[i]]) · out.dtype(scale): β cast to the parameters' dtype, then
    scaled in that dtype — the same floats as ``torch.from_numpy(β).to(dtype).mul_(scale)``.
    ``table`` holds the direction of every interval index that ``k`` uses."""
    t = np.empty(table.shape[0] + 1, dtype=out.dtype)
    for j in range(table.shape[0]):
        t[j] = table[j]
    t[-1] = scale
    sc = t[-1]
    for i in range(k.shape[0]):
        out[i] = t[k[i]] * sc
    return out


@njit(cache=True, nogil=True)
def fista_step(w, v0_scaled, inv_delta, v, chunk, k_out, xi0, iterations, inv_zeta, sort_xi,
               ln_c_lo, ln_c_hi, points, history, scale, out, table, use_last,
               xi_out):  # pragma: no cover - compiled
    """One METaQ training step with FISTA, fused: the O(n) pass, the dual solve, β into ``out``.

    The composition of :func:`aggregate`, :func:`prefix_sums`, :func:`fista`, :func:`slope_table`
    and :func:`gather_scaled` (``out = scale·β`` in ``out``'s dtype; ``table`` receives the slope
    of every interval, so β_i = table[k_out[i]]). Returns ``(bad, best_k, nv)``: the first
    non-finite weight (−1 if none; then nothing else is done), the index of the kept evaluated
    point in ``points``/``history`` (the best, or the last with ``use_last``) and the number of
    its hull vertices; ``xi_out`` receives the final iterate ξ_{K+1}.
    """
    C = v.shape[0]
    N, U, bad = aggregate(w, v0_scaled, inv_delta, C, chunk, k_out)
    if bad >= 0:
        return bad, -1, 0
    cum, _ = prefix_sums(N, U, C)
    best_k, _, _, _, r = fista(xi0, cum, iterations, inv_zeta, sort_xi, ln_c_lo, ln_c_hi, points, history,
                               use_last, xi_out)
    if best_k < 0:
        return -1, -1, 0
    slope_table(points[best_k], r, r.shape[0], v, table)
    gather_scaled(table, k_out, scale, out)
    return -1, best_k, r.shape[0]


# ----------------------------------------------------------------------------- adjacent relaxation


@njit(cache=True, nogil=True)
def adjacent_pass(w, v, delta, k_out):  # pragma: no cover - compiled
    """The O(n) pass of the adjacent-bucket relaxation (``regularizer.adjacent_relaxation``).

    Each weight, clamped to [v_0, v_{C−1}], lies in interval k = min(trunc((w − v_0)/Δ), C − 2) at
    t = (w − v_k)/Δ and puts 1 − t on bucket k and t on bucket k + 1. Returns ``(c, bad)``: the soft
    histogram c (length C) — the two masses accumulated separately in index order and then added,
    as ``np.bincount(k, 1 − t) + np.bincount(k + 1, t)`` does — and the first NaN/inf weight (−1
    if none). ``k_out`` receives every weight's k, or C − 1 for a weight outside [v_0, v_{C−1}]
    (where the clamp makes ∂F/∂w = 0): a slope table with a zero in entry C − 1 then gives the
    direction of every weight with one :func:`gather_scaled`.
    """
    n = w.shape[0]
    C = v.shape[0]
    lo = v[0]
    hi = v[C - 1]
    kmax = C - 2
    ok = True
    for i in range(n):  # pass 1, free of scatter stores so that it vectorizes
        x = np.float64(w[i])
        ok &= (x - x) == 0.0
        k = min(int((min(max(x, lo), hi) - lo) / delta), kmax)
        k_out[i] = C - 1 if (x < lo or x > hi) else k
    if not ok:
        for i in range(n):
            if not math.isfinite(w[i]):
                return np.zeros(0), i
    left = np.zeros(C)
    right = np.zeros(C)
    for i in range(n):  # pass 2: the two scatter-adds (the clamped interval, recomputed)
        wc = min(max(np.float64(w[i]), lo), hi)
        k = min(int((wc - lo) / delta), kmax)
        t = (wc - v[k]) / delta
        left[k] += 1.0 - t
        right[k + 1] += t
    return left + right, -1


# ----------------------------------------------------------------------------- reference rules
# The dual solve exactly as the reference implementation runs it during training (public
# repository cardiaa/METaQ, commit ebd4355, the thesis-era code): ``utils/knapsack.py``
# (breakpoints, bracketing, multipliers) and ``utils/optimization.py`` (FISTA). The readable
# formulation and the line-by-line citations are in :mod:`metaq_utils.core.reference`; the NumPy
# transcription that these kernels are tested against is in ``tests/test_reference.py``.
# ξ, t, the supergradient and the multipliers are float32, as in the reference.


@njit(cache=True, nogil=True)
def reference_pass(w, v, k_out):  # pragma: no cover - compiled
    """The O(n) pass of the reference rules on the left-edge grid ``v`` (float64 copy of float32).

    ``k_out[i]``: the interval k ∈ [0, C − 2] with v_k < w_i ≤ v_{k+1} (k = 0 for w_i = v_0), which
    is the bracketing rule of ``knapsack.py`` 38–53 (``searchsorted`` left, clamped); C − 1 for
    w_i > v_{C−1} and C for w_i < v_0 (``knapsack.py`` 42–43, 55–61). Returns ``(N, S, bad)``:
    N (length C + 1) counts the weights of each code, S (length C − 1) sums w_i − v_k over the
    weights of interval k (float64), ``bad`` is the first NaN/inf weight (−1 if none).
    """
    n = w.shape[0]
    C = v.shape[0]
    lo = v[0]
    hi = v[C - 1]
    inv = (C - 1) / (hi - lo)
    ok = True
    for i in range(n):
        x = np.float64(w[i])
        ok &= (x - x) == 0.0
    if not ok:
        for i in range(n):
            if not math.isfinite(w[i]):
                return np.zeros(0), np.zeros(0), i
    N = np.zeros(C + 1)
    S = np.zeros(C - 1)
    for i in range(n):
        x = np.float64(w[i])
        if x > hi:
            k = C - 1
        elif x < lo:
            k = C
        else:
            k = min(max(int((x - lo) * inv), 0), C - 2)
            while k < C - 2 and x > v[k + 1]:
                k += 1
            while k > 0 and x <= v[k]:
                k -= 1
            S[k] += x - v[k]
        k_out[i] = k
        N[k] += 1.0
    return N, S, -1


@njit(cache=True, nogil=True)
def reference_breakpoints(xi, v32, bp):  # pragma: no cover - compiled
    """The breakpoints of ``knapsack.py`` 18–32: from b = 0, the next breakpoint is the *first*
    index of the minimum chord slope (ξ_j − ξ_b)/(v_j − v_b), j > b (``torch.argmin``: equal slopes
    go to the first index, so collinear points — all points of a flat ξ — are kept). float32
    arithmetic. Fills bp[0..nb−1] (ascending, bp[0] = 0, bp[nb−1] = C − 1) and returns nb."""
    C = xi.shape[0]
    bp[0] = 0
    nb = 1
    b = 0
    while True:
        best = b + 1
        best_s = np.float32(np.inf)
        first = True
        xb = xi[b]
        vb = v32[b]
        for j in range(b + 1, C):
            s = np.float32(xi[j] - xb) / np.float32(v32[j] - vb)
            if first or s < best_s:
                best_s = s
                best = j
                first = False
        b = best
        if b != C - 1:
            bp[nb] = b
            nb += 1
        if b + 1 > C - 1:
            break
    bp[nb] = C - 1
    return nb + 1


@njit(cache=True, nogil=True)
def reference_evaluate(xi, v32, v, N, S, c_hi, bp, g, table, xm):  # pragma: no cover - compiled
    """One call of ``knapsack_specialized`` plus the c-part of ``optimization.py`` 31–45, from the
    aggregates of :func:`reference_pass`, in O(C · breakpoints).

    Fills ``g`` (float32: Σ_i x*_i − c*, line 39), ``table`` (the multiplier of every code:
    entries 0..C − 2 the chord slope (ξ_r − ξ_l)/(v_r − v_l) of the segment holding interval k,
    line 81; entry C − 1 ξ_{C−1}/v_{C−1}, entry C zero, lines 82–86; float32 values) and ``xm``
    (Σ_i x*_i). Returns ``(φ, nb)``: the dual value φ = Σ c* log2 c* − Σ ξ c* + Σ ξ·Σx* (lines
    42–45, computed in float64) and the number of breakpoints.
    """
    C = xi.shape[0]
    nb = reference_breakpoints(xi, v32, bp)
    for b in range(C):
        xm[b] = 0.0
    for s in range(nb - 1):
        a = bp[s]
        b = bp[s + 1]
        width = v[b] - v[a]
        n_seg = 0.0
        d_seg = 0.0
        for k in range(a, b):
            n_seg += N[k]
            d_seg += S[k] + N[k] * (v[k] - v[a])
        to_b = d_seg / width            # Σ_i (w_i − v_a)/(v_b − v_a): the mass sent to v_b
        xm[a] += n_seg - to_b
        xm[b] += to_b
        slope = np.float32(xi[b] - xi[a]) / np.float32(v32[b] - v32[a])
        for k in range(a, b):
            table[k] = slope
    xm[C - 1] += N[C - 1]               # w > v_{C−1}: one-hot on the last bucket
    xm[0] += N[C]                       # w < v_0: one-hot on the first bucket
    table[C - 1] = np.float32(xi[C - 1]) / v32[C - 1]
    table[C] = 0.0
    ln2 = np.float32(LN2)
    one = np.float32(1.0)
    phi = 0.0
    for b in range(C):
        c = np.float32(math.exp(np.float32(ln2 * xi[b]) - one))   # line 35
        if c > c_hi:                                              # line 36: clamp to [0, n]
            c = np.float32(c_hi)
        g[b] = np.float32(xm[b]) - c                              # line 39
        cd = np.float64(c)
        if cd > 0.0:
            phi += cd * math.log(cd) * INV_LN2
        phi += (xm[b] - cd) * np.float64(xi[b])
    return phi, nb


@njit(cache=True, nogil=True)
def reference_fista(xi, v32, v, N, S, c_hi, iterations, inv_zeta, sort_xi, bp, g, table, xm,
                    xi_prev, history):  # pragma: no cover - compiled
    """``FISTA`` of ``optimization.py`` 5–62 on float32 ξ (updated in place): the oracle at the
    current iterate ξ_k (line 31), t_prev = 1 (27), y = ξ + ((t_prev − 1)/t)(ξ − ξ_prev) (48–49),
    ξ ← y + g/ζ (52), ξ_prev ← ξ (55), ξ re-sorted (59–60). On return ξ is the *last* iterate and
    ``table``/``g``/``xm`` come from the last oracle evaluation (line 62); ``history[k]`` is φ at
    the k-th evaluated point. Returns ``(φ_last, nb_last)``."""
    C = xi.shape[0]
    for b in range(C):
        xi_prev[b] = xi[b]
    one = np.float32(1.0)
    four = np.float32(4.0)
    two = np.float32(2.0)
    t_prev = one
    phi = 0.0
    nb = 0
    for it in range(iterations):
        phi, nb = reference_evaluate(xi, v32, v, N, S, c_hi, bp, g, table, xm)
        history[it] = phi
        t = (one + np.float32(math.sqrt(np.float32(one + four * t_prev * t_prev)))) / two
        coef = (t_prev - one) / t
        for b in range(C):
            y = xi[b] + coef * (xi[b] - xi_prev[b])
            xi_prev[b] = xi[b]
            xi[b] = y + inv_zeta * g[b]
        if sort_xi:
            xi.sort()
        t_prev = t
    return phi, nb


@njit(cache=True, nogil=True)
def reference_step(w, v32, v, k_out, xi, c_hi, iterations, inv_zeta, sort_xi, scale, out, table,
                   bp, g, xm, xi_prev, history):  # pragma: no cover - compiled
    """One training step under the reference rules, fused: :func:`reference_pass`,
    :func:`reference_fista`, then ``out = scale·β`` in ``out``'s dtype (``trainer.py`` 86).
    Returns ``(bad, φ_last, nb_last)``; ``bad`` ≥ 0 names a NaN/inf weight (nothing else done)."""
    N, S, bad = reference_pass(w, v, k_out)
    if bad >= 0:
        return bad, 0.0, 0
    phi, nb = reference_fista(xi, v32, v, N, S, c_hi, iterations, inv_zeta, sort_xi, bp, g, table,
                              xm, xi_prev, history)
    gather_scaled(table, k_out, scale, out)
    return -1, phi, nb
