"""Lower-hull vertex ("breakpoint") counts and their Beta fits (the ComplexityAnalysis notebook,
spec §2.3).

Counts of (v_b, ξ_b) under named random models for ξ (:data:`BREAKPOINT_MODELS`,
:func:`breakpoint_counts`), Beta fits under two stated normalisations with the tail probability
computed in log space (:func:`fit_beta`, :func:`log10_beta_sf`), and the exact probability for the
random-walk model. NumPy / SciPy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from metaq_utils.core import dual
from metaq_utils.core.dual import LN2
from metaq_utils.core.grid import THESIS_GRID_R, THESIS_GRID_W0, Grid, thesis_grid
from metaq_utils.core.subproblem import lower_hull_breakpoints, lower_hull_chain, lower_hull_pava

__all__ = ["BREAKPOINT_MODELS", "sample_xi", "breakpoint_counts", "BETA_NORMALISATIONS", "BetaFit", "fit_beta",
           "log10_beta_sf", "log10_p_all_vertices_random_walk"]


BREAKPOINT_MODELS = {
    "iid_normal": "ξ_b i.i.d. N(0, 1)",
    "iid_uniform": "ξ_b i.i.d. Uniform(0, 1)",
    "log_histogram": "ξ_b = log2(max(h_b, 0.01)) + 1/ln 2 with h the bucket counts of n = 44,426 weights "
                     "~ N(μ, σ²), μ ~ U(−0.3, 0.1), σ ~ U(0.05, 0.5) (the ξ that makes c* equal the "
                     "histogram), plus i.i.d. N(0, 0.25²) noise",
    "random_walk": "ξ_b = ε_1 + … + ε_b, ε i.i.d. N(0, 1) (expected vertices 1 + Σ_{k<C} 1/k)",
    "fista_iterate": "ξ after 20 FISTA iterations (ζ = 9e4, from ξ = 0) on n = 5,000 weights "
                     "~ N(μ, σ²), μ ~ U(−0.3, 0.1), σ ~ U(0.05, 0.5)",
}


def sample_xi(model: str, C: int, rng: np.random.Generator, w0: float = THESIS_GRID_W0,
              r: float = THESIS_GRID_R) -> np.ndarray:
    """One ξ ∈ R^C under a named random model (:data:`BREAKPOINT_MODELS`), on Grid(w0, r, C)."""
    if model == "iid_normal":
        return rng.normal(size=C)
    if model == "iid_uniform":
        return rng.uniform(size=C)
    if model == "random_walk":
        return np.cumsum(rng.normal(size=C))
    if model in ("log_histogram", "fista_iterate"):
        grid = Grid(w0, r, C)
        n = 44_426 if model == "log_histogram" else 5_000
        w = rng.normal(rng.uniform(-0.3, 0.1), rng.uniform(0.05, 0.5), n)
        if model == "log_histogram":
            h = np.bincount(grid.bucket_of(w), minlength=C).astype(np.float64)
            return np.log2(np.maximum(h, 0.01)) + 1.0 / LN2 + rng.normal(0.0, 0.25, C)
        return dual.solve_dual(w, grid, "fista", 20, 9e4, xi0=np.zeros(C)).xi
    raise ValueError(f"unknown model {model!r}; choose from {sorted(BREAKPOINT_MODELS)}")


def breakpoint_counts(
    model: str, C: int = 256, instances: int = 2000, seed: int = 0, hull: str = "pava"
) -> np.ndarray:
    """Number of lower-hull vertices (the thesis' breakpoints, ends included) per random instance.

    ``hull`` = "pava" (O(C), drops collinear points) or "breakpoints" (the thesis' repeated argmin,
    keeps collinear points; identical counts for continuous random models).
    """
    f = {"pava": lower_hull_pava, "chain": lower_hull_chain, "breakpoints": lower_hull_breakpoints}[hull]
    rng = np.random.default_rng(seed)
    v = thesis_grid(C).v
    return np.array([f(v, sample_xi(model, C, rng)).shape[0] for _ in range(instances)], dtype=np.int64)


BETA_NORMALISATIONS = {
    "k/C": "u = k/C; the bin of k is [k − ½, k + ½]/C (clipped to [0, 1]); P(k = C) = P(u ≥ (C − ½)/C)",
    "(k-1.5)/(C-1)": "u = (k − 1.5)/(C − 1): [0, 1] cut into C − 1 equal bins, one per k = 2..C; "
                     "P(k = C) = P(u ≥ (C − 2)/(C − 1))",
}


@dataclass(frozen=True)
class BetaFit:
    """A Beta(a, b) fit (loc 0, scale 1) of breakpoint counts k ∈ {2, …, C}, and what it gives k = C."""

    normalisation: str  # a key of BETA_NORMALISATIONS
    C: int
    a: float
    b: float
    log10_p_all: float  # log10 P(k = C) under the fit
    loglik: float  # log-likelihood of the counts under the fit's binned pmf

    def _edges(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = np.asarray(k, dtype=np.float64)
        if self.normalisation == "k/C":
            return np.clip((k - 0.5) / self.C, 0.0, 1.0), np.clip((k + 0.5) / self.C, 0.0, 1.0)
        return (k - 2.0) / (self.C - 1), (k - 1.0) / (self.C - 1)

    def pmf(self, k: np.ndarray) -> np.ndarray:
        """The fitted probability of each count k: the Beta mass of its bin."""
        lo, hi = self._edges(k)
        return special.betainc(self.a, self.b, hi) - special.betainc(self.a, self.b, lo)


def log10_beta_sf(a: float, b: float, x: float, terms: int = 400) -> float:
    """log10 P(U ≥ x) for U ~ Beta(a, b), accurate where the probability underflows float64.

    P(U ≥ x) = I_{1−x}(b, a) = y^b (1−y)^a / (b B(a, b)) · Σ_k (a+b)_k/(b+1)_k y^k with y = 1 − x
    (DLMF 8.17.8), summed in log space; the series converges for y < 1 and fast for small y.
    """
    y = 1.0 - x
    if not 0.0 < y < 1.0:
        raise ValueError(f"x must lie in (0, 1), got {x}")
    if y > 0.5:  # the series is slow there, and the value representable: use scipy
        return float(np.log10(special.betainc(b, a, y)))
    log_pref = b * math.log(y) + a * math.log1p(-y) - math.log(b) - special.betaln(a, b)
    total, term = 1.0, 1.0
    for k in range(terms):
        term *= (a + b + k) / (b + 1 + k) * y
        total += term
        if term < 1e-17 * total:
            break
    return (log_pref + math.log(total)) / math.log(10.0)


def fit_beta(counts: np.ndarray, C: int, normalisation: str = "k/C") -> BetaFit:
    """Beta(a, b) on [0, 1] fitted by maximum likelihood (scipy.stats.beta.fit, floc=0, fscale=1)
    to the counts mapped to u by ``normalisation`` (:data:`BETA_NORMALISATIONS`); P(k = C) is the
    fitted mass of the last bin, computed in log space (:func:`log10_beta_sf`)."""
    if normalisation not in BETA_NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; choose from {list(BETA_NORMALISATIONS)}")
    k = np.asarray(counts, dtype=np.float64)
    if k.min() < 2 or k.max() > C:
        raise ValueError(f"counts must lie in [2, {C}]")
    u = k / C if normalisation == "k/C" else (k - 1.5) / (C - 1)
    a, b, _, _ = stats.beta.fit(u, floc=0.0, fscale=1.0)
    x_last = (C - 0.5) / C if normalisation == "k/C" else (C - 2.0) / (C - 1)
    fit = BetaFit(normalisation, C, float(a), float(b), log10_beta_sf(a, b, x_last), 0.0)
    ks, m = np.unique(k, return_counts=True)
    ll = float(m @ np.log(np.maximum(fit.pmf(ks), 1e-300)))
    return BetaFit(normalisation, C, fit.a, fit.b, fit.log10_p_all, ll)


def log10_p_all_vertices_random_walk(C: int) -> float:
    """Exact log10 P(all C points are lower-hull vertices) for the random-walk model: the C − 1
    i.i.d. continuous increments must come in increasing order, probability 1/(C − 1)!."""
    return -special.gammaln(C) / math.log(10.0)
