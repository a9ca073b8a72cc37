"""Rate-aware quantization (metaq_utils.recipes.rate_aware) against independent references: the
rate model against the bytes the context codec actually writes, the assignment against a brute
force over every joint assignment, lambda = 0 against plain rounding, and a bit-exact file round
trip of the fine-tuned network that decodes to the reported accuracy. (No gradient is added: the
quantizer's gradient is the headline's straight-through one, tested in test_recipe_prune_quantize.)"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from metaq_utils.coding.context import ContextCodec
from metaq_utils.coding.fileformat import read_compressed, write_compressed
from metaq_utils.nn.networks import build_model, model_from_compressed
from metaq_utils.recipes.prune_quantize import STEQuantizer, file_groups, layer_steps
from metaq_utils.recipes.rate_aware import RateAwareConfig, RateAwareQuantizer, rate_table, rdo_levels


def _sparse_levels(rng, shape, density, scale=2.5):
    n = int(np.prod(shape))
    return (np.rint(rng.laplace(0, scale, n)).astype(np.int64) * (rng.random(n) < density)).reshape(shape)


CASES = [((20, 30), 0.1), ((6, 1, 5, 5), 0.5), ((16, 6, 5, 5), 0.2), ((84, 120), 0.08), ((50,), 0.3), ((10, 84), 0.9)]


@pytest.mark.parametrize("shape,density", CASES)
def test_rate_model_equals_the_coders_real_cost(shape, density):
    """Ideal bits of the table (header varints included) vs the payload the encoder writes with
    value mode 0: equal up to the range coder's termination (< 32 bits, never below); the
    encoder's chosen flag scheme and limit are the table's; with every value mode the real
    payload is no larger."""
    rng = np.random.default_rng(hash(shape) % 2**32)
    lv = _sparse_levels(rng, shape, density)
    K = int(np.abs(lv).max())
    tab = rate_table(lv, shape)
    model = tab.bits_of(lv)
    pay = ContextCodec().encode(lv.ravel() + K, 2 * K + 1, shapes=[shape], vmodes=(0,))
    real = 8 * len(pay)
    assert model - 1e-6 <= real < model + 32, (real, model)
    cfg = pay[0]                                               # one-byte cfg varint here
    assert cfg % 7 - 1 == tab.scheme
    assert (cfg // 49) == list((2**13, 2**8, 2**10, 2**6)).index(tab.limit)
    full = 8 * len(ContextCodec().encode(lv.ravel() + K, 2 * K + 1, shapes=[shape]))
    assert full <= real


def test_rate_model_per_symbol_costs_sum_to_the_model_and_change_of_one_symbol():
    """The cost of one changed symbol at the stream's end (no later symbol depends on it) is exactly
    the change of the coder's ideal length when the encoder keeps its flag configuration, and an
    upper bound when it switches to a cheaper one (the old configuration is still a candidate)."""
    equal = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        shape = (30, 40)
        lv = _sparse_levels(rng, shape, 0.15 + 0.05 * seed).ravel()
        lv[-1] = 0
        tab = rate_table(lv, shape)
        R = tab.costs()
        own = R[np.arange(lv.size), lv - tab.lo].sum() + tab.header_bits
        assert own == pytest.approx(tab.bits_of(lv), abs=1e-9)
        k = int(lv[lv != 0][0])                                # a level inside the band
        lv2 = lv.copy()
        lv2[-1] = k
        d_model = R[-1, k - tab.lo] - R[-1, 0 - tab.lo]
        t2 = rate_table(lv2, shape)
        d_real = t2.bits_of(lv2) - tab.bits_of(lv)
        assert d_real <= d_model + 1e-9
        if (t2.scheme, t2.stride, t2.limit, t2.header_bits) == (tab.scheme, tab.stride, tab.limit, tab.header_bits):
            assert d_real == pytest.approx(d_model, abs=1e-9)
            equal += 1
    assert equal >= 3


@pytest.mark.parametrize("lam", [0.0, 0.05, 0.3, 2.0])
def test_assignment_equals_brute_force_over_joint_assignments(lam):
    rng = np.random.default_rng(7)
    lv = np.array([0, 2, 0, -1, 0, 0, 1, 0])
    tab = rate_table(lv, (2, 4))
    delta = 0.3
    w = (lv + rng.uniform(-0.6, 0.6, lv.size)) * delta
    mask = np.array([1, 1, 0, 1, 1, 1, 1, 0], dtype=bool)
    got = rdo_levels(w, delta, tab, lam, mask)
    ks = range(tab.lo, tab.hi + 1)
    best, arg = None, None
    for combo in itertools.product(*[ks if m else [0] for m in mask]):
        c = np.array(combo)
        obj = float(((w / delta - c) ** 2).sum()) + lam * (tab.bits_of(c) - tab.header_bits)
        if best is None or obj < best - 1e-12:
            best, arg = obj, c
    assert np.array_equal(got, arg)
    if lam == 0.0:
        assert np.array_equal(got, np.where(mask, np.rint(w / delta), 0))


def test_rdo_lowers_the_real_coded_size():
    rng = np.random.default_rng(11)
    shape = (60, 200)
    delta = 0.2
    lv = _sparse_levels(rng, shape, 0.1)
    w = (lv + rng.uniform(-0.5, 0.5, lv.shape) * (lv != 0)) * delta
    mask = lv != 0
    rounded = rdo_levels(w, delta, rate_table(lv, shape), 0.0, mask)
    rdo = rdo_levels(w, delta, rate_table(rounded, shape), 0.5, mask)
    K = int(np.abs(rounded).max())
    real = [8 * len(ContextCodec().encode(x.ravel() + K, 2 * K + 1, shapes=[shape])) for x in (rounded, rdo)]
    assert real[1] < real[0]
    dist = [float(((w.ravel() / delta - x) ** 2).sum()) for x in (rounded, rdo)]
    assert dist[1] > dist[0]


def test_bad_input():
    tab = rate_table(np.array([0, 1, 0, 0]), (4,))
    with pytest.raises(ValueError, match="lambda"):
        rdo_levels(np.zeros(4), 0.1, tab, -1.0)
    with pytest.raises(ValueError, match="delta"):
        rdo_levels(np.zeros(4), 0.0, tab, 0.1)
    with pytest.raises(ValueError, match="positions"):
        rdo_levels(np.zeros(5), 0.1, tab, 0.1)
    with pytest.raises(ValueError, match="shape"):
        rate_table(np.zeros(4, dtype=int), (5,))
    with pytest.raises(ValueError, match="lam"):
        RateAwareConfig(lam=float("nan"))


def _sparse_lenet(seed=0, density=0.1):
    torch.manual_seed(seed)
    model = build_model("lenet5")
    masks = {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("weight"):
                masks[n] = torch.rand_like(p) < density
                p.mul_(masks[n])
    return model, masks


def test_lambda_zero_is_the_rounding_quantizer_and_file_round_trip(tmp_path):
    model, masks = _sparse_lenet()
    steps = layer_steps(model, 0.5, masks)
    m0 = build_model("lenet5")
    m0.load_state_dict(model.state_dict())
    RateAwareQuantizer(model, steps, masks, lam=0.0)
    STEQuantizer(m0, steps, masks)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), m0.parameters()))
    m1 = build_model("lenet5")
    m1.load_state_dict(m0.state_dict())
    q = RateAwareQuantizer(m1, steps, masks, lam=0.5)
    tensors = [p.detach().numpy() for p in m1.parameters()]
    path = tmp_path / "m.mtq"
    bits = [write_compressed(path, "lenet5", tensors, file_groups(m1, steps)),
            write_compressed(tmp_path / "r.mtq", "lenet5", [p.detach().numpy() for p in m0.parameters()],
                             file_groups(m0, steps))]
    dec = model_from_compressed(read_compressed(path))
    assert all(np.array_equal(a, b.detach().numpy()) for a, b in zip(tensors, dec.parameters()))
    assert bits[0] < bits[1]                                   # the rate term lowers the file
    for n, m in masks.items():                                 # masks hold
        assert not dict(m1.named_parameters())[n][~m].any()
    st = q.state_dict()
    q2 = RateAwareQuantizer(m1, steps, masks, lam=0.5)
    q2.load_state_dict(st)
    assert all(np.array_equal(q.table_levels[n], q2.table_levels[n]) for n in masks)


def test_run_rate_aware_end_to_end(tmp_path, small_mnist):
    """One epoch on the 2,048-image subset: the file decodes bit-exactly to the reported network
    and accuracies; a second call resumes as finished."""
    from metaq_utils.nn.checkpoints import save_checkpoint
    from metaq_utils.nn.training import TrainConfig, evaluate, train
    from metaq_utils.pipeline import load_any
    from metaq_utils.recipes.rate_aware import run_rate_aware

    torch.manual_seed(0)
    dense = build_model("lenet5")
    train(dense, small_mnist, TrainConfig(epochs=1, lr=2e-3, augment=False), progress=False)
    save_checkpoint(tmp_path / "dense.pt", dense, "lenet5", config={})
    model, masks = _sparse_lenet()
    model.load_state_dict({k: v * masks[k] if k in masks else v for k, v in dense.state_dict().items()})
    save_checkpoint(tmp_path / "start.pt", model, "lenet5", config={})
    steps = layer_steps(model, 0.5, masks)
    cfg = RateAwareConfig(lam=0.2, epochs=1, refresh=10)
    res = run_rate_aware(tmp_path / "start.pt", tmp_path / "dense.pt", steps, small_mnist, cfg, tmp_path / "run")
    net, arch, bits, n = load_any(tmp_path / "run" / "model.mtq")
    assert (arch, bits, n) == ("lenet5", res["file_bits"], 44426)
    assert evaluate(net, small_mnist.val_x, small_mnist.val_y)["accuracy"] == res["val_accuracy"]
    assert evaluate(net, small_mnist.test_x, small_mnist.test_y)["accuracy"] == res["test_accuracy"]
    for name, p in net.named_parameters():
        k = p.detach().double() / steps[name]
        assert torch.allclose(k, torch.round(k), atol=1e-4), name
        if name in masks:
            assert not p[~masks[name]].any()
    again = run_rate_aware(tmp_path / "start.pt", tmp_path / "dense.pt", steps, small_mnist, cfg, tmp_path / "run")
    assert again["file_bits"] == res["file_bits"] and again["val_accuracy"] == res["val_accuracy"]
