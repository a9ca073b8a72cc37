"""The headline recipe's parts (metaq_utils.recipes.prune_quantize), each against an independent
reference: finite differences for the distillation gradient, a hand-computed STE step, the cubic
schedule's closed form, and a bit-exact file round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaq_utils.coding.fileformat import read_compressed, write_compressed
from metaq_utils.nn.networks import build_model
from metaq_utils.recipes.prune_quantize import (GradualPruning, RecipeConfig, STEQuantizer, cubic_sparsity,
                                                distillation_loss, file_groups, layer_steps, short_float32,
                                                tensor_grid)


class _Fixed(nn.Module):
    """A 'teacher' that returns fixed logits for each row index stored in xb[:, 0]."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, xb):
        return self.logits[xb[:, 0].long()]


@pytest.mark.parametrize("alpha,T", [(0.0, 4.0), (0.5, 4.0), (0.9, 2.0), (1.0, 1.0)])
def test_distillation_gradient_matches_finite_differences_and_closed_form(alpha, T):
    g = torch.Generator().manual_seed(0)
    n, k = 5, 10
    t = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, k, (n,), generator=g)
    xb = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    loss_fn = distillation_loss(_Fixed(t), temperature=T, alpha=alpha)
    zz = z.clone().requires_grad_(True)
    loss_fn(zz, xb, y).backward()
    # central finite differences, coordinate by coordinate
    eps = 1e-6
    fd = torch.zeros_like(z)
    for i in range(n):
        for j in range(k):
            zp, zm = z.clone(), z.clone()
            zp[i, j] += eps
            zm[i, j] -= eps
            fd[i, j] = (loss_fn(zp, xb, y) - loss_fn(zm, xb, y)) / (2 * eps)
    assert torch.allclose(zz.grad, fd, atol=1e-7, rtol=1e-6)
    closed = ((1 - alpha) * (F.softmax(z, 1) - F.one_hot(y, k)) + alpha * T * (F.softmax(z / T, 1) - F.softmax(t / T, 1))) / n
    assert torch.allclose(zz.grad, closed, atol=1e-10)


def test_distillation_rejects_bad_knobs():
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(_Fixed(torch.zeros(1, 2)), temperature=0)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(_Fixed(torch.zeros(1, 2)), alpha=1.5)


def test_cubic_schedule_closed_form():
    assert cubic_sparsity(0, 100, 0.9) == 0.0
    assert cubic_sparsity(100, 100, 0.9) == 0.9
    assert cubic_sparsity(500, 100, 0.9) == 0.9
    assert cubic_sparsity(50, 100, 0.8) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    vals = [cubic_sparsity(t, 100, 0.9) for t in range(101)]
    assert all(a <= b for a, b in zip(vals, vals[1:]))


def test_gradual_pruning_reaches_the_kept_fractions_by_magnitude_and_never_regrows():
    torch.manual_seed(0)
    model = build_model("lenet5")
    keep = {"fc1.weight": 0.1, "conv2.weight": 0.25}
    pr = GradualPruning(model, keep, total_steps=20, every=5)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    pruned_before: dict[str, torch.Tensor] = {}
    for step in range(25):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        pr.after_backward(model)
        for n, p in model.named_parameters():
            if n in keep:
                assert torch.all(p.grad[~pr.masks[n]] == 0)
        opt.step()
        pr.after_step(model)
        for n, p in model.named_parameters():
            if n in keep:
                zero = p.detach() == 0
                if n in pruned_before:
                    assert torch.all(zero[pruned_before[n]]), "a pruned weight came back"
                pruned_before[n] = zero.clone()
    params = dict(model.named_parameters())
    for n, k in keep.items():
        assert int(pr.masks[n].sum()) == round(k * params[n].numel())
        assert int((params[n] != 0).sum()) == round(k * params[n].numel())
    assert int((params["fc2.weight"] == 0).sum()) == 0          # untouched tensors stay dense


def test_gradual_pruning_masks_by_magnitude():
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.1, -3.0, 0.5, -0.2]]))
    pr = GradualPruning(model, {"weight": 0.5}, total_steps=0)
    pr.update_masks(model)
    assert pr.masks["weight"].tolist() == [[False, True, True, False]]
    with pytest.raises(ValueError, match="kept fractions"):
        GradualPruning(model, {"weight": 0.0}, total_steps=1)
    with pytest.raises(ValueError, match="no parameter"):
        GradualPruning(model, {"nope": 0.5}, total_steps=1)


def test_ste_step_by_hand():
    """One SGD step: the gradient is taken at q(w) and applied to the shadow w."""
    model = nn.Linear(3, 1, bias=False)
    w0 = torch.tensor([[0.26, -0.74, 0.04]])
    with torch.no_grad():
        model.weight.copy_(w0)
    masks = {"weight": torch.tensor([[True, True, False]])}
    q = STEQuantizer(model, {"weight": 0.5}, masks)
    assert model.weight.detach().tolist() == [[0.5, -0.5, 0.0]]       # round(w/Δ)·Δ, masked
    x = torch.tensor([[1.0, 2.0, 3.0]])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    out = model(x).sum()                       # d out / d w = x, at the quantized point
    out.backward()
    q.after_backward(model)
    assert torch.allclose(model.weight.detach(), torch.tensor([[0.26, -0.74, 0.0]]))   # shadow under the step
    assert model.weight.grad.tolist() == [[1.0, 2.0, 0.0]]                           # pruned: no gradient
    opt.step()
    q.after_step(model)
    shadow = torch.tensor([[0.26 - 0.1, -0.74 - 0.2, 0.0]])
    assert torch.allclose(q.shadow["weight"], shadow)
    assert model.weight.detach().tolist() == [[0.0, -1.0, 0.0]]     # 0.16 → 0; −0.94 → −1.0


def test_ste_gradient_is_the_gradient_at_the_quantized_point():
    """Finite differences of the loss around q(w) equal the gradient the STE hands the optimizer."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    steps = {n: 0.125 for n, _ in model.named_parameters()}
    q = STEQuantizer(model, steps, {})
    x = torch.randn(5, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (5,))
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    q.after_backward(model)
    w = model[0].weight
    qw = q.quantized("0.weight", q.shadow["0.weight"])
    eps = 1e-6
    for (i, j) in [(0, 0), (1, 3), (3, 5)]:
        vals = []
        for s in (+1, -1):
            m2 = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3)).double()
            m2.load_state_dict({n: q.quantized(n, q.shadow[n]) for n in steps})
            with torch.no_grad():
                m2[0].weight[i, j] = qw[i, j] + s * eps
            vals.append(F.cross_entropy(m2(x), y).item())
        assert w.grad[i, j].item() == pytest.approx((vals[0] - vals[1]) / (2 * eps), rel=1e-5, abs=1e-9)


def test_layer_steps_and_bad_input():
    model = build_model("lenet5")
    masks = {"fc1.weight": torch.rand(120, 256) < 0.1}
    steps = layer_steps(model, 0.5, masks)
    w = model.fc1.weight.detach()[masks["fc1.weight"]]
    assert steps["fc1.weight"] == pytest.approx(0.5 * float(w.std()), rel=3e-4)
    assert steps["fc1.bias"] == steps["fc1.weight"]
    with pytest.raises(ValueError, match="step multiplier"):
        layer_steps(model, -1.0, masks)
    with pytest.raises(ValueError, match="fewer than 2"):
        layer_steps(model, 0.5, {"fc1.weight": torch.zeros(120, 256, dtype=torch.bool)})
    with pytest.raises(ValueError, match="quantization steps"):
        STEQuantizer(model, {"fc1.weight": float("nan")}, {})


def test_grid_centres_are_the_multiples_of_the_step():
    d = float(np.float32(0.0371))
    vals = np.array([-3, 0, 1, 2, 0], dtype=np.float64) * d
    g = tensor_grid(vals, d)
    assert g.C == 7
    assert np.allclose(g.v, np.arange(-3, 4) * d)


@pytest.mark.parametrize("codec", ["range"])
def test_file_round_trip_is_bit_exact(tmp_path, codec):
    torch.manual_seed(0)
    model = build_model("lenet5")
    masks = {n: torch.rand_like(p) < 0.1 for n, p in model.named_parameters() if n.endswith("weight")}
    steps = layer_steps(model, 0.5, masks)
    STEQuantizer(model, steps, masks)               # writes q(w) into the model
    tensors = [p.detach().numpy().copy() for p in model.parameters()]
    bits = write_compressed(tmp_path / "m.mtq", "lenet5", tensors, file_groups(model, steps, codec))
    back = read_compressed(tmp_path / "m.mtq")
    assert bits == 8 * (tmp_path / "m.mtq").stat().st_size
    for a, b in zip(tensors, back.tensors):
        assert np.asarray(b).dtype == np.float32
        # the file's centres are kΔ computed in float64 from the float32 grid: equal to float32 k·Δ
        # up to one float32 rounding
        assert np.allclose(a, b, rtol=0, atol=1e-7)
        assert np.array_equal(a == 0, np.asarray(b) == 0)


def test_recipe_config_round_trip_and_validation():
    c = RecipeConfig(density_scale=0.5, step=0.7, alpha=0.3, seed=2)
    assert RecipeConfig.from_dict(c.to_dict()) == c
    assert c.kept_fractions()["fc1.weight"] == pytest.approx(0.05)
    with pytest.raises(ValueError):
        RecipeConfig(density_scale=0)
    with pytest.raises(ValueError):
        RecipeConfig(step=0)


def test_structured_scores_prefer_strong_rows_and_columns():
    model = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.1, 0.1]]))
    plain = GradualPruning(model, {"weight": 0.5}, total_steps=0)
    assert torch.equal(plain.scores(model.weight), model.weight.abs())
    pr = GradualPruning(model, {"weight": 0.5}, total_steps=0, structure=1.0)
    a = model.weight.detach().abs()
    rows = a.norm(dim=1, keepdim=True)
    cols = a.norm(dim=0, keepdim=True)
    expect = a * rows / rows.mean() * cols / cols.mean()
    assert torch.allclose(pr.scores(model.weight), expect)
    # w[1,0] = 1.0 ties with row 0 by magnitude, but its row is weak: it goes before them
    pr.update_masks(model)
    assert pr.masks["weight"].tolist() == [[True, True, True], [False, False, False]]
    with pytest.raises(ValueError, match="structure"):
        GradualPruning(model, {"weight": 0.5}, total_steps=0, structure=-1)


def test_lamp_scores_by_brute_force():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(7, 5, generator=g)
    got = GradualPruning.lamp_scores(w.abs())
    flat = w.flatten().double() ** 2
    for i in range(flat.numel()):
        denom = sum(float(v) for v in flat if v >= flat[i])      # no ties in random data
        assert float(got.flatten()[i]) == pytest.approx(float(flat[i]) / denom, rel=1e-12)
    assert float(got.max()) == 1.0                                # the largest weight of a layer scores 1


def test_lamp_allocation_keeps_the_total_and_every_layer():
    torch.manual_seed(0)
    model = build_model("lenet5")
    keep = {"conv1.weight": 0.5, "conv2.weight": 0.2, "fc1.weight": 0.1, "fc2.weight": 0.12, "fc3.weight": 0.3}
    pr = GradualPruning(model, keep, total_steps=0, allocation="lamp")
    pr.update_masks(model)
    params = dict(model.named_parameters())
    total = sum(params[n].numel() for n in keep)
    target = round(sum(keep[n] * params[n].numel() for n in keep))
    kept = sum(int(m.sum()) for m in pr.masks.values())
    assert abs(kept - target) <= 1
    assert all(int(m.sum()) >= 1 for m in pr.masks.values())
    # the kept weights of each layer are its largest in magnitude
    for n, m in pr.masks.items():
        a = params[n].detach().abs()
        if m.any() and (~m).any():
            assert float(a[m].min()) >= float(a[~m].max())
    assert kept < total
    with pytest.raises(ValueError, match="allocation"):
        GradualPruning(model, keep, total_steps=0, allocation="nope")


def test_short_float32_makes_the_grid_float32_exact():
    for x in (0.0371, 1e-3, 0.5, 0.123456789, 7.77):
        d = short_float32(x)
        assert d == pytest.approx(x, rel=2.5e-4)
        for C in (1, 3, 7, 15, 255, 4095):
            r = C * d / 2
            assert float(np.float32(r)) == r
    with pytest.raises(ValueError):
        short_float32(0.0)
    # the grid of such a step has a float32-exact r, which the file stores in float32
    w = (np.arange(-3, 4, dtype=np.float64) * short_float32(0.0371)).astype(np.float32)
    g = tensor_grid(w, short_float32(0.0371))
    assert float(np.float32(g.r)) == g.r


def test_run_recipe_end_to_end_and_resume(tmp_path, small_mnist):
    """The three stages on a 2,048-image subset: the file decodes to the network that is reported,
    the masks hold, every weight is a multiple of its step, and a second call resumes as finished."""
    import json

    from metaq_utils.nn.checkpoints import load_checkpoint, save_checkpoint
    from metaq_utils.nn.training import TrainConfig, evaluate, train
    from metaq_utils.pipeline import load_any
    from metaq_utils.recipes.prune_quantize import run_recipe

    torch.manual_seed(0)
    dense = build_model("lenet5")
    train(dense, small_mnist, TrainConfig(epochs=1, lr=2e-3, augment=False), progress=False)
    save_checkpoint(tmp_path / "dense.pt", dense, "lenet5", config={"split": small_mnist.split})
    cfg = RecipeConfig(density_scale=0.5, prune_epochs=2, quant_epochs=1, prune_every=5, step=0.6,
                       allocation="lamp", codec="context")
    out = tmp_path / "run"
    res = run_recipe(tmp_path / "dense.pt", small_mnist, cfg, out, log=lambda m: None, extra={"command": "test"})
    assert res["file_bits"] == 8 * (out / "model.mtq").stat().st_size
    assert json.loads((out / "result.json").read_text())["command"] == "test"
    model, arch, bits, n = load_any(out / "model.mtq")
    assert (arch, bits, n) == ("lenet5", res["file_bits"], 44426)
    assert evaluate(model, small_mnist.val_x, small_mnist.val_y)["accuracy"] == res["val_accuracy"]
    assert evaluate(model, small_mnist.test_x, small_mnist.test_y)["accuracy"] == res["test_accuracy"]
    kept = RecipeConfig(density_scale=0.5).kept_fractions()
    target = sum(kept[n_] * p.numel() for n_, p in model.named_parameters() if n_ in kept)
    weights = {n_: p for n_, p in model.named_parameters() if n_.endswith("weight")}
    assert sum(int((p != 0).sum()) for p in weights.values()) <= round(target) + 1
    for name, p in model.named_parameters():
        k = p.detach().double() / res["steps"][name]
        assert torch.allclose(k, torch.round(k), atol=1e-4), name
    decoded = load_checkpoint(out / "decoded.pt").build_model()
    assert all(torch.equal(a, b) for a, b in zip(decoded.parameters(), model.parameters()))
    again = run_recipe(tmp_path / "dense.pt", small_mnist, cfg, out, log=lambda m: None)
    assert again["file_bits"] == res["file_bits"] and again["val_accuracy"] == res["val_accuracy"]
    assert json.loads((out / "result.json").read_text())["recipe"]["allocation"] == "lamp"
    with pytest.raises(ValueError, match="validation split"):
        from metaq_utils.nn.data import MNISTTensors
        bare = MNISTTensors(small_mnist.train_x, small_mnist.train_y, small_mnist.test_x, small_mnist.test_y)
        run_recipe(tmp_path / "dense.pt", bare, cfg, tmp_path / "bare", log=lambda m: None)
