"""ANA baseline: the noisy-expectation quantizer (against Monte Carlo), the noise schedule (zero by
the last epoch, lower layers first), hardening, and the file round trip."""
import numpy as np
import pytest
import torch

from metaq_utils.baselines.ana import (ANA, ANAConfig, NoiseSchedule, hard_quantize, smoothed_quantizer,
                                       weight_levels)
from metaq_utils.baselines.inq import on_levels
from metaq_utils.coding.fileformat import read_compressed
from metaq_utils.nn.networks import build_model

NAMES = ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"]


def test_smoothed_quantizer_is_the_expectation_under_uniform_noise():
    levels = torch.tensor([-0.5, 0.0, 0.25, 1.0])
    w = torch.linspace(-1.2, 1.5, 41, dtype=torch.float64)
    sigma = 0.2
    gen = torch.Generator().manual_seed(0)
    noise = (torch.rand(200_000, 1, generator=gen, dtype=torch.float64) * 2 - 1) * sigma
    mc = hard_quantize(w.unsqueeze(0) + noise, levels.double()).mean(0)
    np.testing.assert_allclose(smoothed_quantizer(w, levels.double(), sigma).numpy(), mc.numpy(), atol=5e-3)
    np.testing.assert_array_equal(smoothed_quantizer(w, levels.double(), 0.0).numpy(),
                                  hard_quantize(w, levels.double()).numpy())
    x = torch.tensor([0.1], dtype=torch.float64, requires_grad=True)
    smoothed_quantizer(x, levels.double(), sigma).sum().backward()
    assert x.grad.item() > 0                       # differentiable while there is noise


def test_hard_quantizer_gives_exact_levels_ties_upward():
    levels = torch.tensor([-0.3, 0.0, 0.3])
    q = hard_quantize(torch.tensor([-0.15, 0.15, 0.149, -0.151, 2.0]), levels)
    assert q.tolist() == pytest.approx([0.0, 0.3, 0.0, -0.3, 0.3])
    assert on_levels(q, levels.numpy()).all()


@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_noise_reaches_zero_by_the_last_epoch_lower_layers_first(shape):
    epochs, steps_per_epoch = 4, 10
    s = NoiseSchedule(NAMES, {n: 1.0 for n in NAMES}, epochs * steps_per_epoch, shape=shape,
                      order="lower_first", anneal_end=(epochs - 1) / epochs)
    taus = np.linspace(0, 1, 401)
    curves = {n: np.array([s.sigma(n, t) for t in taus]) for n in NAMES}
    for n in NAMES:
        assert curves[n][0] == 1.0                                   # σ0 before the window opens
        assert (np.diff(curves[n]) <= 1e-15).all()                  # non-increasing
        assert (curves[n][taus >= (epochs - 1) / epochs] == 0.0).all()   # the whole last epoch is hard
    zero_from = [taus[np.flatnonzero(curves[n] == 0.0)[0]] for n in NAMES]
    assert zero_from == sorted(zero_from) and len(set(zero_from)) == len(NAMES)   # lower layers harden first
    t_mid = s.window(NAMES[1])[1]                  # conv2 just hardened: fc layers still noisy
    assert s.sigma(NAMES[0], t_mid) == 0 and s.sigma(NAMES[1], t_mid) == 0 and s.sigma(NAMES[2], t_mid) > 0
    up = NoiseSchedule(NAMES, {n: 1.0 for n in NAMES}, 40, shape=shape, order="upper_first", anneal_end=0.75)
    assert up.window(NAMES[-1])[1] < up.window(NAMES[0])[1]


def test_ana_run_hardens_exactly_and_file_round_trips(small_mnist):
    torch.manual_seed(0)
    pretrained = build_model("lenet5")
    ana = ANA(ANAConfig(epochs=3, quantizer="uniform", bits=2, biases="float32"), small_mnist)
    run, decoded = ana.run(pretrained, "lenet5")
    last = run.history[[h["stage"] for h in run.history].index("anneal")]["epochs"][-1]
    assert all(last[f"sigma/{n}"] == 0.0 for n in NAMES)          # noise exactly zero at the end
    first = run.history[[h["stage"] for h in run.history].index("anneal")]["epochs"][0]
    assert first["sigma/conv1.weight"] == 0.0 and first["sigma/fc3.weight"] > 0   # anneal_end = 2/3: at τ = 1/3 conv1 is hard, fc3 not yet
    cm = read_compressed(run.file_bytes, expected_arch="lenet5")
    assert cm.file_bits == run.file_bits
    for (name, p), t in zip(decoded.named_parameters(), cm.tensors):
        np.testing.assert_array_equal(p.detach().numpy().view(np.uint32), t.view(np.uint32))
        if p.ndim >= 2:
            lv = np.array(run.extra["levels"][name], np.float32)
            assert lv.size == 3 and on_levels(t, lv).all()
    # the trained (parametrized, σ = 0) network and the decoded one compute the same function
    anneal = run.history[[h["stage"] for h in run.history].index("anneal")]
    assert run.history[-1]["val_accuracy"] == anneal["val_accuracy"] == run.val_accuracy


def test_levels_kinds():
    w = torch.tensor([0.9, -0.1, 0.05, -0.6, 0.3])
    t = weight_levels(w, "ternary")
    assert t.size == 3 and t[1] == 0 and t[2] == -t[0] > 0
    np.testing.assert_allclose(weight_levels(w, "uniform", 3), np.arange(-3, 4) * 0.3, rtol=1e-6)
    with pytest.raises(ValueError):
        weight_levels(w, "binary")
