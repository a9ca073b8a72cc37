"""INQ baseline: the powers-of-two set (INQ eq. 2-4), the magnitude partition, frozen weights that
stay frozen and on the grid while the rest retrain, and the file round trip."""

import numpy as np
import pytest
import torch

from metaq_utils.baselines.deep_compression import prunable
from metaq_utils.baselines.inq import (INQ, FrozenWeights, INQConfig, on_levels, partition, pow2_levels,
                                       project_pow2)
from metaq_utils.coding.fileformat import read_compressed
from metaq_utils.nn.networks import build_model
from metaq_utils.nn.training import TrainConfig, train


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("lenet5")


def test_pow2_levels_follow_the_paper():
    # s = 0.3: n1 = floor(log2(0.4)) = -2; b = 5: n2 = n1 + 1 - 2^3 = -9
    lv = pow2_levels(0.3, 5)
    pos = 2.0 ** np.arange(-9, -1)
    np.testing.assert_array_equal(lv, np.concatenate([-pos[::-1], [0.0], pos]).astype(np.float32))
    assert lv.size == 2 ** 4 + 1
    np.testing.assert_array_equal(pow2_levels(1.0, 2), np.array([-1.0, 0.0, 1.0], np.float32))  # ternary
    with pytest.raises(ValueError):
        pow2_levels(1.0, 1)


def test_projection_is_nearest_level_ties_to_larger_magnitude():
    lv = pow2_levels(0.3, 4)                       # {0, ±2^-5 .. ±2^-2}
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, 5000).astype(np.float32)
    ties = np.array([0.5 * 2 ** -5, 1.5 * 2 ** -4, -1.5 * 2 ** -3, 0.37], np.float32)
    w = np.concatenate([w, ties])
    q = project_pow2(w, lv)
    # brute-force reference: nearest level, ties to the larger |level|
    d = np.abs(w[:, None].astype(np.float64) - lv[None, :].astype(np.float64))
    best = np.where(np.isclose(d, d.min(1, keepdims=True), rtol=0, atol=0), np.abs(lv)[None, :], -1)
    ref = lv[np.argmax(best, axis=1)]
    np.testing.assert_array_equal(q, ref)
    np.testing.assert_array_equal(q[-4:], np.array([2 ** -5, 2 ** -3, -2 ** -2, 2 ** -2], np.float32))
    assert not np.signbit(q[q == 0]).any()


def test_partition_freezes_largest_unfrozen_weights():
    w = torch.tensor([0.1, -0.9, 0.5, 0.05, -0.3, 0.7, 0.2, -0.01])
    m1 = partition(w, torch.zeros(8, dtype=torch.bool), 0.5)
    assert set(torch.nonzero(m1).ravel().tolist()) == {1, 2, 4, 5}
    w2 = w.clone()
    w2[0] = 5.0                                     # a weight that grew after retraining
    m2 = partition(w2, m1, 0.75)
    assert int(m2.sum()) == 6 and bool((m2 | ~m1).all())   # superset of m1
    assert set(torch.nonzero(m2 & ~m1).ravel().tolist()) == {0, 6}


def test_frozen_weights_stay_frozen_and_on_grid_while_the_rest_trains(small_mnist):
    model = _model()
    inq = INQ(INQConfig(fractions=(0.5, 1.0), epochs_per_step=1), small_mnist)
    levels = inq.levels(model)
    masks = inq.quantize_step(model, levels, {}, 0.5)
    before = {n: p.detach().clone() for n, p in prunable(model).items()}
    for n, p in prunable(model).items():
        assert int(masks[n].sum()) == round(0.5 * p.numel())
        assert on_levels(p[masks[n]], levels[n]).all()
    # more training steps, with Adam and weight decay (both would move a frozen weight)
    params = dict(model.named_parameters())
    reg = FrozenWeights(masks, {n: params[n] for n in masks})
    cfg = TrainConfig(arch="lenet5", epochs=1, batch_size=64, optimizer="adam", lr=1e-2, weight_decay=1e-2,
                      augment=False, seed=1)
    train(model, small_mnist, cfg, regularizer=reg, progress=False)        # calls reg.after_step after each step
    for n, p in prunable(model).items():
        m = masks[n]
        np.testing.assert_array_equal(p.detach()[m].numpy().view(np.uint32), before[n][m].numpy().view(np.uint32))
        assert on_levels(p.detach()[m], levels[n]).all()
        assert not torch.equal(p.detach()[~m], before[n][~m])      # the others did train


def test_inq_run_ends_on_grid_and_file_round_trips(small_mnist):
    pretrained = _model(3)
    run, decoded = INQ(INQConfig(fractions=(0.5, 0.75, 1.0), epochs_per_step=1, bits=3), small_mnist).run(
        pretrained, "lenet5")
    cm = read_compressed(run.file_bytes, expected_arch="lenet5")
    assert cm.file_bits == run.file_bits == 8 * len(run.file_bytes)
    for (name, p), t in zip(decoded.named_parameters(), cm.tensors):
        np.testing.assert_array_equal(p.detach().numpy().view(np.uint32), t.view(np.uint32))
        if p.ndim >= 2:
            lv = np.array(run.extra["levels"][name], np.float32)
            assert lv.size == 2 ** 2 + 1
            assert on_levels(t, lv).all()
    assert run.val_accuracy == run.accuracy_before_coding      # lossless coding, scored on validation
    assert 0 < run.accuracy <= 1 and run.history[-1]["test_accuracy"] == run.accuracy
    assert [h["stage"] for h in run.history].count("retrain") == 2      # no retraining after 1.0
    # the pretrained model is untouched
    assert torch.equal(pretrained.fc1.weight, _model(3).fc1.weight)
