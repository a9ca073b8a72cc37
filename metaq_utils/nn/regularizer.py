"""The METaQ regularizer: the entropy term of the training problem (8), as a gradient hook.

    min_w  L(w) + λ·( α·R(w) + (1−α)·φ(w) )                                   (8)

After ``loss.backward()`` the training loop calls :meth:`METaQRegularizer.after_backward`, which adds

    λ·α·∂R(w)  +  s·λ·(1−α)·β                                                  (Theorem 1)

to every parameter's gradient, where β are the optimal multipliers of constraints (10), obtained
from a warm-started solve of the Lagrangian dual (17) on the current weights (spec §2.4), and the
sign ``s`` and the way β is obtained depend on the *variant*:

=================  ===========================================================================
variant            what is added
=================  ===========================================================================
``reference``      ``+λ(1−α)β`` (``head_sign=True``: ``−λ(1−α)β``) and ``+λα·w``, β from the dual
                   solve exactly as the reference implementation runs it (cardiaa/METaQ
                   ``ebd4355``): left-edge grid, ξ sorted-uniform in [0, 1] at the start, FISTA
                   with the supergradient at ξ_k, ξ re-sorted every step, the last iterate
                   returned, weights above v_{C−1} get ξ_{C−1}/v_{C−1}, below v_0 get 0, float32
                   — every rule with its file and line in :mod:`metaq_utils.core.reference`
``thesis``         ``+λ(1−α)β``: minimise φ as (8)–(9) are written (spec §4.1: this *raises*
                   entropy), with the thesis text's rules (bucket-centre grid, FISTA (82)–(84)
                   with the supergradient at the extrapolated point, c ∈ [0.01, n]) and, where
                   the text is silent, the reference's: ξ starts sorted-uniform in [0, 1], the
                   last iterate is returned
``flipped``        as ``thesis`` with ``−λ(1−α)β``: maximise φ
``sorted``         as ``thesis`` with ξ re-sorted ascending after every dual step (the envelope
                   becomes non-decreasing, so β ≥ 0)
``constant_best``  as ``thesis`` with *our former solver rules*: ξ starts at the constant
                   c* = n/C and the best evaluated point is returned. Its envelope is flat at the
                   start and no FISTA step with ζ = 1e5 scores above it, so the flat ξ is kept:
                   β = 0 at every step (a property of these rules, not of METaQ)
``adjacent``  ``−λ(1−α)·∂F/∂w`` with the adjacent-bucket relaxation (spec §4.4): each weight is
              split between the two grid values that bracket it (linear interpolation), the soft
              histogram ``c(w)`` is deterministic, ``F(w) = Σ_b c_b log2 c_b`` and
              ``∂F/∂w_i = (ξ_{k+1} − ξ_k)/Δ`` with ``ξ_b = log2 c_b + 1/ln 2``. Entropy falls when
              F rises, so the step *raises* F (lowers the soft entropy). No dual iterations.
``none``           only the ``λα·∂R`` term: the no-entropy-term control with the same R
``reference_2025`` ``+λ(1−α)β`` and ``+λα·w``, β from METaQ's 2025 form as cardiaa/METaQ
                   ``1b7583f`` runs it: the δ-shifted pruning knapsack (``delta``), FISTA with c
                   clamped to [c_lo, n] — :mod:`metaq_utils.core.reference_2025`. The hook gives the
                   second of that code's two Adam steps per batch (``trainer.py`` 53–90); the
                   first, plain step is the training loop's (``experiments/metaq2025.py`` runs both)
=================  ===========================================================================

The start rule (``xi_start``: ``constant`` | ``sorted_uniform`` | ``given`` with ``xi0``) and the
return rule (``xi_return``: ``best`` | ``last``) of the FISTA/DSS/PBM solvers are explicit
fields; ``None`` means the variant's rule above.

The regularizer keeps its state (ξ for the warm start, the grid, counters and the last dual
value), so a checkpointed run resumes exactly.

Measured behaviour worth knowing (see ``notebooks/SubgradientBundleMethods.ipynb`` and the
README's results): under the ``constant_best`` rules (first start c* = n/C, i.e. a constant ξ,
best point returned) the 15 FISTA steps with ζ = 1e5 never score above the flat start, so
β = 0 for every weight at every step and training equals ``none``. Under the reference rules β
is non-zero at every step (``python -m metaq_utils dual CKPT --variant reference`` shows it on
any checkpoint). With ``method="bundle"`` the solver reaches the true optimum, which is a ξ
linear in v: β is then the same for every weight (a uniform push on Σ_i w_i), spec §4.2.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core import _kernels
from ..core.dual import (METHODS, RETURN_RULES, DualOracle, FistaSolver, NonFiniteWeightError, c_bounds,
                   default_xi0, index_dtype_for, solve_dual)
from ..core.grid import THESIS_GRID_C, THESIS_GRID_R, THESIS_GRID_W0, Grid
from ..core.params import flatten
from ..core.reference import ReferenceSolver, reference_grid, sorted_uniform_xi
from ..core.reference_2025 import Reference2025Solver, grid_2025, quantize_center
from ..quant.quantization import entropy_bits

__all__ = ["METaQConfig", "METaQRegularizer", "VARIANTS", "adjacent_relaxation", "flat_parameters",
           "float_entropy_bits", "grid_entropy_bits"]

VARIANTS = ("reference", "thesis", "flipped", "sorted", "constant_best", "adjacent", "none", "reference_2025")
DUAL_METHODS = METHODS
START_RULES = ("constant", "sorted_uniform", "given")
# the variants whose β comes from a warm-started dual solve on the bucket-centre grid
_DUAL_VARIANTS = ("thesis", "flipped", "sorted", "constant_best")


@dataclass(frozen=True)
class METaQConfig:
    """METaQ hyper-parameters; the defaults are the thesis' best configuration (spec §3)."""
    C: int = THESIS_GRID_C          # buckets of the training grid, >= 2 (thesis: 6)
    w0: float = THESIS_GRID_W0      # centre of the range (thesis: −0.11)
    r: float = THESIS_GRID_R        # half-width of the range, > 0 (thesis: 1.114)
    lam: float = 0.0015             # λ
    alpha: float = 0.533            # α: share of R in the regularizer (1 − α on φ)
    R: str = "l2"                   # 'l2' (‖w‖²) | 'l1' (‖w‖₁)
    method: str = "fista"           # dual maximiser: 'dss' | 'fista' | 'pbm_thesis' | 'bundle'
    iterations: int = 15            # dual iterations per training step
    zeta: float = 1e5               # ζ of FISTA / the bundle methods
    c_lo: float = 0.01              # clamp of the c-subproblem (thesis value)
    c_hi: float | None = None       # None: n (thesis value)
    variant: str = "thesis"         # one of VARIANTS (see the module docstring)
    warm_start: bool = True         # start each dual solve from the previous step's ξ
    xi_start: str | None = None     # first start: 'constant' | 'sorted_uniform' | 'given'; None: the variant's
    xi0: tuple[float, ...] | None = None   # the given start (xi_start 'given'), C values
    xi_return: str | None = None    # 'best' evaluated point | 'last' iterate; None: the variant's
    min_xi: float = 0.0             # sorted-uniform start range (reference: train.py 37–38)
    max_xi: float = 1.0
    xi_seed: int = 0                # seed of the sorted-uniform start
    head_sign: bool = False         # reference only: −β, as the repository's HEAD (trainer.py 85)
    delta: float = 10.53            # reference_2025 only: the shift δ of ξ (knapsack.py 111 at 1b7583f)
    bucket_zero: int | None = None  # reference_2025: the zero bucket; w0 must then follow train.py 66

    @classmethod
    def reference_2025(cls, C: int = 64, r: float = 1.1, bucket_zero: int | None = None, delta: float = 10.53,
                       **kw) -> "METaQConfig":
        """The 2025 form's configuration: w0 from the zero-bucket rule (train.py 64–66 at 1b7583f)."""
        g = grid_2025(C, r, bucket_zero)
        return cls(C=C, r=r, w0=g.w0, bucket_zero=g.bucket_zero, delta=delta, variant="reference_2025", **kw)

    def __post_init__(self) -> None:
        Grid(self.w0, self.r, self.C)   # validates C >= 2, r > 0, finite values
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.xi0 is not None:
            object.__setattr__(self, "xi0", tuple(float(x) for x in self.xi0))
            if len(self.xi0) != self.C or not all(math.isfinite(x) for x in self.xi0):
                raise ValueError(f"xi0 must be {self.C} finite values, got {self.xi0}")
        if self.xi_start is not None and self.xi_start not in START_RULES:
            raise ValueError(f"xi_start must be one of {START_RULES}, got {self.xi_start!r}")
        if (self.xi_start == "given") != (self.xi0 is not None) and self.xi_start is not None:
            raise ValueError("xi_start='given' needs xi0, and xi0 needs xi_start='given' (or None)")
        if self.xi_return is not None and self.xi_return not in RETURN_RULES:
            raise ValueError(f"xi_return must be one of {RETURN_RULES}, got {self.xi_return!r}")
        if not (math.isfinite(self.min_xi) and math.isfinite(self.max_xi) and self.min_xi <= self.max_xi):
            raise ValueError(f"need finite min_xi <= max_xi, got [{self.min_xi}, {self.max_xi}]")
        if self.variant == "constant_best" and (self.start_rule, self.return_rule) != ("constant", "best"):
            raise ValueError("variant 'constant_best' is the constant start with the best point returned; "
                             "use variant 'thesis' with xi_start/xi_return for other rules")
        if self.variant == "reference":
            if self.method != "fista":
                raise ValueError("variant 'reference' runs the reference's FISTA: method must be 'fista'")
            if self.R != "l2":
                raise ValueError("variant 'reference' uses Adam's coupled weight decay λα·w: R must be 'l2'")
            if self.return_rule != "last":
                raise ValueError("variant 'reference' returns the last iterate (optimization.py 62)")
        elif self.head_sign:
            raise ValueError("head_sign applies to variant 'reference' only (use 'flipped' otherwise)")
        if self.variant == "reference_2025":
            if self.method != "fista" or self.R != "l2" or self.return_rule != "last":
                raise ValueError("variant 'reference_2025' runs the reference's FISTA (method 'fista', last "
                                 "iterate) with Adam's coupled weight decay (R 'l2')")
            if not (isinstance(self.delta, (int, float)) and math.isfinite(self.delta)):
                raise ValueError(f"delta must be finite, got {self.delta!r}")
            g = grid_2025(self.C, self.r, self.bucket_zero, None if self.bucket_zero is not None else self.w0)
            if self.bucket_zero is not None and abs(g.w0 - self.w0) > 1e-12:
                raise ValueError(f"bucket_zero={self.bucket_zero} needs w0={g.w0} (train.py 66), got {self.w0}; "
                                 "use METaQConfig.reference_2025(...)")
        elif self.bucket_zero is not None:
            raise ValueError("bucket_zero applies to variant 'reference_2025' only")
        if self.method == "bundle" and self.variant in _DUAL_VARIANTS and self.return_rule != "best":
            raise ValueError("the proximal bundle method returns its best point: set xi_return='best'")
        if self.method not in DUAL_METHODS:
            raise ValueError(f"method must be one of {DUAL_METHODS}, got {self.method!r}")
        if self.R not in ("l2", "l1"):
            raise ValueError(f"R must be 'l2' or 'l1', got {self.R!r}")
        if not (0.0 <= self.alpha <= 1.0):
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ValueError(f"lam must be finite and >= 0, got {self.lam}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if not self.zeta > 0:
            raise ValueError(f"zeta must be > 0, got {self.zeta}")

    @property
    def grid(self) -> Grid:
        """The quantization grid (bucket centres on [w0 − r, w0 + r]); the reference variant's
        dual solve runs on the left edges of the same buckets (:attr:`dual_grid_v`)."""
        return Grid(self.w0, self.r, self.C)

    @property
    def dual_grid_v(self) -> np.ndarray:
        """The grid values v of the dual solve: centres, or the reference's float32 left edges."""
        if self.variant in ("reference", "reference_2025"):
            return reference_grid(self.w0, self.r, self.C)
        return self.grid.v

    @property
    def start_rule(self) -> str:
        if self.xi0 is not None:
            return "given"
        if self.xi_start is not None:
            return self.xi_start
        return "constant" if self.variant == "constant_best" else "sorted_uniform"

    @property
    def return_rule(self) -> str:
        if self.xi_return is not None:
            return self.xi_return
        if self.variant == "constant_best" or self.method == "bundle":
            return "best"
        return "last"

    def initial_xi(self, n: int) -> np.ndarray:
        """The first start of the dual solve for n weights, by :attr:`start_rule` (float64)."""
        rule = self.start_rule
        if rule == "given":
            return np.asarray(self.xi0, dtype=np.float64)
        if rule == "constant":
            return default_xi0(n, self.C)
        return sorted_uniform_xi(self.C, self.min_xi, self.max_xi, self.xi_seed).astype(np.float64)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["xi0"] is not None:
            d["xi0"] = list(d["xi0"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "METaQConfig":
        d = dict(d)
        if "xi_start" not in d and d.get("variant") in ("thesis", "flipped", "sorted"):
            # saved before the start/return rules were fields: those runs used the constant start
            # and returned the best point (what is now the variant 'constant_best')
            d["xi_start"], d["xi_return"] = "constant", "best"
            if d.get("variant") == "thesis":
                d["variant"], d["xi_start"], d["xi_return"] = "constant_best", None, None
        if d.get("xi0") is not None:
            d["xi0"] = tuple(d["xi0"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """All trainable parameters, flattened in ``model.parameters()`` order (the w of spec §1), as a
    tensor of the parameters' dtype: :func:`metaq_utils.core.params.flatten`."""
    return torch.from_numpy(flatten(model, dtype=None))


def grid_entropy_bits(w: np.ndarray, grid: Grid) -> float:
    """Entropy (bits, n·H) of the weights quantized to the bucket centres of ``grid``."""
    return entropy_bits(grid.bucket_of(w))


def float_entropy_bits(w: np.ndarray) -> float:
    """Entropy (bits, n·H) of the empirical distribution of the distinct float32 values of ``w``."""
    return entropy_bits(np.asarray(w, dtype=np.float32))


def adjacent_relaxation(w: np.ndarray, grid: Grid, c_floor: float = 0.01) -> tuple[float, np.ndarray, np.ndarray]:
    """The adjacent-bucket relaxation of spec §4.4.

    Each (clamped) weight in grid interval k with position t = (w − v_k)/Δ ∈ [0, 1] puts 1 − t on
    bucket k and t on bucket k + 1. Returns ``(F, dF_dw, c)`` with ``F = Σ_b c_b log2 c_b``,
    ``∂F/∂w_i = (ξ_{k+1} − ξ_k)/Δ``, ``ξ_b = log2 max(c_b, c_floor) + 1/ln 2`` (the floor only
    guards log 0 for an empty bucket; outside the range ∂F/∂w = 0 because of the clamp).
    This NumPy version is the reference; the training step runs the same computation compiled
    (:func:`metaq_utils.core._kernels.adjacent_pass`, bit-identical, tested).
    """
    w = np.asarray(w, dtype=np.float64)
    if not np.isfinite(w).all():
        raise NonFiniteWeightError(int(np.flatnonzero(~np.isfinite(w))[0]))
    v = grid.v
    wc = np.clip(w, v[0], v[-1])
    k = np.minimum(((wc - v[0]) / grid.delta).astype(np.int64), grid.C - 2)
    t = (wc - v[k]) / grid.delta
    c = np.bincount(k, weights=1.0 - t, minlength=grid.C) + np.bincount(k + 1, weights=t, minlength=grid.C)
    F, xi = _adjacent_value_and_xi(c, c_floor)
    dF = (xi[k + 1] - xi[k]) / grid.delta
    dF[(w < v[0]) | (w > v[-1])] = 0.0
    return F, dF, c


def _adjacent_value_and_xi(c: np.ndarray, c_floor: float) -> tuple[float, np.ndarray]:
    """F = Σ_b c_b log2 c_b and ξ_b = log2 max(c_b, c_floor) + 1/ln 2 from the soft histogram c."""
    pos = c > 0
    F = float((c[pos] * np.log2(c[pos])).sum())
    xi = np.log2(np.maximum(c, c_floor)) + 1.0 / math.log(2.0)
    return F, xi


class METaQRegularizer:
    """Adds the METaQ term to the gradients of any ``nn.Module``'s parameters (see module doc)."""

    def __init__(self, model: nn.Module, config: METaQConfig = METaQConfig()) -> None:
        self.config = config
        self.grid = config.grid
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        dtypes = {p.dtype for p in self.params}
        if len(dtypes) != 1 or next(iter(dtypes)) not in (torch.float32, torch.float64):
            raise ValueError(f"parameters must all be float32 or all float64, got {sorted(map(str, dtypes))}")
        self.n = sum(p.numel() for p in self.params)
        self.xi: np.ndarray | None = None        # warm start for the next dual solve
        self.steps = 0
        self.last_value: float | None = None     # φ_w(ξ) of the last dual solve (or F for 'adjacent')
        self._last_beta: np.ndarray | None = None
        # per-step buffers, allocated once: the flat weights, the interval index of each weight,
        # β, and the flat gradient term (the training step then allocates nothing of size n)
        dtype = next(iter(dtypes))
        self._w = torch.empty(self.n, dtype=dtype)
        self._total = torch.empty(self.n, dtype=dtype)
        offsets = np.cumsum([0] + [p.numel() for p in self.params])
        self._views = [self._total[o:o + p.numel()].view_as(p) for o, p in zip(offsets, self.params)]
        self._names = [name for name, p in model.named_parameters() if p.requires_grad]
        self._offsets = offsets
        self._index = np.empty(self.n, dtype=index_dtype_for(self.grid.C))
        self._beta = np.empty(self.n)
        # the fused compiled steps: method 'fista' with the dual variants, the adjacent variant
        # (same floats as the general path, tests/test_kernels.py), and the reference variant
        # (whose only path is compiled: metaq_utils.core.reference)
        self._fused = (config.variant in ("adjacent", "reference", "reference_2025")
                       or (config.method == "fista" and config.variant in _DUAL_VARIANTS))
        self._fista: FistaSolver | None = None      # built at the first fused FISTA step
        self._ref: ReferenceSolver | None = None
        if config.variant == "reference":
            self._ref = ReferenceSolver(config.dual_grid_v, self.n, iterations=config.iterations,
                                        zeta=config.zeta, sort_xi=True,
                                        xi0=config.initial_xi(self.n).astype(np.float32))
            self.xi = self._ref.xi.astype(np.float64)
        elif config.variant == "reference_2025":     # same interface: step(w, scale, out), beta(), xi
            self._ref = Reference2025Solver(config.dual_grid_v, self.n, config.delta, iterations=config.iterations,
                                            zeta=config.zeta, c_lo=config.c_lo,
                                            xi0=config.initial_xi(self.n).astype(np.float32))
            self.xi = self._ref.xi.astype(np.float64)
        # direction per interval index: slopes in 0..C−2; entry C − 1 is the adjacent variant's
        # index for a weight outside [v_0, v_{C−1}], whose direction is −0.0 (= −∂F/∂w = −0)
        self._table = np.zeros(self.grid.C)
        self._table[-1] = -0.0
        c_bounds(config.c_lo, config.c_hi, self.n)           # validates the c-subproblem bounds (c_lo < c_hi)
        self._fused_beta_valid = False

    @property
    def last_beta(self) -> np.ndarray | None:
        """The per-weight direction added in the last step, before λ(1−α) (float64, length n)."""
        if not self._fused_beta_valid:
            return self._last_beta
        if self._ref is not None:
            beta = self._ref.beta()
            return -beta if self.config.head_sign else beta
        beta = _kernels.gather(self._table, self._index, np.empty(self.n))
        return -beta if self.config.variant == "flipped" else beta

    # -- the gradient hook ------------------------------------------------------------------
    def entropy_gradient(self, w: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The per-weight (sub)gradient direction that the variant adds, before λ(1−α) (float64).

        The general path, through :func:`metaq_utils.core.dual.solve_dual`; the training step uses the
        fused compiled kernel instead where it applies (same floats, tested).
        """
        cfg = self.config
        if cfg.variant == "none":
            if out is None:
                return np.zeros(w.shape[0])
            out.fill(0.0)
            return out
        if cfg.variant == "adjacent":
            F, dF, _ = adjacent_relaxation(w, self.grid, cfg.c_lo)
            self.last_value = F
            return np.negative(dF, out=out)
        if self._ref is not None:
            if out is None:
                out = np.empty(self.n)
            self._reference_solve(w, 1.0, out)
            return out
        index = self._index if w.shape[0] == self.n else None
        oracle = DualOracle(w, self.grid, cfg.c_lo, cfg.c_hi, index_out=index)
        xi0 = self.xi if (cfg.warm_start and self.xi is not None) else cfg.initial_xi(self.n)
        res = solve_dual(w, self.grid, method=cfg.method, iterations=cfg.iterations, zeta=cfg.zeta,
                         xi0=xi0, c_lo=cfg.c_lo, c_hi=cfg.c_hi, sort_xi=(cfg.variant == "sorted"),
                         oracle=oracle, beta_out=out, xi_return=cfg.return_rule)
        self.xi = np.asarray(res.xi, dtype=np.float64)
        self.last_value = float(res.value)
        return np.negative(res.beta, out=res.beta) if cfg.variant == "flipped" else res.beta

    def _fused_step(self, w: np.ndarray, scale: float) -> None:
        """``self._total = scale·β`` with β from FISTA on ``w``: :class:`FistaSolver`, one compiled call."""
        cfg = self.config
        if self._fista is None:
            self._fista = FistaSolver(self.grid, self.n, cfg.initial_xi(self.n), iterations=cfg.iterations,
                                      zeta=cfg.zeta, sort_xi=cfg.variant == "sorted", xi_return=cfg.return_rule,
                                      c_lo=cfg.c_lo, c_hi=cfg.c_hi,
                                      index_out=self._index, table_out=self._table)  # shared with last_beta
        # the warm start (kept in self.xi, so a loaded state resumes it), or the variant's first start
        self._fista.restart(self.xi if (cfg.warm_start and self.xi is not None) else cfg.initial_xi(self.n))
        try:
            self.last_value = self._fista.step(w, scale, self._total.numpy())
        except NonFiniteWeightError as e:
            self._raise_non_finite(e.index)
        self.xi = self._fista.xi.copy()
        self._fused_beta_valid = True

    def _reference_solve(self, w: np.ndarray, scale: float, out: np.ndarray) -> None:
        """``out = ±scale·β`` under the reference rules (:class:`ReferenceSolver`; − with the HEAD
        sign), warm-started unless ``warm_start`` is off; records ξ and the dual value."""
        cfg = self.config
        if not cfg.warm_start and self.steps > 0:
            self._ref.xi = cfg.initial_xi(self.n).astype(np.float32)
        self.last_value = self._ref.step(w, -scale if cfg.head_sign else scale, out)
        self.xi = self._ref.xi.astype(np.float64)

    def _reference_step(self, w: np.ndarray, scale: float) -> None:
        """``self._total = scale·β`` under the reference rules, the training step's path."""
        try:
            self._reference_solve(w, scale, self._total.numpy())
        except NonFiniteWeightError as e:
            self._raise_non_finite(e.index)
        self._fused_beta_valid = True

    def _adjacent_step(self, w: np.ndarray, scale: float) -> None:
        """``self._total = scale·(−∂F/∂w)`` for the adjacent variant: two compiled O(n) passes."""
        grid = self.grid
        c, bad = _kernels.adjacent_pass(w, grid.v, grid.delta, self._index)
        if bad >= 0:
            self._raise_non_finite(bad)
        F, xi = _adjacent_value_and_xi(c, self.config.c_lo)
        np.negative((xi[1:] - xi[:-1]) / grid.delta, out=self._table[:-1])     # −∂F/∂w on each interval
        _kernels.gather_scaled(self._table, self._index, scale, self._total.numpy())
        self.last_value = F
        self._fused_beta_valid = True

    def _raise_non_finite(self, i: int) -> None:
        """Raise :class:`NonFiniteWeightError` naming the parameter that holds flat weight i."""
        j = int(np.searchsorted(self._offsets, i, side="right")) - 1
        raise NonFiniteWeightError(i, f"METaQ: parameter {self._names[j]!r} contains NaN or inf "
                                      f"(flat index {i}, element {i - self._offsets[j]})")

    @torch.no_grad()
    def after_backward(self, model: nn.Module | None = None) -> None:
        """Add λα·∂R + λ(1−α)·direction to every parameter's gradient (see the module doc)."""
        cfg = self.config
        w_t = torch.cat([p.detach().reshape(-1) for p in self.params], out=self._w)
        scale = cfg.lam * (1.0 - cfg.alpha)
        total = self._total
        if self._ref is not None:
            self._reference_step(w_t.numpy(), scale)
            # trainer.py 78–91 at ebd4355: grad = (λ(1−α)β + ∇loss), then Adam's coupled weight
            # decay adds λα·w (trainer.py 38) — the same two additions in the same order
            grads = self._add_total_to_grads()
            if cfg.alpha > 0:
                torch._foreach_add_(grads, [p.detach() for p in self.params], alpha=cfg.lam * cfg.alpha)
            self.steps += 1
            return
        if self._fused and cfg.variant == "adjacent":
            self._adjacent_step(w_t.numpy(), scale)
        elif self._fused:
            self._fused_step(w_t.numpy(), -scale if cfg.variant == "flipped" else scale)
        else:
            self._fused_beta_valid = False
            try:
                self._last_beta = self.entropy_gradient(w_t.numpy(), out=self._beta)
            except NonFiniteWeightError as e:
                self._raise_non_finite(e.index)
            total.copy_(torch.from_numpy(self._last_beta)).mul_(scale)   # float64 → dtype, then scale
        if cfg.alpha > 0:
            if cfg.R == "l2":       # λα·∂‖w‖² = (2λα)·w, the same floats as λα·(2w)
                total.add_(w_t, alpha=2.0 * cfg.lam * cfg.alpha)
            else:
                total.add_(torch.sign(w_t), alpha=cfg.lam * cfg.alpha)
        self._add_total_to_grads()
        self.steps += 1

    def _add_total_to_grads(self) -> list[torch.Tensor]:
        """``p.grad += `` the parameter's slice of ``self._total`` (a clone where there is no
        gradient yet); returns the gradients."""
        grads = [p.grad for p in self.params]
        if all(g is not None for g in grads):
            torch._foreach_add_(grads, self._views)     # one call for all parameters
            return grads
        for p, g in zip(self.params, self._views):
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.add_(g)
        return [p.grad for p in self.params]

    # -- what the training loop records -----------------------------------------------------
    def epoch_metrics(self, model: nn.Module | None = None) -> dict[str, float]:
        w = flatten(self.params, np.float64)
        out = {"entropy_grid_bits": grid_entropy_bits(w, self.grid),
               "entropy_float_bits": float_entropy_bits(w),
               "fraction_outside_range": float(np.mean((w < self.grid.lo) | (w > self.grid.hi)))}
        if self.last_value is not None:
            out["dual_value" if self.config.variant != "adjacent" else "adjacent_F"] = self.last_value
        if self.last_beta is not None and self.config.variant != "none":
            b = self.last_beta
            out["beta_mean"] = float(b.mean())
            out["beta_std"] = float(b.std())
            out["beta_min"] = float(b.min())
            out["beta_max"] = float(b.max())
            out["beta_distinct"] = int(np.unique(np.round(b, 9)).size)
        v = self.config.dual_grid_v
        out["share_above_grid"] = float(np.mean(w > v[-1]))   # above v_{C−1} of the dual grid
        out["share_below_grid"] = float(np.mean(w < v[0]))
        if self.config.variant == "reference_2025":
            out.update(self.zero_bucket_stats(w))
        return out

    def zero_bucket_stats(self, w: np.ndarray, beta: np.ndarray | None = None) -> dict[str, float]:
        """reference_2025: the zero bucket's share of the weights ("center" quantization), β over it
        (``beta``, default the last step's), and what the last knapsack did (below/above the grid,
        partly pruned, split)."""
        bz = self.config.bucket_zero if self.config.bucket_zero is not None else round((self.config.C - 1) / 2)
        k, _ = quantize_center(w, self.config.dual_grid_v)
        zero = k == bz
        out = {"zero_bucket": int(bz), "zero_bucket_share": float(zero.mean())}
        b = self.last_beta if beta is None else beta
        if b is not None and zero.any():
            out["beta_zero_bucket_mean"] = float(b[zero].mean())
            out["beta_zero_bucket_std"] = float(b[zero].std())
        if self._ref.last_phi is not None:
            out.update({f"knapsack_{a}": c for a, c in self._ref.kind_shares().items()})
        return out

    def config_dict(self) -> dict[str, Any]:
        return {"metaq": self.config.to_dict()}

    def grid_dict(self) -> dict[str, Any]:
        return self.grid.to_dict()

    # -- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(),
                "xi": torch.from_numpy(self.xi.copy()) if self.xi is not None else None,
                "steps": self.steps, "last_value": self.last_value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = METaQConfig.from_dict(state["config"])
        if saved != self.config:
            raise ValueError(f"regularizer state was saved with a different configuration: {saved} != {self.config}")
        self.xi = state["xi"].numpy().astype(np.float64) if state["xi"] is not None else None
        if self._ref is not None and self.xi is not None:
            self._ref.xi = self.xi.astype(np.float32)      # float32 values, stored exactly in float64
        self.steps = int(state["steps"])
        self.last_value = state["last_value"]
