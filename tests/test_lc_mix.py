"""LC-mix baseline: the C steps (exactly κ non-zeros, rank never above its target, Eckart–Young
error), the L-step penalty's gradient against autograd, and a short LC run with its file."""
import numpy as np
import pytest
import torch

from metaq_utils.baselines.lc_mix import (LCConfig, LCMix, LCPenalty, LowRank, Pruning, Quantization,
                                          mu_schedule, numerical_rank)
from metaq_utils.coding.fileformat import read_compressed
from metaq_utils.nn.networks import build_model


def test_pruning_keeps_exactly_kappa_largest():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(16, 6, 5, 5)).astype(np.float32)
    for kappa in (0, 1, 104, 2400):
        d = Pruning(kappa).compress(v)
        assert int(np.count_nonzero(d)) == kappa
        kept = np.abs(v[d != 0])
        if 0 < kappa < v.size:
            assert kept.min() >= np.sort(np.abs(v).ravel())[::-1][kappa - 1]
        np.testing.assert_array_equal(d[d != 0], v[d != 0])
    with pytest.raises(ValueError):
        Pruning(2401).compress(v)


def test_low_rank_never_exceeds_target_and_is_optimal():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(120, 256)).astype(np.float32)
    s = np.linalg.svd(v.astype(np.float64), compute_uv=False)
    for r in (1, 5, 16):
        d = LowRank(rank=r).compress(v)
        assert numerical_rank(d) == r
        err = np.sum((v.astype(np.float64) - d) ** 2)
        assert err == pytest.approx(np.sum(s[r:] ** 2), rel=1e-4)        # Eckart–Young
    assert numerical_rank(LowRank(alpha=0.0, max_rank=7).compress(v, mu=1.0)) <= 7
    assert numerical_rank(LowRank(alpha=1e9).compress(v, mu=1.0)) == 0
    # α selection: the rank grows with μ (the approximation error weighs more)
    ranks = [LowRank(alpha=1e-3).select_rank(s, v.shape, mu) for mu in (1e-4, 1e-2, 1.0)]
    assert ranks == sorted(ranks) and ranks[-1] > ranks[0]


def test_quantization_has_at_most_k_values():
    v = np.random.default_rng(2).normal(size=(84, 120)).astype(np.float32)
    assert np.unique(Quantization(2).compress(v)).size == 2


def test_penalty_gradient_matches_autograd():
    torch.manual_seed(0)
    model = build_model("lenet5")
    mu = 0.37
    delta = {"fc2.weight": torch.randn(84, 120)}
    lam = {"fc2.weight": torch.randn(84, 120)}
    w = model.fc2.weight.detach().clone().requires_grad_(True)
    (mu / 2 * ((w - delta["fc2.weight"] - lam["fc2.weight"] / mu) ** 2).sum()).backward()
    model.fc2.weight.grad = torch.zeros_like(w)
    LCPenalty(mu, delta, lam).after_backward(model)
    torch.testing.assert_close(model.fc2.weight.grad, w.grad)


def test_mu_schedule():
    assert mu_schedule(2.0, 1.5, 3) == [2.0, 3.0, 4.5]


def test_lc_run_keeps_kappa_and_ranks_and_file_round_trips(small_mnist):
    torch.manual_seed(0)
    pretrained = build_model("lenet5")
    mix = {"conv1.weight": ("prune", 40), "conv2.weight": ("quantize", 4),
           "fc1.weight": ("lowrank", 6), "fc2.weight": ("lowrank", 3), "fc3.weight": ("prune", 100)}
    run, decoded = LCMix(LCConfig(mix=mix, steps=2, mu0=1e-2, a=2.0), small_mnist).run(pretrained, "lenet5")
    assert run.extra["ranks"]["fc1.weight"] <= 6 and run.extra["ranks"]["fc2.weight"] <= 3
    cm = read_compressed(run.file_bytes, expected_arch="lenet5")
    assert cm.file_bits == run.file_bits
    names = [n for n, _ in decoded.named_parameters()]
    t = dict(zip(names, cm.tensors))
    assert np.count_nonzero(t["conv1.weight"]) == 40 and np.count_nonzero(t["fc3.weight"]) == 100
    assert np.unique(t["conv2.weight"]).size <= 4
    assert np.unique(t["fc1.weight"]).size <= 2 ** 5          # the stored, quantized reconstruction
    for p, x in zip(decoded.parameters(), cm.tensors):
        np.testing.assert_array_equal(p.detach().numpy().view(np.uint32), x.view(np.uint32))
    assert run.extra["file_bits_factors_float32"] == (
        run.file_bits - sum(g["group_bits"] for g in run.layers if g["tensors"][0] in ("fc1.weight", "fc2.weight"))
        + 32 * (6 * (120 + 256) + 3 * (84 + 120)))
