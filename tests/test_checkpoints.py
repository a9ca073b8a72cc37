import os

import pytest
import torch

from metaq_utils.nn import checkpoints as C
from metaq_utils.nn.networks import build_model


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    m = build_model("lenet5")
    path = C.save_checkpoint(tmp_path / "m.pt", m, "lenet5", config={"lr": 1e-3}, metrics={"acc": 0.99},
                             grid={"w0": -0.11, "r": 1.114, "C": 6})
    return m, path


def test_round_trip_carries_metadata(saved):
    m, path = saved
    ck = C.load_checkpoint(path, expected_arch="lenet5")
    assert ck.n_params == 44_426 and ck.arch == "lenet5"
    assert ck.config == {"lr": 1e-3} and ck.metrics == {"acc": 0.99}
    assert ck.grid == {"w0": -0.11, "r": 1.114, "C": 6}
    assert ck.versions["torch"] == torch.__version__ and "numpy" in ck.versions
    assert "commit" in ck.__dataclass_fields__
    rebuilt = ck.build_model()
    for a, b in zip(m.parameters(), rebuilt.parameters()):
        assert torch.equal(a, b)
    assert ck.content_hash == C.state_hash("lenet5", m.state_dict())


def test_truncated_file(saved):
    _, path = saved
    raw = path.read_bytes()
    for cut in (0, 10, len(raw) // 2, len(raw) - 1):
        path.write_bytes(raw[:cut])
        with pytest.raises(C.CheckpointError, match="truncated or corrupted"):
            C.load_checkpoint(path)


def test_corrupted_weights_detected(saved):
    m, path = saved
    raw = bytearray(path.read_bytes())
    # flip one bit inside the stored fc1 weights: find their bytes in the file
    needle = m.fc1.weight.detach().numpy().tobytes()[:64]
    at = bytes(raw).find(needle)
    assert at > 0
    raw[at + 5] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(C.CheckpointError, match="content hash mismatch|truncated or corrupted"):
        C.load_checkpoint(path)


def test_architecture_mismatch(saved):
    _, path = saved
    with pytest.raises(C.CheckpointError, match="architecture mismatch: file holds 'lenet5', expected 'lenet300100'"):
        C.load_checkpoint(path, expected_arch="lenet300100")


def test_refuses_to_save_wrong_shapes_or_nan(tmp_path):
    state = build_model("lenet5").state_dict()
    state["fc1.weight"] = torch.zeros(120, 255)
    with pytest.raises(C.CheckpointError, match=r"'fc1.weight' has shape \(120, 255\)"):
        C.save_checkpoint(tmp_path / "x.pt", state, "lenet5")
    state = build_model("lenet5").state_dict()
    state["fc2.bias"][3] = float("nan")
    with pytest.raises(C.CheckpointError, match="NaN or inf"):
        C.save_checkpoint(tmp_path / "x.pt", state, "lenet5")
    assert not (tmp_path / "x.pt").exists()


def test_not_a_checkpoint_and_missing(tmp_path):
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(C.CheckpointError, match="not a METaQ checkpoint"):
        C.load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(C.CheckpointError, match="does not exist"):
        C.load_checkpoint(tmp_path / "nope.pt")


def test_atomic_write_keeps_previous_file_on_crash(saved, monkeypatch):
    m, path = saved
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash during rename")
    monkeypatch.setattr(os, "replace", crash)
    with torch.no_grad():
        m.fc3.bias.add_(1.0)
    with pytest.raises(OSError, match="simulated crash"):
        C.save_checkpoint(path, m, "lenet5")
    monkeypatch.undo()
    assert path.read_bytes() == before                       # the old checkpoint is intact
    assert [p.name for p in path.parent.iterdir()] == [path.name]   # no temp file left behind
    C.load_checkpoint(path)
