import math

import numpy as np
import pytest
import torch

from metaq_utils.core.dual import solve_dual
from metaq_utils.core.grid import Grid
from metaq_utils.nn.networks import build_model
from metaq_utils.nn.regularizer import (METaQConfig, METaQRegularizer, adjacent_relaxation, flat_parameters,
                                     grid_entropy_bits)
from metaq_utils.nn.training import TrainConfig, make_model, train


def _model(seed=0):
    torch.manual_seed(seed)
    m = build_model("lenet5")
    with torch.no_grad():
        for p in m.parameters():
            # Weights whose mean is not w0: when mean(w) = w0 (and w is inside the range) uniform
            # bucket masses c_b = n/C are feasible for the relaxation, the flat
            # ξ = log2(n/C) + 1/ln 2 is dual-optimal and β = 0 exactly (spec §4.2).
            p.normal_(0.25, 0.3)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    return m


def _added_gradient(m, reg):
    for p in m.parameters():
        p.grad.zero_()
    reg.after_backward(m)
    return torch.cat([p.grad.reshape(-1) for p in m.parameters()]).double().numpy()


@pytest.mark.parametrize("variant,sign,sort", [("thesis", 1, False), ("flipped", -1, False), ("sorted", 1, True)])
def test_added_gradient_is_lambda_times_beta_from_the_solver(variant, sign, sort):
    m = _model()
    cfg = METaQConfig(variant=variant)
    reg = METaQRegularizer(m, cfg)
    _added_gradient(m, reg)                       # one step: the warm start ξ now exists
    xi0 = reg.xi.copy()
    w = flat_parameters(m).double().numpy()
    got = _added_gradient(m, reg)
    ref = solve_dual(w, Grid(cfg.w0, cfg.r, cfg.C), method="fista", iterations=15, zeta=1e5, xi0=xi0,
                     c_lo=0.01, c_hi=None, sort_xi=sort)
    w32 = w.astype(np.float32).astype(np.float64)
    expected = sign * cfg.lam * (1 - cfg.alpha) * ref.beta + cfg.lam * cfg.alpha * 2 * w32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)
    assert np.abs(ref.beta).max() > 0                 # the term is not vacuous on these weights
    if variant == "sorted":
        assert (reg.last_beta >= -1e-12).all()        # sorted ξ: non-decreasing envelope, β ≥ 0


def test_none_variant_adds_only_the_R_term_l2_and_l1():
    m = _model()
    w = flat_parameters(m).double().numpy()
    got = _added_gradient(m, METaQRegularizer(m, METaQConfig(variant="none")))
    np.testing.assert_allclose(got, 0.0015 * 0.533 * 2 * w, rtol=1e-5, atol=1e-9)
    got = _added_gradient(m, METaQRegularizer(m, METaQConfig(variant="none", R="l1", alpha=0.5, lam=0.01)))
    np.testing.assert_allclose(got, 0.005 * np.sign(w), rtol=1e-6)


def test_adjacent_relaxation_value_and_gradient_against_finite_differences():
    rng = np.random.default_rng(0)
    grid = Grid(0.0, 1.0, 8)
    w = rng.uniform(grid.v[0], grid.v[-1], 300)
    F, dF, c = adjacent_relaxation(w, grid)
    assert c.sum() == pytest.approx(300) and (c >= 0).all()
    # c is the linear-interpolation histogram: Σ_b c_b v_b = Σ_i w_i
    assert (c * grid.v).sum() == pytest.approx(w.sum())
    assert F == pytest.approx(sum(x * math.log2(x) for x in c if x > 0))
    h = 1e-6
    for i in rng.choice(300, 25, replace=False):
        wp, wm = w.copy(), w.copy()
        wp[i] += h
        wm[i] -= h
        fd = (adjacent_relaxation(wp, grid)[0] - adjacent_relaxation(wm, grid)[0]) / (2 * h)
        assert dF[i] == pytest.approx(fd, rel=1e-4, abs=1e-6)


def test_adjacent_variant_step_lowers_the_soft_entropy():
    m = _model(1)
    cfg = METaQConfig(variant="adjacent", alpha=0.0)
    reg = METaQRegularizer(m, cfg)
    w = flat_parameters(m).double().numpy()
    F0 = adjacent_relaxation(w, cfg.grid)[0]
    g = _added_gradient(m, reg) / (cfg.lam * (1 - cfg.alpha))   # = −∂F/∂w
    F1 = adjacent_relaxation(w - 1e-4 * g, cfg.grid)[0]          # a gradient-descent step
    assert F1 > F0            # F up ⇔ soft entropy n·log2 n − F down


def test_regularizer_state_round_trip_and_config_check():
    m = _model()
    reg = METaQRegularizer(m, METaQConfig())
    _added_gradient(m, reg)
    other = METaQRegularizer(m, METaQConfig())
    other.load_state_dict(reg.state_dict())
    np.testing.assert_array_equal(other.xi, reg.xi)
    assert other.steps == 1
    with pytest.raises(ValueError, match="different configuration"):
        METaQRegularizer(m, METaQConfig(C=8)).load_state_dict(reg.state_dict())


@pytest.mark.parametrize("kwargs,msg", [({"C": 1}, "C must be >= 2"), ({"r": 0.0}, "r must be > 0"),
                                        ({"variant": "magic"}, "variant must be one of"),
                                        ({"method": "newton"}, "method must be one of"),
                                        ({"alpha": 1.5}, "alpha must be in"), ({"R": "l3"}, "R must be")])
def test_bad_configuration(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        METaQConfig(**kwargs)


def test_metaq_training_resumes_exactly(small_mnist, tmp_path):
    cfg = TrainConfig(epochs=2, seed=4, init="uniform", augment=False)
    data = type(small_mnist)(small_mnist.train_x[:512], small_mnist.train_y[:512],
                             small_mnist.test_x[:200], small_mnist.test_y[:200])
    full = make_model(cfg)
    train(full, data, cfg, regularizer=METaQRegularizer(full, METaQConfig()), progress=False)

    def stop(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt
    ck = tmp_path / "last.pt"
    part = make_model(cfg)
    with pytest.raises(KeyboardInterrupt):
        train(part, data, cfg, regularizer=METaQRegularizer(part, METaQConfig()), checkpoint_path=ck,
              epoch_callbacks=[stop], progress=False)
    resumed = make_model(TrainConfig(epochs=2, seed=77, init="uniform", augment=False))
    res = train(resumed, data, cfg, regularizer=METaQRegularizer(resumed, METaQConfig()), checkpoint_path=ck,
                resume=True, progress=False)
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert {"entropy_grid_bits", "entropy_float_bits", "dual_value", "beta_std"} <= set(res.final)
    assert res.final["entropy_grid_bits"] == pytest.approx(
        grid_entropy_bits(flat_parameters(resumed).double().numpy(), METaQConfig().grid))


# ----------------------------------------------------------------------------- the reference variant

def _uniform_model(seed=0):
    """LeNet-5 at the thesis' start: every parameter uniform in [w0 − r, w0 + r] (trainer.py 45)."""
    torch.manual_seed(seed)
    m = build_model("lenet5")
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.11 - 1.114, -0.11 + 1.114)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    return m


@pytest.mark.parametrize("head_sign", [False, True])
def test_reference_variant_adds_lambda_beta_then_adam_weight_decay(head_sign):
    from metaq_utils.core.reference import ReferenceSolver, reference_grid, sorted_uniform_xi
    m = _uniform_model()
    cfg = METaQConfig(variant="reference", head_sign=head_sign)
    reg = METaQRegularizer(m, cfg)
    assert reg.config.start_rule == "sorted_uniform" and reg.config.return_rule == "last"
    w = flat_parameters(m).numpy().copy()
    solver = ReferenceSolver(reference_grid(-0.11, 1.114, 6), w.size, xi0=sorted_uniform_xi(6, 0, 1, 0))
    for _ in range(3):                                   # warm-started: three successive steps
        got = _added_gradient(m, reg)
        beta, _ = solver.solve(w)
        s = np.float32(cfg.lam * (1 - cfg.alpha))
        term = (np.float32(-1 if head_sign else 1) * beta.astype(np.float32)) * s
        expected = term + np.float32(cfg.lam * cfg.alpha) * w        # trainer.py 86, then 38
        # the same float32 additions; torch may fuse `g + α·w` (one rounding less): 1 ulp of the
        # addends where the two terms cancel
        np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), rtol=1e-6, atol=1e-10)
        np.testing.assert_array_equal(reg.xi, solver.xi.astype(np.float64))
    assert np.abs(beta).min() > 0                        # every weight gets a non-zero β
    metrics = reg.epoch_metrics(m)
    assert 0.15 < metrics["share_above_grid"] < 0.17     # uniform start: 16 % above v_5 = 0.633
    sign = -1 if head_sign else 1                         # last_beta is the added direction
    lo, hi = sorted((sign * metrics["beta_min"], sign * metrics["beta_max"]))
    assert hi > 5 * lo > 0                               # ξ_5/v_5 on the top bucket: a large push


def test_reference_variant_rejects_rules_it_does_not_have():
    with pytest.raises(ValueError, match="method must be 'fista'"):
        METaQConfig(variant="reference", method="bundle")
    with pytest.raises(ValueError, match="last iterate"):
        METaQConfig(variant="reference", xi_return="best")
    with pytest.raises(ValueError, match="head_sign applies"):
        METaQConfig(variant="thesis", head_sign=True)
    with pytest.raises(ValueError, match="xi0 must be 6 finite"):
        METaQConfig(xi_start="given", xi0=(1.0, 2.0))
    with pytest.raises(ValueError, match="constant start with the best point"):
        METaQConfig(variant="constant_best", xi_start="sorted_uniform")


def test_constant_start_best_return_keeps_the_flat_xi_and_beta_zero():
    """Our former solver rules: on the thesis' start the flat ξ = log2(n/C) + 1/ln 2 is never beaten
    by a FISTA step with ζ = 1e5, so β = 0; the thesis variant (sorted-uniform start, last
    iterate) gives a non-zero β on the same weights."""
    m = _uniform_model()
    reg = METaQRegularizer(m, METaQConfig(variant="constant_best"))
    for _ in range(3):
        _added_gradient(m, reg)
        assert np.all(reg.last_beta == 0)
    np.testing.assert_array_equal(reg.xi, np.full(6, math.log2(44_426 / 6) + 1 / math.log(2)))
    m = _uniform_model()
    reg = METaQRegularizer(m, METaQConfig(variant="thesis"))
    _added_gradient(m, reg)
    assert np.abs(reg.last_beta).max() > 0.1


def test_legacy_thesis_config_loads_as_constant_best():
    """Configurations saved before the start/return rules became fields ran the constant start with
    the best point returned: they load as what they ran, not as today's 'thesis'."""
    legacy = {k: v for k, v in METaQConfig().to_dict().items()
              if k not in ("xi_start", "xi0", "xi_return", "min_xi", "max_xi", "xi_seed", "head_sign")}
    assert METaQConfig.from_dict(legacy).variant == "constant_best"
    flipped = METaQConfig.from_dict({**legacy, "variant": "flipped"})
    assert (flipped.variant, flipped.start_rule, flipped.return_rule) == ("flipped", "constant", "best")
    cfg = METaQConfig(variant="reference", xi_seed=3)
    assert METaQConfig.from_dict(cfg.to_dict()) == cfg


def test_reference_variant_checkpoint_resume_keeps_xi():
    m = _uniform_model()
    cfg = METaQConfig(variant="reference")
    reg = METaQRegularizer(m, cfg)
    _added_gradient(m, reg)
    state = reg.state_dict()
    other = METaQRegularizer(_uniform_model(1), cfg)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other._ref.xi, reg._ref.xi)
