"""METaQ's 2025 form as its reference code runs it: zero bucket, pruning knapsack, δ.

Reference: public repository ``cardiaa/METaQ``, commit ``1b7583f`` (2025-06-27, "... Loading
Results ... [Dantzig]"); the log ``Tests-LeNet5-06-07-2025/output-Test-2025-06-27-Dantzig.log``
is at commit ``cbdbffc``. Every rule cites ``file line`` at ``1b7583f``; nothing is copied.
NumPy + numba only (no torch); the hook in :mod:`metaq_utils.nn.regularizer`
(``variant="reference_2025"``) holds a :class:`Reference2025Solver`.

Rules:

1. **Grid and zero bucket** (``train.py`` 59–66; ``utils/trainer.py`` 27–28): C = 64, r = 1.1,
   ``bucket_zero = round((C − 1)/2)`` (Python's round: 32 for C = 64; "must range from 0 to
   C − 2", line 64), ``w0 = round(r − (bucket_zero + ½)·2r(1 − 1/C)/(C − 1), 3)`` (= −0.017), and
   v the float32 left edges ``linspace(w0 − r, w0 + r − 2r/C, C)`` (:func:`reference_grid`). The
   rule puts the middle of bucket ``bucket_zero`` — [v_32, v_33] = [−0.017, 0.017375] — on
   zero (up to the 3-decimal rounding of w0): its "center" value 1.875e−4 is below the sparsity
   threshold, so every weight quantized to it counts as a zero.
2. **δ shifts ξ** (``utils/knapsack.py`` 111, 277, 283): the pruning knapsack runs on
   ξ' = ξ − δ (float32). Its objective δ + Σ_j x_j ξ'_j = δ(1 − Σ_j x_j) + Σ_j x_j ξ_j prices the
   mass 1 − Σ_j x_j left at zero (the pruned part) at δ: δ is the ξ of an implicit zero point.
   The breakpoints (lines 115–127, as at ``ebd4355``: first index of the minimum float32 chord
   slope) are computed on ξ'.
3. **Pruning knapsack** ``knapsack_specialized_pruning`` (``knapsack.py`` 92–285), per weight:
   w < v_0 → one-hot on bucket 0, w > v_{C−1} → one-hot on C − 1 (lines 161–201; the
   ``0 ≤ w/v ≤ 1`` branches cannot occur when v_0 < 0 < v_{C−1}, which we require). For
   v_0 ≤ w ≤ v_{C−1} two candidates (206–242): (a) "first method": the first breakpoint i0 in the
   order ``b_vector`` (v < 0 by ξ'/v descending, then v ≥ 0 by ξ'/v ascending, 130–135) with
   0 ≤ w/v_{i0} ≤ 1, x_{i0} = w/v_{i0} (the rest pruned), cost θ1·ξ'_{i0}; (b) "second method":
   the breakpoints l < r around w (``searchsorted`` left, clamped to [1, nb − 1]),
   θ2 = (w − v_r)/(v_l − v_r + 1e−8), cost θ2 ξ'_l + (1 − θ2) ξ'_r. (a) wins iff its cost is
   strictly lower (240).
4. **Multiplier** (``knapsack.py`` 273–280) and **gradient** (``trainer.py`` 85): the knapsack's
   λ is −(ξ'_r − ξ'_l)/(v_r − v_l) for (b), −(ξ'_i + δ)/v_i for a one-hot/first-method weight at
   i; the trainer adds (1 − α)λ_reg·(−λ). We call β := −λ (what is multiplied by λ_reg(1 − α)
   and added): β = chord slope, or (ξ_i)/v_i computed as (ξ'_i + δ)/v_i in float32. So the net
   sign equals the thesis sign (+β) — the ``−`` in front of β at line 85 cancels the ``−`` of
   lines 276–277; there is no ``head_sign`` choice here.
5. **FISTA** (``utils/optimization.py`` 22–82): ``max_iterations`` = 15 (``train.py`` 81),
   oracle at the current iterate (47), c* = exp(ln2·ξ − 1) clamped to **[lower_c, upper_c] =
   [0.01, n]** (54–55; ``train.py`` 72–73 — ``ebd4355`` clamps at 0), g = Σ_i x*_i − c* (58),
   t_prev = 1 at every call (42), y = ξ + ((t_prev − 1)/t)(ξ − ξ_prev), ξ ← y + g/ζ with
   ζ = ``subgradient_step`` = 1e5 (``train.py`` 63; lines 67–71), ξ sorted after every step (79),
   last iterate and the last λ returned (82). Every solve warm-starts from the previous ξ
   (``trainer.py`` 69). float32 like the reference's tensors.
6. **Initialisation** (``trainer.py`` 29–32): weights uniform on [w0 − r, w0 + r]
   (``weight_utils.py`` 15–16), ξ sorted uniform in [min_xi, max_xi] = [0, 1].
7. **Training step** (``trainer.py`` 42–90): per batch *two* Adam steps — one on the plain loss
   (44–51), then one on loss + (1 − α)λ_reg·β (53–90), the ξ solve on the weights after the first
   step; Adam lr 7e−4 with coupled ``weight_decay = λ_reg·α`` (22; λ_reg = 0.0015, α = 0.533).
8. **"center" quantization** (``trainer.py`` 99–102, ``quantize_and_compress.py`` 59–66): bucket
   index ``bucketize(w, v, right=False) − 1`` clamped to [0, C − 1]; value the bucket centre
   (v_k + v_{k+1})/2, the last bucket's value v_{C−1} itself (:func:`quantize_center`).
9. **Size measure** (``trainer.py`` 113–130): the float32 list (−0 → 0), mask |q| > 1e−3
   (``sparsity_threshold``, ``train.py`` 87), zstd-22 of the MSB-first packed mask
   (``pack_bitmask``, ``quantize_and_compress.py`` 279–288) plus zstd-22 of the packed float32
   non-zeros; ratio = that / 4n (:func:`reference_size`).
10. **Post-training rule** ``BestQuantization`` (``quantize_and_compress.py`` 170–277): after an
    epoch whose accuracy beats the best so far (≥ 98.6 at first), re-quantize at every
    C' ∈ [10, 1000] on the same [w0 − r, w0 + r], keep those within 0.2 points of the epoch's
    accuracy, report the 20 of lowest entropy. It evaluates on the *test* loader (our
    reproduction chooses on validation).

Code vs log: the log's header says ``model=LeNet-5 (rotated)`` (the code prints ``LeNet-5``,
``train.py`` 57, with RandomRotation(10) + translate 0.1 augmentation, lines 12–16), and its
first block has δ = 10.465; the quoted 99.03 % / 2.01 % / 94.62 % comes from the δ = 10.53
block (epoch 70, C' = 66 by rule 10, log line 3947–3950). ``zeta = 50000``/``l`` of the log are
the proximal bundle method's and unused with FISTA (``trainer.py`` 64–66).

Our fast path: per step the weights are grouped once by grid interval, exactness (w = v_k) and
sign (a counting sort); within a group the candidates i0, l, r are fixed and the two costs are
affine in w, so if the float32 comparison gives the same choice at the group's smallest and
largest weight it holds for the whole group (counts and sums then give Σ_i x*_i), otherwise each
weight of the group is decided by the same comparison. Σ_i x*_i is summed in float64 (the
reference sums float32). Weights are cast to float32 (the reference's dtype).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from ._kernels import reference_breakpoints
from .dual import NonFiniteWeightError
from .reference import reference_grid, sorted_uniform_xi

__all__ = ["grid_2025", "Grid2025", "Reference2025Solver", "quantize_center", "reference_size",
           "reference_entropy", "KIND_BELOW", "KIND_ABOVE", "KIND_PRUNE", "KIND_SPLIT", "LOGGED"]

# what the knapsack did with a weight (its last evaluation)
KIND_BELOW, KIND_ABOVE, KIND_PRUNE, KIND_SPLIT = 0, 1, 2, 3

#: the logged configuration (train.py 59–87 at 1b7583f; δ of the block quoted by issue 20)
LOGGED = {"C": 64, "r": 1.1, "lr": 7e-4, "lam": 0.0015, "alpha": 0.533, "zeta": 1e5, "iterations": 15,
          "c_lo": 1e-2, "min_xi": 0.0, "max_xi": 1.0, "delta": 10.53, "sparsity_threshold": 1e-3,
          "batch_size": 64}


def _check_int(name: str, x, lo: int) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {x!r}")
    return int(x)


@dataclass(frozen=True)
class Grid2025:
    C: int
    r: float
    bucket_zero: int
    w0: float
    v: np.ndarray   # float32 left edges

    @property
    def centers(self) -> np.ndarray:
        """The "center" values: (v_k + v_{k+1})/2 for k < C − 1, v_{C−1} for the last (float32)."""
        v = self.v
        return np.concatenate([(v[:-1] + v[1:]) / np.float32(2), v[-1:]]).astype(np.float32)


def grid_2025(C: int = 64, r: float = 1.1, bucket_zero: int | None = None, w0: float | None = None) -> Grid2025:
    """The 2025 grid (``train.py`` 64–66, ``trainer.py`` 27–28). ``bucket_zero`` None: round((C−1)/2);
    ``w0`` None: the rule that centres that bucket on zero (rounded to 3 decimals); a given w0
    overrides it (the zero-bucket-off ablation). Raises ValueError on C < 2, r ≤ 0, non-finite
    values, bucket_zero outside [0, C − 2], or a grid without v_0 < 0 < v_{C−1}."""
    C = _check_int("C", C, 2)
    if not (isinstance(r, (int, float, np.floating)) and math.isfinite(r)) or not r > 0:
        raise ValueError(f"r must be finite and > 0, got {r!r}")
    if bucket_zero is None:
        bucket_zero = round((C - 1) / 2)
    bucket_zero = _check_int("bucket_zero", bucket_zero, 0)
    if bucket_zero > C - 2:
        raise ValueError(f"bucket_zero must be in [0, C − 2] = [0, {C - 2}], got {bucket_zero}")
    if w0 is None:
        w0 = round(r - (bucket_zero + 0.5) * 2 * r * (1 - 1 / C) / (C - 1), 3)
    if not math.isfinite(w0):
        raise ValueError(f"w0 must be finite, got {w0}")
    v = reference_grid(float(w0), float(r), C)
    if not (v[0] < 0 < v[-1]):
        raise ValueError(f"the pruning knapsack needs v_0 < 0 < v_(C-1), got [{v[0]}, {v[-1]}] (w0={w0}, r={r})")
    return Grid2025(C, float(r), bucket_zero, float(w0), v)


def quantize_center(w: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """"center" quantization (``quantize_and_compress.py`` 59–66): returns (bucket index, float32 value)."""
    v = np.asarray(v, dtype=np.float32)
    w = np.asarray(w, dtype=np.float32)
    if not np.isfinite(w).all():
        raise NonFiniteWeightError(int(np.flatnonzero(~np.isfinite(w))[0]))
    k = np.clip(np.searchsorted(v, w, side="left") - 1, 0, v.shape[0] - 1)
    centers = np.concatenate([(v[:-1] + v[1:]) / np.float32(2), v[-1:]]).astype(np.float32)
    return k, centers[k]


def reference_entropy(q: np.ndarray) -> int:
    """``round(compute_entropy(list)) + 1`` (``trainer.py`` 114; ``quantize_and_compress.py`` 13–28): n·H
    of the distinct values, in bits."""
    q = np.asarray(q, dtype=np.float32) + np.float32(0.0)   # −0 → +0 (line 113)
    _, counts = np.unique(q, return_counts=True)
    p = counts / q.size
    return int(round(float(-(counts * np.log2(p)).sum()))) + 1


def reference_size(q: np.ndarray, sparsity_threshold: float = 1e-3, level: int = 22) -> dict:
    """The reference's own size measure (``trainer.py`` 113–130): zstd-22 of the float32 list, and
    zstd-22 of the packed bitmask |q| > threshold plus zstd-22 of the packed float32 non-zeros.
    Returns bytes, bits, ratios (÷ 4n) and the sparsity."""
    import zstandard as zstd

    q = np.asarray(q, dtype=np.float32) + np.float32(0.0)
    if q.ndim != 1 or q.size == 0 or not np.isfinite(q).all():
        raise ValueError("q must be a non-empty 1-D array of finite values")
    if not (sparsity_threshold >= 0 and math.isfinite(sparsity_threshold)):
        raise ValueError(f"sparsity_threshold must be finite and >= 0, got {sparsity_threshold}")
    cctx = zstd.ZstdCompressor(level=level)
    raw = q.astype("<f4").tobytes()
    mask = np.abs(q) > sparsity_threshold
    bitmask = np.packbits(mask.astype(np.uint8), bitorder="big").tobytes()   # pack_bitmask, MSB first
    nz = q[mask].astype("<f4").tobytes()
    m_b, v_b = len(cctx.compress(bitmask)), len(cctx.compress(nz))
    z_b = len(cctx.compress(raw))
    n4 = 4 * q.size
    return {"zstd_bytes": z_b, "zstd_ratio": z_b / n4, "sparse_mask_bytes": m_b, "sparse_values_bytes": v_b,
            "sparse_bytes": m_b + v_b, "sparse_bits": 8 * (m_b + v_b), "sparse_ratio": (m_b + v_b) / n4,
            "sparsity": float(1.0 - mask.mean())}


# ---------------------------------------------------------------------------------------------
# the compiled solve
@njit(cache=True, nogil=True)
def _group(w, v32, gw, gi, seg_a, seg_cnt, seg_sum, seg_min, seg_max):  # pragma: no cover - compiled
    """Group the weights by segment, a counting sort in O(n): segment id (2·kpos + exact)·3 + sign + 1
    for v_0 ≤ w ≤ v_{C−1} (kpos = first j with v_j ≥ w, exact: w = v_kpos), 6C for w < v_0, 6C + 1
    for w > v_{C−1}. Fills gw/gi (weights and their indices, grouped), seg_a (starts, 6C + 3
    entries), counts, float64 sums, min and max per segment. Returns −1, or the index of a NaN/inf."""
    n = w.shape[0]
    C = v32.shape[0]
    S = 6 * C + 2
    sid = np.empty(n, dtype=np.int32)
    v0 = np.float64(v32[0])
    inv_step = (C - 1) / (np.float64(v32[C - 1]) - v0)
    vlo, vhi = v32[0], v32[C - 1]
    for q in range(S):
        seg_cnt[q] = 0
        seg_sum[q] = 0.0
        seg_min[q] = np.inf
        seg_max[q] = -np.inf
    for i in range(n):           # pass 1: the segment of every weight (no stores into the segments)
        x = w[i]
        if not (x - x) == 0.0:
            return i
        if x < vlo:
            q = 6 * C
        elif x > vhi:
            q = 6 * C + 1
        else:
            # first j with v_j ≥ x: an arithmetic guess on the (near-)uniform grid, then corrected
            lo = int(math.ceil((np.float64(x) - v0) * inv_step))
            lo = min(max(lo, 0), C - 1)
            while lo > 0 and v32[lo - 1] >= x:
                lo -= 1
            while v32[lo] < x:
                lo += 1
            # branch-free (the sign of the zero bucket's weights is a coin flip to a branch predictor)
            e = np.int64(v32[lo] == x)
            sg = np.int64(x > 0) - np.int64(x < 0) + 1
            q = (2 * lo + e) * 3 + sg
        sid[i] = q
    for i in range(n):           # pass 2: counts, float64 sums (in index order, as before), bounds
        q = sid[i]
        xd = np.float64(w[i])
        seg_cnt[q] += 1
        seg_sum[q] += xd
        seg_min[q] = min(seg_min[q], xd)    # ±0 may differ from a branchy form; every use of the
        seg_max[q] = max(seg_max[q], xd)    # bounds (_first_better) is blind to the sign of zero
    seg_a[0] = 0
    for q in range(S):
        seg_a[q + 1] = seg_a[q] + seg_cnt[q]
    fill = seg_a[:S].copy()
    for i in range(n):
        q = sid[i]
        gw[fill[q]] = w[i]
        gi[fill[q]] = i
        fill[q] += 1
    return -1


@njit(cache=True, nogil=True)
def _first_better(x, vi0, xi0, vr, den, xl, xr):  # pragma: no cover - compiled
    """knapsack.py 219–240 for one weight x (float32): True iff the first method's cost is lower."""
    one = np.float32(1.0)
    th1 = np.float32(x / vi0)
    o1 = np.float32(th1 * xi0)
    if th1 < 0:
        o1 = np.float32(np.inf)
    th2 = np.float32(np.float32(x - vr) / den)
    o2 = np.float32(np.float32(th2 * xl) + np.float32(np.float32(one - th2) * xr))
    return o1 < o2


@njit(cache=True, nogil=True)
def _evaluate(xs, v32, gw, seg_a, seg_cnt, seg_sum, seg_min, seg_max, bp, seg_i0, seg_l, seg_r, seg_mode,
              xm):  # pragma: no cover - compiled
    """One knapsack_specialized_pruning on ξ' = xs: fills xm (Σ_i x*_i, float64) and, per segment,
    i0, l, r and the mode (0: all second method, 1: all first, 2: mixed). Returns nb."""
    C = v32.shape[0]
    eps = np.float32(1e-8)
    nb = reference_breakpoints(xs, v32, bp)
    isbp = np.zeros(C, dtype=np.bool_)
    for j in range(C):
        xm[j] = 0.0
    for t in range(nb):
        isbp[bp[t]] = True
    # b_vector (knapsack.py 130–135): v < 0 by ξ'/v descending, then v ≥ 0 by ξ'/v ascending
    ratio = np.empty(C, dtype=np.float32)
    nneg = 0
    for j in range(C):
        ratio[j] = xs[j] / v32[j]
        if v32[j] < 0:
            nneg += 1
    neg = np.empty(nneg, dtype=np.int64)
    pos = np.empty(C - nneg, dtype=np.int64)
    a = 0
    b = 0
    for j in range(C):
        if v32[j] < 0:
            neg[a] = j
            a += 1
        else:
            pos[b] = j
            b += 1
    on = np.argsort(-ratio[neg])
    op = np.argsort(ratio[pos])
    rank = np.empty(C, dtype=np.int64)
    for t in range(nneg):
        rank[neg[on[t]]] = t
    for t in range(C - nneg):
        rank[pos[op[t]]] = nneg + t
    # i0 for w > 0 with kpos = k: the breakpoint j ≥ k, v_j > 0, of least rank (suffix min);
    # for w < 0 with kneg = k: the breakpoint j ≤ k, v_j < 0, of least rank (prefix min)
    i0p = np.empty(C, dtype=np.int64)
    i0n = np.empty(C, dtype=np.int64)
    best = -1
    for k in range(C - 1, -1, -1):
        if isbp[k] and v32[k] > 0 and (best < 0 or rank[k] < rank[best]):
            best = k
        i0p[k] = best
    best = -1
    for k in range(C):
        if isbp[k] and v32[k] < 0 and (best < 0 or rank[k] < rank[best]):
            best = k
        i0n[k] = best
    # position (in bp) of the first breakpoint at or after each grid index: the second method's r
    nxt = np.empty(C, dtype=np.int64)
    cur = nb - 1
    t = nb - 1
    for k in range(C - 1, -1, -1):
        if isbp[k]:
            while bp[t] != k:
                t -= 1
            cur = t
        nxt[k] = cur
    for q in range(6 * C):
        m = seg_cnt[q]
        if m == 0:
            continue
        kp = q // 6
        e = (q // 3) % 2
        sg = q % 3 - 1
        kn = kp if e == 1 else kp - 1
        if sg > 0:
            i0 = i0p[kp]
        elif sg < 0:
            i0 = i0n[kn]
        else:
            i0 = i0n[C - 1]     # w = 0: every breakpoint is valid; the negatives come first in b_vector
        ir = nxt[kp]
        if ir < 1:
            ir = 1
        r = bp[ir]
        l = bp[ir - 1]
        seg_i0[q], seg_l[q], seg_r[q] = i0, l, r
        vi0, xi0 = v32[i0], xs[i0]
        vr, vl, xl, xr = v32[r], v32[l], xs[l], xs[r]
        den = np.float32(np.float32(vl - vr) + eps)
        f_lo = _first_better(np.float32(seg_min[q]), vi0, xi0, vr, den, xl, xr)
        f_hi = _first_better(np.float32(seg_max[q]), vi0, xi0, vr, den, xl, xr)
        if f_lo == f_hi:   # affine costs: the same choice over the segment
            seg_mode[q] = 1 if f_lo else 0
            m1 = m if f_lo else 0
            S1 = seg_sum[q] if f_lo else 0.0
        else:              # the crossing is inside: decide each weight
            seg_mode[q] = 2
            m1 = 0
            S1 = 0.0
            for p in range(seg_a[q], seg_a[q + 1]):
                if _first_better(gw[p], vi0, xi0, vr, den, xl, xr):
                    m1 += 1
                    S1 += np.float64(gw[p])
        # Σ x*: the first method puts w/v_i0 on i0; the second θ2 on l, 1 − θ2 on r
        if m1 > 0:
            xm[i0] += S1 / np.float64(vi0)
        m2 = m - m1
        if m2 > 0:
            S2 = seg_sum[q] - S1
            t2 = (S2 - m2 * np.float64(vr)) / np.float64(den)
            xm[l] += t2
            xm[r] += m2 - t2
    xm[0] += seg_cnt[6 * C]
    xm[C - 1] += seg_cnt[6 * C + 1]
    return nb


@njit(cache=True, nogil=True)
def solve_step(w, v32, xi, delta, c_lo, c_hi, iterations, inv_zeta, scale, out, kind, xm, history,
               gw, gi, beta):  # pragma: no cover - compiled
    """One warm-started solve of the 2025 reference on w (float32), fused: FISTA (ξ updated in place,
    float32), then out[i] = scale·β_i, beta[i] = β_i (float32) and kind[i] from the last evaluation.
    ``gw``/``gi``: grouping buffers (length n). Returns (bad, nb, pruned mass)."""
    C = v32.shape[0]
    S = 6 * C + 2
    seg_a = np.empty(S + 1, dtype=np.int64)
    seg_cnt = np.empty(S, dtype=np.int64)
    seg_sum = np.empty(S)
    seg_min = np.empty(S)
    seg_max = np.empty(S)
    bad = _group(w, v32, gw, gi, seg_a, seg_cnt, seg_sum, seg_min, seg_max)
    if bad >= 0:
        return bad, 0, 0.0
    bp = np.empty(C, dtype=np.int64)
    seg_i0 = np.zeros(S, dtype=np.int64)
    seg_l = np.zeros(S, dtype=np.int64)
    seg_r = np.zeros(S, dtype=np.int64)
    seg_mode = np.zeros(S, dtype=np.int64)
    xs = np.empty(C, dtype=np.float32)
    g = np.empty(C, dtype=np.float32)
    xi_prev = xi.copy()
    one = np.float32(1.0)
    two = np.float32(2.0)
    four = np.float32(4.0)
    ln2 = np.float32(math.log(2.0))
    lo32 = np.float32(c_lo)
    hi32 = np.float32(c_hi)
    t_prev = one
    nb = 0
    for it in range(iterations):
        for j in range(C):
            xs[j] = xi[j] - delta                                      # knapsack.py 111
        nb = _evaluate(xs, v32, gw, seg_a, seg_cnt, seg_sum, seg_min, seg_max, bp, seg_i0, seg_l, seg_r,
                       seg_mode, xm)
        phi = 0.0
        for j in range(C):
            c = np.float32(math.exp(np.float32(np.float32(ln2 * xi[j]) - one)))   # optimization.py 54
            c = min(max(c, lo32), hi32)                                           # 55
            g[j] = np.float32(xm[j]) - c                                          # 58
            cd = np.float64(c)
            phi += cd * math.log(cd) / math.log(2.0) + (xm[j] - cd) * np.float64(xi[j])   # 61–64
        history[it] = phi
        t = (one + np.float32(math.sqrt(np.float32(one + four * t_prev * t_prev)))) / two   # 67
        coef = (t_prev - one) / t
        for j in range(C):
            y = xi[j] + coef * (xi[j] - xi_prev[j])                    # 68
            xi_prev[j] = xi[j]                                         # 74
            xi[j] = y + inv_zeta * g[j]                                # 71, 75
        xi.sort()                                                      # 79
        t_prev = t
    # β = −λ of the last evaluation (knapsack.py 273–280; trainer.py 85), at the ξ' of that evaluation
    eps = np.float32(1e-8)
    sc = scale          # in out's dtype (the caller casts it): (1 − α)λ·β in float32 (trainer.py 85)
    pruned = 0.0
    b0 = np.float32(np.float32(xs[0] + delta) / v32[0])
    bC = np.float32(np.float32(xs[C - 1] + delta) / v32[C - 1])
    for p in range(seg_a[6 * C], seg_a[6 * C + 1]):
        out[gi[p]] = b0 * sc
        beta[gi[p]] = b0
        kind[gi[p]] = 0
    for p in range(seg_a[6 * C + 1], seg_a[6 * C + 2]):
        out[gi[p]] = bC * sc
        beta[gi[p]] = bC
        kind[gi[p]] = 1
    for q in range(6 * C):
        if seg_cnt[q] == 0:
            continue
        i0, l, r = seg_i0[q], seg_l[q], seg_r[q]
        bf = np.float32(np.float32(xs[i0] + delta) / v32[i0])
        bs = np.float32(np.float32(xs[r] - xs[l]) / np.float32(v32[r] - v32[l]))
        den = np.float32(np.float32(v32[l] - v32[r]) + eps)
        mode = seg_mode[q]
        for p in range(seg_a[q], seg_a[q + 1]):
            if mode == 2:
                first = _first_better(gw[p], v32[i0], xs[i0], v32[r], den, xs[l], xs[r])
            else:
                first = mode == 1
            if first:
                out[gi[p]] = bf * sc
                beta[gi[p]] = bf
                kind[gi[p]] = 2
                pruned += 1.0 - np.float64(np.float32(gw[p] / v32[i0]))
            else:
                out[gi[p]] = bs * sc
                beta[gi[p]] = bs
                kind[gi[p]] = 3
    return -1, nb, pruned


class Reference2025Solver:
    """The warm-started 2025 solve (rules 2–5): holds ξ (float32), offers :meth:`step`.

    ``v``: the float32 grid (:func:`grid_2025`); ``n`` the number of weights (upper_c); ``delta`` the
    shift of rule 2 (``pruning=False`` is not the reference's knapsack: use variant 'reference').
    """

    def __init__(self, v: np.ndarray, n: int, delta: float, *, iterations: int = 15, zeta: float = 1e5,
                 c_lo: float = 1e-2, xi0: np.ndarray | None = None, seed: int = 0,
                 min_xi: float = 0.0, max_xi: float = 1.0) -> None:
        v32 = np.asarray(v, dtype=np.float32)
        if v32.ndim != 1 or v32.shape[0] < 2 or not np.isfinite(v32).all() or not (np.diff(v32) > 0).all():
            raise ValueError("v must be a finite, strictly increasing 1-D grid of >= 2 values")
        if not (v32[0] < 0 < v32[-1]):
            raise ValueError(f"the pruning knapsack needs v_0 < 0 < v_(C-1), got [{v32[0]}, {v32[-1]}]")
        n = _check_int("n", n, 1)
        iterations = _check_int("iterations", iterations, 1)
        if not (isinstance(delta, (int, float, np.floating)) and math.isfinite(delta)):
            raise ValueError(f"delta must be finite, got {delta!r}")
        if not (zeta > 0 and math.isfinite(zeta)):
            raise ValueError(f"zeta must be finite and > 0, got {zeta}")
        if not (0 < c_lo < n):
            raise ValueError(f"need 0 < c_lo < n, got c_lo={c_lo}, n={n}")
        self.C, self.n, self.v32 = v32.shape[0], n, v32
        self.delta = np.float32(delta)
        self.iterations, self.c_lo = iterations, float(c_lo)
        self.inv_zeta = np.float32(1.0 / zeta)      # `(1 / subgradient_step) * g`: float32
        if xi0 is None:
            xi0 = sorted_uniform_xi(self.C, min_xi, max_xi, seed)
        xi = np.asarray(xi0, dtype=np.float32)
        if xi.shape != (self.C,) or not np.isfinite(xi).all():
            raise ValueError(f"xi0 must be {self.C} finite values")
        self.xi = xi.copy()
        self.kind = np.zeros(n, dtype=np.uint8)
        self.xm = np.zeros(self.C)
        self.history = np.empty(iterations)
        self._gw = np.empty(n, dtype=np.float32)
        self._gi = np.empty(n, dtype=np.int64)
        self._beta = np.zeros(n, dtype=np.float32)
        self.last_phi: float | None = None
        self.last_nb = 0
        self.last_pruned_mass = 0.0

    def step(self, w: np.ndarray, scale: float, out: np.ndarray) -> float:
        """One warm-started solve on w; out (float32/64, length n) receives scale·β. Returns φ of the
        last evaluation. Raises :class:`NonFiniteWeightError`."""
        w = np.asarray(w)
        if w.ndim != 1 or w.shape[0] != self.n:
            raise ValueError(f"w must be a 1-D array of {self.n} weights, got shape {w.shape}")
        if out.shape != (self.n,) or out.dtype not in (np.float32, np.float64):
            raise ValueError(f"out must be a float32/float64 array of shape ({self.n},)")
        w32 = np.ascontiguousarray(w, dtype=np.float32)
        bad, nb, pruned = solve_step(w32, self.v32, self.xi, self.delta, self.c_lo, float(self.n),
                                     self.iterations, self.inv_zeta, out.dtype.type(scale), out, self.kind, self.xm,
                                     self.history, self._gw, self._gi, self._beta)
        if bad >= 0:
            raise NonFiniteWeightError(int(bad))
        self.last_phi, self.last_nb, self.last_pruned_mass = float(self.history[-1]), int(nb), float(pruned)
        return self.last_phi

    def solve(self, w: np.ndarray) -> np.ndarray:
        """One warm-started solve; returns β (float64 copy of the float32 values)."""
        beta = np.empty(self.n)
        self.step(w, 1.0, beta)
        return beta

    def beta(self) -> np.ndarray:
        """β of the last step (float64 copy of the float32 values)."""
        return self._beta.astype(np.float64)

    def kind_shares(self) -> dict[str, float]:
        """Shares of weights by what the last evaluation did: below v_0, above v_{C−1}, first method
        (partly pruned), second method (split between breakpoints); plus the pruned mass / n."""
        c = np.bincount(self.kind, minlength=4) / self.n
        return {"below": float(c[0]), "above": float(c[1]), "prune": float(c[2]), "split": float(c[3]),
                "pruned_mass": self.last_pruned_mass / self.n}

    def state(self) -> dict:
        return {"xi": self.xi.copy()}

    def load_state(self, state: dict) -> None:
        xi = np.asarray(state["xi"], dtype=np.float32)
        if xi.shape != (self.C,):
            raise ValueError(f"saved ξ has shape {xi.shape}, expected ({self.C},)")
        self.xi = xi.copy()


def zero_bucket_share(w: np.ndarray, grid: Grid2025) -> float:
    """Share of the weights whose "center" quantization lands in ``grid.bucket_zero``."""
    k, _ = quantize_center(w, grid.v)
    return float(np.mean(k == grid.bucket_zero))


__all__ += ["zero_bucket_share", "solve_step"]
