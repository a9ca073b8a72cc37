import pytest
import torch

from metaq_utils.checkpoints import load_checkpoint
from metaq_utils.training import StopRule, TrainConfig, make_model, train


class AddConstantGrad:
    """A toy regularizer: adds a constant to every gradient and counts its calls (has state)."""

    def __init__(self, c=1e-3):
        self.c, self.calls = c, 0

    def after_backward(self, model):
        self.calls += 1
        for p in model.parameters():
            p.grad.add_(self.c)

    def epoch_metrics(self, model):
        return {"reg_calls": self.calls}

    def state_dict(self):
        return {"c": self.c, "calls": self.calls}

    def load_state_dict(self, s):
        self.c, self.calls = s["c"], s["calls"]


CFG = TrainConfig(epochs=3, seed=3, lr=2e-3)


def test_training_learns_and_returns_metrics(small_mnist):
    model = make_model(CFG)
    res = train(model, small_mnist, CFG, progress=False)
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    assert res.final["test_accuracy"] > 0.8          # chance is 0.1; 2,048 images, 3 epochs
    assert {"train_loss", "test_loss", "test_accuracy", "epoch_seconds"} <= set(res.final)


def test_seeded_runs_are_reproducible(small_mnist):
    cfg = TrainConfig(epochs=1, seed=5)
    a, b = make_model(cfg), make_model(cfg)
    train(a, small_mnist, cfg, progress=False)
    train(b, small_mnist, cfg, progress=False)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_regularizer_extension_point_changes_gradients(small_mnist):
    cfg = TrainConfig(epochs=1, seed=1, augment=False)
    plain, reg_model = make_model(cfg), make_model(cfg)
    train(plain, small_mnist, cfg, progress=False)
    reg = AddConstantGrad(1e-2)
    res = train(reg_model, small_mnist, cfg, regularizer=reg, progress=False)
    assert reg.calls == 32 and res.final["reg_calls"] == 32      # once per batch of 64
    assert not torch.equal(plain.fc3.bias, reg_model.fc3.bias)


def test_resume_after_interruption_gives_identical_weights(small_mnist, tmp_path):
    full = make_model(CFG)
    reg_full = AddConstantGrad()
    train(full, small_mnist, CFG, regularizer=reg_full, progress=False)

    class Killed(Exception):
        pass

    def kill_after_2(epoch, row):
        if epoch == 2:
            raise Killed

    ck = tmp_path / "last.pt"
    model = make_model(CFG)
    with pytest.raises(Killed):
        train(model, small_mnist, CFG, regularizer=AddConstantGrad(), checkpoint_path=ck,
              epoch_callbacks=[kill_after_2], progress=False)
    resumed = make_model(TrainConfig(epochs=3, seed=99, lr=2e-3))   # different init: must be overwritten
    reg = AddConstantGrad()
    res = train(resumed, small_mnist, CFG, regularizer=reg, checkpoint_path=ck, resume=True, progress=False)
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    assert reg.calls == reg_full.calls
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_resume_refuses_a_different_configuration(small_mnist, tmp_path):
    ck = tmp_path / "last.pt"
    cfg = TrainConfig(epochs=1, seed=0)
    train(make_model(cfg), small_mnist, cfg, checkpoint_path=ck, progress=False)
    other = TrainConfig(epochs=1, seed=0, lr=5e-4)
    with pytest.raises(ValueError, match="configuration differs"):
        train(make_model(other), small_mnist, other, checkpoint_path=ck, resume=True, progress=False)


def test_stop_rule_and_best_checkpoint(small_mnist, tmp_path):
    cfg = TrainConfig(epochs=3, seed=0)
    rule = StopRule(epoch=1, metric="test_accuracy", minimum=0.999)
    best = tmp_path / "best.pt"
    res = train(make_model(cfg), small_mnist, cfg, stop_rules=[rule], best_path=best, progress=False)
    assert len(res.history) == 1 and "test_accuracy=" in res.stopped_by and "< 0.999" in res.stopped_by
    ck = load_checkpoint(best)
    assert ck.metrics["epoch"] == 1 and ck.config["train"]["seed"] == 0


def test_uniform_init_range():
    cfg = TrainConfig(init="uniform", init_low=-1.224, init_high=1.004)
    w = torch.cat([p.flatten() for p in make_model(cfg).parameters()])
    assert w.min() >= -1.224 and w.max() <= 1.004 and w.std() > 0.6


def test_bad_config():
    with pytest.raises(ValueError, match="optimizer must be"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr must be > 0"):
        TrainConfig(lr=0)


def test_composite_regularizer_applies_parts_in_order_and_round_trips(small_mnist):
    from metaq_utils.training import CompositeRegularizer
    a, b = AddConstantGrad(1e-3), AddConstantGrad(2e-3)
    comp = CompositeRegularizer(a, b)
    model = make_model(TrainConfig())
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    comp.after_backward(model)
    assert torch.allclose(model.fc3.bias.grad, torch.full_like(model.fc3.bias, 3e-3))
    other = CompositeRegularizer(AddConstantGrad(), AddConstantGrad())
    other.load_state_dict(comp.state_dict())
    assert [p.c for p in other.parts] == [1e-3, 2e-3] and [p.calls for p in other.parts] == [1, 1]
    with pytest.raises(ValueError, match="2 parts, expected 1"):
        CompositeRegularizer(AddConstantGrad()).load_state_dict(comp.state_dict())
