import pytest
import torch

from metaq_utils.nn.checkpoints import load_checkpoint
from metaq_utils.nn.training import CompositeRegularizer, StopRule, TrainConfig, make_model, train


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
    assert res.final["val_accuracy"] > 0.8          # chance is 0.1; 2,048 images, 3 epochs
    assert {"train_loss", "val_loss", "val_accuracy", "epoch_seconds"} <= set(res.final)
    # the test set is not evaluated per epoch; the rows and the result are marked "validation"
    assert not any(k.startswith("test_") for r in res.history for k in r)
    assert all(r["selection"] == "validation" for r in res.history) and res.selection == "validation"
    assert res.split == small_mnist.split and res.split["val_indices_sha256"]
    assert res.best_metric == "val_accuracy"
    assert res.best_epoch == max(res.history, key=lambda r: r["val_accuracy"])["epoch"]


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
    rule = StopRule(epoch=1, metric="val_accuracy", minimum=0.999)
    best = tmp_path / "best.pt"
    res = train(make_model(cfg), small_mnist, cfg, stop_rules=[rule], best_path=best, progress=False)
    assert len(res.history) == 1 and "val_accuracy=" in res.stopped_by and "< 0.999" in res.stopped_by
    ck = load_checkpoint(best)
    assert ck.metrics["epoch"] == 1 and ck.config["train"]["seed"] == 0
    assert ck.config["split"] == small_mnist.split and ck.config["selection"] == "validation"
    assert ck.metrics["selection"] == "validation"


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
    from metaq_utils.nn.training import CompositeRegularizer
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


class PinFirstBias(AddConstantGrad):
    """A toy constraint: fc3.bias[0] stays 0, re-imposed after every optimizer step."""

    def __init__(self):
        super().__init__(0.0)
        self.log = []

    def after_backward(self, model):
        self.log.append("backward")

    @torch.no_grad()
    def after_step(self, model):
        self.log.append("step")
        model.fc3.bias[0] = 0.0


def test_after_step_runs_after_every_optimizer_step(small_mnist):
    data = _tiny(small_mnist)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=1e-2, weight_decay=1e-2)     # Adam would move the bias
    free, pinned = make_model(cfg), make_model(cfg)
    train(free, data, cfg, progress=False)
    reg = PinFirstBias()
    train(pinned, data, cfg, regularizer=reg, progress=False)
    assert reg.log == ["backward", "step"] * 4                   # 128 images, batches of 32
    assert pinned.fc3.bias[0].item() == 0.0 and free.fc3.bias[0].item() != 0.0
    # a composite calls the after_step of the parts that have one, in order
    comp_reg = PinFirstBias()
    comp = CompositeRegularizer(AddConstantGrad(0.0), comp_reg)
    train(make_model(cfg), data, cfg, regularizer=comp, progress=False)
    assert comp_reg.log == reg.log


# --- the protocol (PROTOCOL.md): selection on validation, test only under select_on="test" ----

VAL_SCRIPT = [0.50, 0.90, 0.70]     # per-epoch validation accuracy: best epoch 2
TEST_SCRIPT = [0.95, 0.60, 0.80]    # per-epoch test accuracy: best epoch 1


def _scripted_evaluate(data, calls):
    """A stand-in for training.evaluate: scripted accuracies, recording which split it was given."""
    def fake(model, x, y, batch_size=5000):
        which = "val" if x is data.val_x else "test" if x is data.test_x else "other"
        calls.append(which)
        k = sum(1 for c in calls if c == which) - 1
        acc = (VAL_SCRIPT if which == "val" else TEST_SCRIPT)[k]
        return {"accuracy": acc, "loss": 1 - acc}
    return fake


def _tiny(small_mnist):
    from metaq_utils.nn.data import MNISTTensors
    return MNISTTensors(small_mnist.train_x[:128], small_mnist.train_y[:128], small_mnist.test_x[:50],
                        small_mnist.test_y[:50], small_mnist.val_x[:50], small_mnist.val_y[:50], small_mnist.split)


def test_best_epoch_follows_validation_not_test(small_mnist, tmp_path, monkeypatch):
    import metaq_utils.nn.training as T
    data, calls = _tiny(small_mnist), []
    monkeypatch.setattr(T, "evaluate", _scripted_evaluate(data, calls))
    cfg = TrainConfig(epochs=3, seed=0, augment=False)
    best = tmp_path / "best.pt"
    res = train(make_model(cfg), data, cfg, best_path=best, progress=False)
    assert calls == ["val"] * 3                          # the test set is never evaluated
    assert res.best_epoch == 2 and res.selection == "validation"
    assert [r["val_accuracy"] for r in res.history] == VAL_SCRIPT
    ck = load_checkpoint(best)
    assert ck.metrics["epoch"] == 2 and ck.metrics["selection"] == "validation"
    assert ck.config["selection"] == "validation" and ck.config["best_metric"] == "val_accuracy"
    assert ck.config["split"]["val_indices_sha256"] == small_mnist.split["val_indices_sha256"]


def test_select_on_test_is_explicit_and_marks_everything(small_mnist, tmp_path, monkeypatch):
    import metaq_utils.nn.training as T
    data, calls = _tiny(small_mnist), []
    monkeypatch.setattr(T, "evaluate", _scripted_evaluate(data, calls))
    cfg = TrainConfig(epochs=3, seed=0, augment=False)
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    res = train(make_model(cfg), data, cfg, best_path=best, checkpoint_path=last, select_on="test", progress=False)
    assert calls == ["val", "test"] * 3
    assert res.best_epoch == 1 and res.selection == "test" and res.best_metric == "test_accuracy"
    assert all(r["selection"] == "test" for r in res.history)
    assert [r["test_accuracy"] for r in res.history] == TEST_SCRIPT
    for path in (best, last):
        ck = load_checkpoint(path)
        assert ck.config["selection"] == "test" and ck.metrics["selection"] == "test"
    assert load_checkpoint(best).metrics["epoch"] == 1
    # resuming a test-selected run as a validation-selected one is refused
    with pytest.raises(ValueError, match="selected on 'test'"):
        train(make_model(cfg), data, cfg, checkpoint_path=last, resume=True, progress=False)


def test_test_metrics_refused_without_select_on_test(small_mnist):
    cfg = TrainConfig(epochs=1)
    with pytest.raises(ValueError, match="test-set metric.*select_on='test'"):
        train(make_model(cfg), small_mnist, cfg, best_metric="test_accuracy", progress=False)
    with pytest.raises(ValueError, match="test-set metric"):
        train(make_model(cfg), small_mnist, cfg, stop_rules=[StopRule(1, "test_accuracy", 0.9)], progress=False)
    with pytest.raises(ValueError, match="select_on must be one of"):
        train(make_model(cfg), small_mnist, cfg, select_on="train", progress=False)


def test_no_validation_split_cannot_select(small_mnist, tmp_path):
    from metaq_utils.nn.data import MNISTTensors
    data = MNISTTensors(small_mnist.train_x[:64], small_mnist.train_y[:64], small_mnist.test_x[:50], small_mnist.test_y[:50])
    cfg = TrainConfig(epochs=1, seed=0)
    with pytest.raises(ValueError, match="no validation split"):
        train(make_model(cfg), data, cfg, best_path=tmp_path / "b.pt", progress=False)
    with pytest.warns(UserWarning, match="no validation split"):
        res = train(make_model(cfg), data, cfg, progress=False)
    assert res.best_epoch is None and "val_accuracy" not in res.final and "test_accuracy" not in res.final
    # legacy, explicitly test-selected
    res = train(make_model(cfg), data, cfg, best_path=tmp_path / "b.pt", select_on="test", progress=False)
    assert res.best_epoch == 1 and res.selection == "test" and res.split["val_size"] == 0


def test_resume_refuses_a_different_split(small_mnist, tmp_path):
    from metaq_utils.nn.data import MNISTTensors
    ck = tmp_path / "last.pt"
    cfg = TrainConfig(epochs=1, seed=0)
    data = _tiny(small_mnist)
    train(make_model(cfg), data, cfg, checkpoint_path=ck, progress=False)
    other = MNISTTensors(data.train_x, data.train_y, data.test_x, data.test_y, data.val_x, data.val_y,
                         dict(data.split, val_indices_sha256="0" * 64))
    with pytest.raises(ValueError, match="data split differs"):
        train(make_model(cfg), other, cfg, checkpoint_path=ck, resume=True, progress=False)
