"""Deep Compression baseline: pruning rule and fixed masks, k-means initialisations, shared
centroid gradients (against autograd through an explicit centroid parametrization), and the
compressed file's round trip."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm

from metaq_utils.baselines.deep_compression import (DeepCompression, DeepCompressionConfig, FixedMasks,
                                                    SharedWeights, init_centroids, kmeans_1d,
                                                    layer_stds, masks_from_zeros, prunable, prune)
from metaq_utils.coding.fileformat import encode_compressed, read_compressed
from metaq_utils.nn.data import normalize
from metaq_utils.nn.networks import build_model
from metaq_utils.nn.training import evaluate
from metaq_utils.pipeline import model_from_compressed


def _model(arch="lenet300100", seed=0):
    torch.manual_seed(seed)
    return build_model(arch)


def _batch(mnist, n=64, start=0):
    return normalize(mnist.train_x[start:start + n]), mnist.train_y[start:start + n]


# ------------------------------------------------------------------------------------------------
# 1. pruning


def test_threshold_is_quality_times_each_layers_std():
    model = _model("lenet5")
    with torch.no_grad():
        model.fc2.weight.mul_(7.0)          # layers with very different spreads
    dense = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    stds = layer_stds(model)
    assert set(stds) == {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"}
    for name, s in stds.items():
        assert s == pytest.approx(np.std(dense[name].astype(np.float64)), rel=1e-12)   # population std
    dc = DeepCompression(DeepCompressionConfig(quality=0.8, rounds=2), data=None)
    masks, thresholds = dc.prune(model, stds, round_=2)     # ramp: q_2 = 0.8 · 2/2
    params = dict(model.named_parameters())
    for name in stds:
        w = dense[name]
        t = 0.8 * np.std(w.astype(np.float64))
        assert thresholds[name] == pytest.approx(t, rel=1e-12)
        np.testing.assert_array_equal(masks[name].numpy(), np.abs(w) >= t)
        got = params[name].detach().numpy()
        np.testing.assert_array_equal(got, np.where(np.abs(w) >= t, w, 0.0))
        assert not np.signbit(got[got == 0]).any()          # +0.0, never −0.0
        assert 0.2 < masks[name].float().mean() < 0.8       # q = 0.8 keeps roughly half of a bell curve
    assert thresholds["fc2.weight"] > 3 * thresholds["fc1.weight"]
    for name in ("conv1.bias", "fc1.bias", "fc3.bias"):      # biases are never pruned
        np.testing.assert_array_equal(params[name].detach().numpy(), dense[name])


def test_quality_schedule_and_masks_only_shrink():
    cfg = DeepCompressionConfig(quality=1.5, rounds=3, layer_quality=(("conv1.weight", 0.6),))
    assert [cfg.quality_at("fc1.weight", r) for r in (1, 2, 3)] == pytest.approx([0.5, 1.0, 1.5])
    assert cfg.quality_at("conv1.weight", 3) == pytest.approx(0.6)
    const = DeepCompressionConfig(quality=1.5, rounds=3, quality_schedule="constant")
    assert [const.quality_at("fc1.weight", r) for r in (1, 2, 3)] == [1.5, 1.5, 1.5]
    model = _model()
    stds = layer_stds(model)
    first = prune(model, {n: 1.0 * s for n, s in stds.items()})
    with torch.no_grad():                    # a pruned weight that "regrew" must not come back
        model.fc1.weight.add_(10.0)
    second = prune(model, {n: 0.1 * s for n, s in stds.items()}, first)
    for n in first:
        assert not (second[n] & ~first[n]).any()
    assert (model.fc1.weight[~first["fc1.weight"]] == 0).all()


def test_pruned_weights_stay_exactly_zero_under_adam(mnist):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    x, y = _batch(mnist, 128)

    def step(m, o, reg=None, after_step=False):
        o.zero_grad()
        F.cross_entropy(m(x), y).backward()
        if reg is not None:
            reg.after_backward(m)
        o.step()
        if after_step:
            reg.after_step(m)                # what train() calls after every optimizer step

    for _ in range(3):                      # dense steps: Adam's moments are non-zero everywhere
        step(model, opt)
    masks = prune(model, {n: 1.0 * s for n, s in layer_stds(model).items()})
    control = copy.deepcopy(model)
    control_opt = torch.optim.Adam(control.parameters(), lr=1e-2, weight_decay=1e-4)
    control_opt.load_state_dict(opt.state_dict())
    before = {n: p.detach().clone() for n, p in prunable(model).items()}
    reg = FixedMasks(masks)
    for _ in range(5):
        step(model, opt, reg, after_step=True)
        step(control, control_opt, reg)     # zeroed gradients only, no re-application
    for name, p in prunable(model).items():
        m = masks[name]
        assert (p[~m] == 0).all() and not torch.signbit(p[~m]).any()
        assert not torch.equal(p[m], before[name][m])        # the survivors were trained
    # the control shows why the mask is re-applied after the step: Adam's momentum moves them
    assert any((p[~masks[n]] != 0).any() for n, p in prunable(control).items())


def test_retraining_with_the_training_loop_keeps_masks(small_mnist):
    model = _model()
    cfg = DeepCompressionConfig(quality=1.0, rounds=1, retrain_epochs=1, retrain_lr=1e-3)
    dc = DeepCompression(cfg, small_mnist)
    masks, _ = dc.prune(model, layer_stds(model), 1)
    before = copy.deepcopy(model)
    history = dc.retrain(model, "lenet300100", masks, 1)
    assert history and history[-1]["density"] == pytest.approx(
        sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()))
    for name, p in prunable(model).items():
        assert (p[~masks[name]] == 0).all()
        assert not torch.equal(p[masks[name]], dict(before.named_parameters())[name][masks[name]])
    np.testing.assert_array_equal(masks_from_zeros(model)["fc2.weight"].numpy(), masks["fc2.weight"].numpy())


# ------------------------------------------------------------------------------------------------
# 3. k-means initialisations and Lloyd


def test_forgy_picks_existing_weights_at_random():
    w = np.random.default_rng(1).normal(size=1000)
    a = init_centroids(w, 16, "forgy", np.random.default_rng(0))
    b = init_centroids(w, 16, "forgy", np.random.default_rng(1))
    assert a.size == 16 and np.isin(a, w).all() and np.unique(a).size == 16   # distinct weights
    assert np.all(np.diff(a) > 0)
    assert not np.array_equal(a, b)


def test_linear_is_equally_spaced_between_min_and_max():
    w = np.random.default_rng(2).normal(size=5000) ** 3
    c = init_centroids(w, 9, "linear")
    assert c[0] == w.min() and c[-1] == w.max()
    np.testing.assert_allclose(np.diff(c), (w.max() - w.min()) / 8, rtol=1e-12)


def test_density_is_equally_spaced_in_the_cdf_of_a_known_distribution():
    k = 8
    w = np.random.default_rng(3).normal(size=200_000)
    c = init_centroids(w, k, "density")
    levels = (np.arange(k) + 0.5) / k
    np.testing.assert_allclose(c, norm.ppf(levels), atol=0.02)              # Φ⁻¹ of equally spaced levels
    np.testing.assert_allclose((w[:, None] <= c).mean(0), levels, atol=1e-4)  # empirical CDF at them


def test_density_follows_the_peaks_linear_covers_the_range():
    # bimodal like pruned weights (seed 002): density/forgy sit near the peaks, linear spans the range
    rng = np.random.default_rng(4)
    w = np.concatenate([rng.normal(-1, 0.1, 5000), rng.normal(1, 0.1, 5000), rng.uniform(-4, 4, 50)])
    near_peaks = lambda c: np.mean(np.minimum(np.abs(c - 1), np.abs(c + 1)) < 0.3)  # noqa: E731
    assert near_peaks(init_centroids(w, 16, "density")) == 1.0
    assert near_peaks(init_centroids(w, 16, "forgy", rng)) >= 0.8
    assert near_peaks(init_centroids(w, 16, "linear")) <= 0.4


@pytest.mark.parametrize("init", ["forgy", "density", "linear"])
def test_kmeans_is_a_fixed_point_of_lloyd(init):
    w = np.random.default_rng(5).laplace(size=3000)
    c, labels = kmeans_1d(w, 16, init, np.random.default_rng(0))
    assert c.size <= 16 and np.all(np.diff(c) > 0)
    assert np.array_equal(labels, np.argmin(np.abs(w[:, None] - c[None, :]), axis=1))   # nearest centroid
    np.testing.assert_allclose(c, [w[labels == j].mean() for j in range(c.size)], rtol=1e-10)
    few = np.array([0.5, -0.25, 0.5, 2.0])
    c2, l2 = kmeans_1d(few, 4, init)
    np.testing.assert_array_equal(c2[l2], few)      # ≤ k distinct values: exact


# ------------------------------------------------------------------------------------------------
# 4. shared gradients and fine-tuning


def test_shared_gradient_equals_the_centroid_gradient_of_autograd(mnist):
    model = _model()
    masks = prune(model, {n: 1.0 * s for n, s in layer_stds(model).items()})
    dc = DeepCompression(DeepCompressionConfig(fc_bits=3, bias_bits=2), data=None)
    groups = dc.share(model, masks)
    x, y = _batch(mnist, 256)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    SharedWeights(groups).after_backward(model)
    # reference: the same network written as a function of the centroids, differentiated by autograd
    cs = [torch.tensor(g.centroids, dtype=torch.float32, requires_grad=True) for g in groups]
    params = {}
    for g, c in zip(groups, cs):
        flat = torch.zeros(g.labels.numel())
        flat = flat.index_put((torch.nonzero(g.keep).squeeze(1),), c[g.labels[g.keep]])
        start = 0
        for n in g.names:
            shape = dict(model.named_parameters())[n].shape
            params[n] = flat[start:start + shape.numel()].view(shape)
            start += shape.numel()
    F.cross_entropy(torch.func.functional_call(model, params, (x,)), y).backward()
    named = dict(model.named_parameters())
    for g, c in zip(groups, cs):
        got = torch.cat([named[n].grad.reshape(-1) for n in g.names])
        expected = torch.zeros_like(got)
        expected[g.keep] = c.grad[g.labels[g.keep]]
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)
        assert (got[~g.keep] == 0).all()


def test_fine_tuning_keeps_sharing_and_zeros(small_mnist):
    model = _model()
    masks = prune(model, {n: 1.2 * s for n, s in layer_stds(model).items()})
    cfg = DeepCompressionConfig(fc_bits=3, bias_bits=3, finetune_epochs=1, finetune_lr=1e-3)
    dc = DeepCompression(cfg, small_mnist)
    groups = dc.share(model, masks)
    after_share = {n: p.detach().clone() for n, p in model.named_parameters()}
    dc.fine_tune(model, "lenet300100", groups)
    params = dict(model.named_parameters())
    for name, m in masks.items():
        w = params[name].detach()
        assert (w[~m] == 0).all()
        values = torch.unique(w[m])
        assert 1 <= values.numel() <= 2 ** cfg.fc_bits
    biases = torch.cat([params[n].detach() for n in ("fc1.bias", "fc2.bias", "fc3.bias")])
    assert torch.unique(biases).numel() <= 2 ** cfg.bias_bits
    assert any(not torch.equal(after_share[n], p) for n, p in params.items())   # the centroids moved


# ------------------------------------------------------------------------------------------------
# 5. the compressed file


@pytest.mark.parametrize("biases", ["kmeans", "float32"])
def test_pipeline_file_round_trips_and_decodes_to_the_same_accuracy(small_mnist, biases):
    dense = _model()
    cfg = DeepCompressionConfig(quality=1.5, rounds=2, retrain_epochs=1, fc_bits=4, biases=biases,
                                finetune_epochs=1, codec="huffman")
    result, decoded = DeepCompression(cfg, small_mnist).run(dense, "lenet300100")
    data = result.file_bytes
    assert result.file_bits == 8 * len(data)
    cm = read_compressed(data, expected_arch="lenet300100")
    for p, t in zip(decoded.parameters(), cm.tensors):
        assert np.array_equal(p.detach().numpy().view(np.uint32), t.view(np.uint32))
    # bit for bit: re-encoding the decoded network with the same groups gives the same file
    dc = DeepCompression(cfg, small_mnist)
    assert encode_compressed("lenet300100", cm.tensors, dc.group_specs(decoded)) == data
    acc = evaluate(model_from_compressed(cm), small_mnist.test_x, small_mnist.test_y)["accuracy"]
    assert acc == result.accuracy                                  # the decoded file's test accuracy
    assert result.val_accuracy == result.accuracy_before_coding   # lossless: decoded = encoded, on validation
    assert result.selection == "validation"
    assert acc > 0.5                      # trained, not garbage (2,048 images, a few epochs)
    # groups: one sparse group per weight matrix with at most 2**bits values, then the biases
    sparse = [g for g in cm.groups if g.mode == "sparse"]
    assert [g.tensors for g in sparse] == [(0,), (2,), (4,)]
    for g in sparse:
        assert g.codebook.size <= 2 ** cfg.fc_bits and g.codec == "huffman" and g.index_codec == "huffman"
        w = cm.tensors[g.tensors[0]].ravel()
        gaps = np.diff(np.flatnonzero(w), prepend=-1)
        assert g.n_entries == gaps.size + int(((gaps - 1) // g.max_gap).sum())   # survivors + filler zeros
    (bias_group,) = [g for g in cm.groups if g.tensors == (1, 3, 5)]
    if biases == "float32":
        assert bias_group.mode == "float32" and bias_group.payload_bytes == 4 * 410
        assert np.unique(cm.tensors[1]).size > 2 ** cfg.bias_bits     # stored unquantized
    else:
        assert bias_group.mode == "dense" and bias_group.codebook.size <= 2 ** cfg.bias_bits
    assert result.density < 0.5 and result.compression_ratio > 10


def test_every_baseline_config_round_trips_through_json():
    """The shared BaselineConfig.to_dict/from_dict: JSON-safe, equal (and equally hashed) after the
    round trip, tuples restored by each config's __post_init__, unknown keys ignored."""
    import json

    from metaq_utils.baselines.ana import ANAConfig
    from metaq_utils.baselines.deep_compression import DeepCompressionConfig
    from metaq_utils.baselines.inq import INQConfig
    from metaq_utils.baselines.lc_mix import LCConfig

    for cfg in (DeepCompressionConfig(layer_bits=(("fc1.weight", 3),)), INQConfig(fractions=(0.3, 1.0)),
                ANAConfig(quantizer="uniform"), LCConfig()):
        d = json.loads(json.dumps(cfg.to_dict()))
        back = type(cfg).from_dict({**d, "not_a_field": 1})
        assert back == cfg and hash(back) == hash(cfg)
