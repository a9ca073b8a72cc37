"""Soft weight-sharing baseline (Ullrich et al. 2017): the prior's density against scipy.stats, its
gradients against finite differences (float64), the mixing proportions against a transcription of
the tutorial's formula, the merge rule against hand cases and a transcription of the tutorial's
``merger``, the responsibilities against the tutorial's linear-domain products, bad inputs, and an
end-to-end run whose file decodes to the stated accuracy."""
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import beta as beta_dist
from scipy.stats import gamma as gamma_dist
from scipy.stats import norm

import metaq_utils.baselines.soft_weight_sharing as sws_mod
from metaq_utils.baselines.soft_weight_sharing import (GaussianMixturePrior, MixturePriorTerm, SoftWeightSharing,
                                                       SoftWeightSharingConfig, assign_components, discretize,
                                                       gaussian_kl, merge_components)
from metaq_utils.coding.fileformat import read_compressed
from metaq_utils.nn.networks import build_model, model_from_compressed
from metaq_utils.nn.training import TrainConfig, evaluate, train


def _prior(seed=0, **kw):
    """A float64 prior with its parameters moved away from the initial values."""
    cfg = SoftWeightSharingConfig(components=5, **kw)
    prior = GaussianMixturePrior(cfg).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        prior.means.add_(0.05 * torch.randn(prior.means.shape, generator=g, dtype=torch.float64))
        prior.gammas.add_(torch.randn(prior.gammas.shape, generator=g, dtype=torch.float64))
        prior.rhos.add_(torch.randn(prior.rhos.shape, generator=g, dtype=torch.float64))
        if prior.zero_logit is not None:
            prior.zero_logit.add_(0.3)
    return prior


def _reference_log_density(w, means, log_prec, log_pis):
    std = np.exp(-0.5 * log_prec)
    return logsumexp(norm.logpdf(w[:, None], loc=means[None, :], scale=std[None, :]) + log_pis[None, :], axis=1)


# ------------------------------------------------------------------------------------------------
# 1. the prior


def test_initial_prior_is_the_tutorials():
    cfg = SoftWeightSharingConfig()
    prior = GaussianMixturePrior(cfg)
    means, gammas, log_pis = prior.numpy_mixture()
    np.testing.assert_allclose(means, np.concatenate([[0.0], np.linspace(-0.6, 0.6, 15)]), atol=1e-7)
    np.testing.assert_allclose(gammas, -np.log(0.25 ** 2), rtol=1e-6)
    np.testing.assert_allclose(np.exp(log_pis), [0.99] + [0.01 / 15] * 15, rtol=1e-5)


def test_mixing_proportions_follow_the_tutorials_formula():
    prior = _prior()
    rhos = prior.rhos.detach().numpy()
    # empirical_priors.py:57-60, transcribed
    mp = np.exp(rhos - rhos.min())
    mp = (1 - 0.99) * mp / mp.sum()
    mp = np.concatenate([[0.99], mp])
    np.testing.assert_allclose(np.exp(prior.numpy_mixture()[2]), mp, rtol=1e-12)


@pytest.mark.parametrize("learn_pi0", [False, True])
def test_complexity_is_the_exact_negative_log_density(learn_pi0):
    prior = _prior(pi_zero_beta=(2.0, 30.0) if learn_pi0 else None)
    w = torch.linspace(-0.8, 0.8, 301, dtype=torch.float64)
    means, log_prec, log_pis = prior.numpy_mixture()
    ref = _reference_log_density(w.numpy(), means, log_prec, log_pis)
    np.testing.assert_allclose(prior.log_prob(w).detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    assert prior.neg_log_likelihood(w).item() == pytest.approx(-ref.sum(), rel=1e-12)
    lam = np.exp(log_prec)
    hyper = -(gamma_dist.logpdf(lam[0], a=5e3, scale=1 / 2.0) + gamma_dist.logpdf(lam[1:], a=250.0, scale=1 / 0.1).sum())
    if learn_pi0:
        hyper -= beta_dist.logpdf(np.exp(log_pis[0]), 2.0, 30.0)
    assert prior.neg_log_hyperprior().item() == pytest.approx(hyper, rel=1e-10)
    assert prior.complexity(w).item() == pytest.approx(-ref.sum() + hyper, rel=1e-10)


@pytest.mark.parametrize("learn_pi0", [False, True])
def test_complexity_gradient_against_finite_differences(monkeypatch, learn_pi0):
    monkeypatch.setattr(sws_mod, "CHUNK", 7)           # several chunks, a ragged last one
    prior = _prior(seed=1, pi_zero_beta=(2.0, 30.0) if learn_pi0 else None)
    w = (0.3 * torch.randn(40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)).requires_grad_()
    params = [w] + list(prior.parameters())
    grads = torch.autograd.grad(prior.complexity(w), params)
    eps = 1e-4                                       # the complexity is ~3e4: roundoff dominates below
    for p, g in zip(params, grads):
        flat = p.data.view(-1)
        for k in range(flat.numel()):
            old = flat[k].item()
            flat[k] = old + eps
            up = prior.complexity(w).item()
            flat[k] = old - eps
            down = prior.complexity(w).item()
            flat[k] = old
            fd = (up - down) / (2 * eps)
            assert g.view(-1)[k].item() == pytest.approx(fd, rel=1e-6, abs=1e-6)


def test_chunked_nll_equals_autograd(monkeypatch):
    monkeypatch.setattr(sws_mod, "CHUNK", 5)
    prior = _prior(seed=2)
    w = (0.3 * torch.randn(23, generator=torch.Generator().manual_seed(4), dtype=torch.float64)).requires_grad_()
    params = [w] + list(prior.parameters())
    a = torch.autograd.grad(prior.neg_log_likelihood(w), params)
    b = torch.autograd.grad(-prior.log_prob(w).sum(), params)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_prior_term_adds_scaled_gradient_and_steps_the_prior():
    torch.manual_seed(0)
    model = build_model("lenet300100").double()
    cfg = SoftWeightSharingConfig(tau=0.5)
    prior = GaussianMixturePrior(cfg).double()
    before = [p.detach().clone() for p in prior.parameters()]
    term = MixturePriorTerm(prior, cfg.tau, 1000)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    params = list(model.parameters())
    w = torch.cat([p.detach().reshape(-1) for p in params]).requires_grad_()
    expected = torch.autograd.grad(0.5 / 1000 * prior.complexity(w), w)[0]
    term.after_backward(model)
    got = torch.cat([p.grad.reshape(-1) for p in params]) - 1.0
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-15)
    assert all(not torch.equal(a, b) for a, b in zip(before, prior.parameters()))   # one Adam step each


# ------------------------------------------------------------------------------------------------
# 3-4. merge and quantize


def _reference_merger(inputs):
    """helpers.py:41-57 (Python 3: range for xrange, == for ``is``)."""
    for _ in range(3):
        lists = []
        for inpud in inputs:
            for i in inpud:
                tmp = 1
                for l in lists:
                    if i in l:
                        for j in inpud:
                            l.append(j)
                        tmp = 0
                if tmp == 1:
                    lists.append(list(inpud))
        lists = [np.unique(l) for l in lists]
        inputs = lists
    return lists


def test_kl_is_the_closed_form():
    m0, lp0, m1, lp1 = 0.1, 3.0, -0.2, 1.5
    s0, s1 = math.exp(-lp0 / 2), math.exp(-lp1 / 2)
    ref = math.log(s1 / s0) + (s0 ** 2 + (m0 - m1) ** 2) / (2 * s1 ** 2) - 0.5
    assert gaussian_kl(m0, lp0, m1, lp1) == pytest.approx(ref, rel=1e-12)
    assert gaussian_kl(m0, lp0, m0, lp0) == 0.0


def test_merge_hand_cases():
    # 0 and 2 identical, 3 a copy of 1 with a different weight; 4 distinct
    means = np.array([0.0, 0.3, 0.0, 0.3, -0.4])
    lps = np.array([5.0, 4.0, 5.0, 4.0, 4.0])
    lpis = np.log(np.array([0.5, 0.1, 0.2, 0.15, 0.05]))
    m, lp, lpi, groups = merge_components(means, lps, lpis)
    assert groups == [[0, 2], [1, 3], [4]]
    np.testing.assert_allclose(np.exp(lpi), [0.7, 0.25, 0.05], rtol=1e-12)
    np.testing.assert_allclose(m, [0.0, 0.3, -0.4], rtol=1e-12)
    np.testing.assert_allclose(lp, [5.0, 4.0, 4.0], rtol=1e-12)
    # nothing merges when all differ; the mean closest to 0 becomes 0
    m, lp, lpi, groups = merge_components([0.01, 0.3, -0.2], [5.0, 4.0, 4.0], np.log([0.8, 0.1, 0.1]))
    assert groups == [[0], [1], [2]] and m.tolist() == [0.0, 0.3, -0.2]
    # a merged group's mean and precision are π-weighted: only near-identical components merge at 1e-10,
    # so use a looser threshold to see the averaging
    m, lp, lpi, groups = merge_components([0.0, 0.2, 0.2001], [4.0, 6.0, 6.2], np.log([0.9, 0.06, 0.04]),
                                          kl_threshold=0.1)
    assert groups == [[0], [1, 2]]
    assert m[1] == pytest.approx((0.2 * 0.06 + 0.2001 * 0.04) / 0.1, rel=1e-12)
    assert lp[1] == pytest.approx(np.log((np.exp(6.0) * 0.06 + np.exp(6.2) * 0.04) / 0.1), rel=1e-12)
    assert np.exp(lpi[1]) == pytest.approx(0.1, rel=1e-12)
    # transitive: 0~1 and 1~2 (but not 0~2) end in one group
    m, lp, lpi, groups = merge_components([0.0, 0.1, 0.2], [0.0, 0.0, 0.0], np.log([0.5, 0.3, 0.2]),
                                          kl_threshold=0.006)
    assert gaussian_kl(0.0, 0.0, 0.2, 0.0) > 0.006 and groups == [[0, 1, 2]]


def test_merge_groups_match_the_tutorials_merger():
    rng = np.random.default_rng(0)
    for _ in range(30):
        J = 8
        base = rng.normal(0, 0.3, 4)
        pick = rng.integers(0, 4, J)
        means, lps = base[pick], rng.normal(3, 1, 4)[pick]            # exact duplicates merge
        lpis = np.log(rng.dirichlet(np.ones(J)))
        K = np.array([[gaussian_kl(means[i], lps[i], means[j], lps[j]) for j in range(J)] for i in range(J)])
        idx, idy = np.where(K < 1e-10)
        ref = _reference_merger(np.asarray(list(zip(idx, idy))))
        _, _, _, groups = merge_components(means, lps, lpis)
        assert [list(map(int, l)) for l in ref] == groups


def test_assignment_matches_the_tutorials_products():
    rng = np.random.default_rng(1)
    means, lps = np.array([0.0, -0.3, 0.25, 0.5]), np.array([4.0, 3.0, 3.5, 2.0])
    pis = np.array([0.9, 0.04, 0.04, 0.02])
    xs = rng.normal(0, 0.3, 2000)
    ref = np.argmax(np.stack([pis[k] * np.exp(0.5 * lps[k]) * np.exp(-np.exp(lps[k]) / 2 * (xs - means[k]) ** 2)
                              for k in range(4)]), axis=0)      # helpers.py:67-77
    np.testing.assert_array_equal(assign_components(xs, means, lps, np.log(pis)), ref)


def test_discretize_sets_every_weight_to_a_mean():
    rng = np.random.default_rng(2)
    tensors = [rng.normal(0, 0.2, (7, 5)), rng.normal(0, 0.2, 9)]
    means, lps, lpis = np.array([0.0, -0.3, 0.3, 0.3]), np.array([5.0, 4.0, 4.0, 4.0]), np.log([0.7, 0.1, 0.1, 0.1])
    out, info = discretize(tensors, means, lps, lpis)
    assert [o.shape for o in out] == [(7, 5), (9,)] and all(o.dtype == np.float32 for o in out)
    assert info["groups"] == [[0], [1], [2, 3]]
    values = set(np.concatenate([o.ravel() for o in out]).tolist())
    assert values <= {0.0, np.float32(-0.3).item(), np.float32(0.3).item()} and 0.0 in values
    flat = np.concatenate([t.ravel() for t in tensors])
    m, lp, lpi, _ = merge_components(means, lps, lpis)
    np.testing.assert_array_equal(np.concatenate([o.ravel() for o in out]),
                                  m.astype(np.float32)[assign_components(flat, m, lp, lpi)])
    assert sum(info["counts"]) == flat.size


# ------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("kw", [dict(components=1), dict(components=2.5), dict(pi_zero=1.0), dict(pi_zero=0.0),
                                dict(tau=-1.0), dict(gamma_prior=(0.0, 1.0)), dict(pi_zero_beta=(1.0,)),
                                dict(zero_gamma_prior=(5e3, float("nan"))), dict(select="best"),
                                dict(lr_means=0.0), dict(merge_kl=0.0), dict(epochs=-1), dict(max_val_drop=2.0)])
def test_bad_config_raises(kw):
    with pytest.raises(ValueError):
        SoftWeightSharingConfig(**kw)


def test_bad_mixture_and_weights_raise():
    with pytest.raises(ValueError, match="one length"):
        merge_components([0.0, 1.0], [1.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        merge_components([0.0, np.nan], [1.0, 1.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="kl_threshold"):
        merge_components([0.0, 1.0], [1.0, 1.0], [0.0, 0.0], kl_threshold=-1)
    with pytest.raises(ValueError, match="weights must be finite"):
        assign_components([0.1, np.inf], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="n_train"):
        MixturePriorTerm(GaussianMixturePrior(SoftWeightSharingConfig()), 0.003, 0)
    with pytest.raises(ValueError, match="validation"):
        SoftWeightSharing(SoftWeightSharingConfig(), data=None)._accuracy(build_model("lenet300100"))


# ------------------------------------------------------------------------------------------------
# end to end


def test_end_to_end_tiny_run_decodes_to_the_stated_accuracy(small_mnist, tmp_path):
    torch.manual_seed(0)
    dense = build_model("lenet300100")
    train(dense, small_mnist, TrainConfig(arch="lenet300100", epochs=3, batch_size=64, augment=False, seed=0),
          progress=False)
    # 6 × 32 = 192 steps: ~30× the tutorial's prior learning rates, so the precisions reach the
    # hyper-priors' modes (std ≈ 0.02) within two epochs (the tutorial takes ~7,000 steps); after
    # 192 steps the quantized network is far from converged (≈ 55 % on validation), which is enough
    # to test the mechanics: the selection, the file, its decoding
    cfg = SoftWeightSharingConfig(epochs=6, batch_size=64, tau=0.05, lr_means=1e-3, lr_gammas=0.1, lr_rhos=0.1,
                                  select="smallest", max_val_drop=0.5)
    result, decoded = SoftWeightSharing(cfg, small_mnist).run(dense, "lenet300100", out_dir=tmp_path)
    assert [h["epoch"] for h in result.history] == list(range(7))
    assert all((tmp_path / "epochs" / f"e{k}.mtq").exists() for k in range(7))
    cm = read_compressed(result.file_bytes, expected_arch="lenet300100")
    assert cm.file_bits == result.file_bits == 8 * len(result.file_bytes)
    assert result.file_bytes == (tmp_path / "epochs" / f"e{result.epoch}.mtq").read_bytes()
    fresh = model_from_compressed(cm)
    assert evaluate(fresh, small_mnist.test_x, small_mnist.test_y)["accuracy"] == result.accuracy
    assert evaluate(fresh, small_mnist.val_x, small_mnist.val_y)["accuracy"] == result.val_accuracy
    row = result.history[result.epoch]
    level = result.history[0]["val_accuracy"] - 0.5
    assert row["q_file_bits"] == result.file_bits and row["q_val_accuracy"] == result.val_accuracy >= level
    assert result.file_bits == min(h["q_file_bits"] for h in result.history if h["q_val_accuracy"] >= level)
    assert result.accuracy > 0.3                                   # chance: 0.1
    distinct = np.unique(np.concatenate([t.ravel() for t in cm.tensors]))
    assert 0.0 in distinct and distinct.size <= cfg.components
    assert result.density < 0.1                                    # the zero component took most weights
    assert result.compression_ratio > 100
    assert result.to_json_dict()["method"] == "soft-weight-sharing"


def test_interrupted_run_resumes_to_the_same_file(small_mnist, tmp_path, monkeypatch):
    from metaq_utils.nn.data import MNISTTensors
    d = small_mnist
    data = MNISTTensors(d.train_x[:512], d.train_y[:512], d.test_x[:300], d.test_y[:300], d.val_x[:300], d.val_y[:300],
                        dict(d.split, val_size=300))
    torch.manual_seed(1)
    dense = build_model("lenet300100")
    cfg = SoftWeightSharingConfig(epochs=3, batch_size=64, tau=0.05, lr_gammas=0.1, lr_rhos=0.1, select="smallest",
                                  max_val_drop=1.0)
    whole, _ = SoftWeightSharing(cfg, data).run(dense, "lenet300100", out_dir=tmp_path / "whole")
    score = SoftWeightSharing._score_epoch

    def interrupt(self, model, prior, arch, epoch, files, out_dir):
        if epoch == 2:
            raise KeyboardInterrupt
        return score(self, model, prior, arch, epoch, files, out_dir)

    monkeypatch.setattr(SoftWeightSharing, "_score_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        SoftWeightSharing(cfg, data).run(dense, "lenet300100", out_dir=tmp_path / "cut")
    monkeypatch.setattr(SoftWeightSharing, "_score_epoch", score)
    resumed, _ = SoftWeightSharing(cfg, data).run(dense, "lenet300100", out_dir=tmp_path / "cut")
    assert resumed.file_bytes == whole.file_bytes and resumed.epoch == whole.epoch
    strip = lambda h: {k: v for k, v in h.items() if k != "epoch_seconds"}  # noqa: E731
    assert [strip(h) for h in resumed.history] == [strip(h) for h in whole.history]
    for k in range(4):
        assert (tmp_path / "cut" / "epochs" / f"e{k}.mtq").read_bytes() == (tmp_path / "whole" / "epochs" / f"e{k}.mtq").read_bytes()
