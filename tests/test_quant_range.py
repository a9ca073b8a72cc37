"""One Grid value end to end, and the one post-training range rule (issue 14, part 1)."""
import numpy as np
import pytest
import torch

from metaq_utils.__main__ import main
from metaq_utils.coding.fileformat import read_compressed
from metaq_utils.core.grid import THESIS_GRID_C, THESIS_GRID_R, THESIS_GRID_W0, Grid, thesis_grid
from metaq_utils.core.params import flatten
from metaq_utils.nn.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from metaq_utils.nn.networks import build_model
from metaq_utils.nn.regularizer import METaQConfig
from metaq_utils.quant.quant_range import posttraining_grid, posttraining_range

from conftest import DATA_ROOT


def test_thesis_grid_is_the_one_named_constant():
    assert (THESIS_GRID_W0, THESIS_GRID_R, THESIS_GRID_C) == (-0.11, 1.114, 6)
    assert thesis_grid() == Grid(-0.11, 1.114, 6) and thesis_grid(140) == Grid(-0.11, 1.114, 140)
    assert METaQConfig().grid == thesis_grid()       # the regularizer's defaults are the same grid
    assert thesis_grid().with_C(9) == Grid(-0.11, 1.114, 9)


def test_grid_dict_round_trip_and_validation():
    g = Grid(0.25, 0.5, 7)
    assert g.to_dict() == {"w0": 0.25, "r": 0.5, "C": 7} and Grid.from_dict(g.to_dict()) == g
    assert Grid.from_dict({"w0": np.float32(0.5), "r": 1, "C": 6.0}) == Grid(0.5, 1.0, 6)
    for bad, msg in [({"w0": 0, "r": 1}, "missing"), ({"w0": 0, "r": 1, "C": 4, "x": 1}, "unexpected"),
                     ({"w0": "0", "r": 1, "C": 4}, "must be a number"),
                     ({"w0": 0, "r": 1, "C": True}, "must be a number"),
                     ({"w0": 0, "r": 1, "C": 4.5}, "must be an integer"), ({"w0": 0, "r": 0, "C": 4}, "r must be > 0"),
                     ({"w0": 0, "r": 1, "C": 1}, "C must be >= 2"), ([0, 1, 4], "mapping")]:
        with pytest.raises(ValueError, match=msg):
            Grid.from_dict(bad)


def test_checkpoints_store_a_validated_grid(tmp_path):
    m = build_model("lenet5")
    ck = load_checkpoint(save_checkpoint(tmp_path / "a.pt", m, "lenet5", grid=Grid(0.0, 0.5, 6)))
    assert ck.grid == {"w0": 0.0, "r": 0.5, "C": 6} and ck.grid_value == Grid(0.0, 0.5, 6)
    assert load_checkpoint(save_checkpoint(tmp_path / "b.pt", m, "lenet5")).grid_value is None
    with pytest.raises(CheckpointError, match="invalid grid"):
        save_checkpoint(tmp_path / "c.pt", m, "lenet5", grid={"w0": 0.0, "r": -1.0, "C": 6})
    assert not (tmp_path / "c.pt").exists()


def test_posttraining_range_rule():
    trained = {"w0": 0.0, "r": 0.5, "C": 6}
    rng = posttraining_range(trained)
    assert (rng.w0, rng.r) == (0.0, 0.5) and "training grid" in rng.source
    assert posttraining_grid(trained, 140) == Grid(0.0, 0.5, 140)
    assert posttraining_grid(METaQConfig(w0=0.1, r=0.3), 8) == Grid(0.1, 0.3, 8)   # a config's grid
    assert posttraining_grid(Grid(0.1, 0.3, 6), 8) == Grid(0.1, 0.3, 8)
    plain = posttraining_range(None)                                             # plain training
    assert (plain.w0, plain.r) == (THESIS_GRID_W0, THESIS_GRID_R) and "plain training" in plain.source
    assert "plain training" in plain.describe()
    over = posttraining_range(trained, r=0.25)                                   # a flag overrides one value
    assert (over.w0, over.r) == (0.0, 0.25) and "r given explicitly" in over.source
    with pytest.raises(ValueError, match="r must be > 0"):
        posttraining_range(trained, r=-1.0)


@pytest.fixture
def zero_centred_checkpoint(tmp_path):
    """A checkpoint saved as a METaQ run on a zero-centred grid (as experiments/ours.py trains)."""
    torch.manual_seed(3)
    m = build_model("lenet5")
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.5, 0.5)
    return save_checkpoint(tmp_path / "zero.pt", m, "lenet5", grid={"w0": 0.0, "r": 0.5, "C": 6}), m


def test_cli_quantize_uses_the_checkpoint_grid(zero_centred_checkpoint, tmp_path, capsys):
    """The bug: ``quantize`` took --w0/--r defaults (the thesis range) instead of the checkpoint's."""
    path, m = zero_centred_checkpoint
    out = tmp_path / "q.pt"
    assert main(["--root", DATA_ROOT, "quantize", str(path), "--cq", "8", "--out", str(out)]) == 0
    q = load_checkpoint(out)
    assert q.grid == {"w0": 0.0, "r": 0.5, "C": 8}
    used = set(flatten(q.build_model()).tolist())
    assert used <= set(Grid(0.0, 0.5, 8).v.astype(np.float32).tolist()) and len(used) == 8
    assert "training grid" in capsys.readouterr().out
    # explicit flags still override
    assert main(["--root", DATA_ROOT, "quantize", str(path), "--cq", "8", "--w0", "-0.11", "--r", "1.114",
                 "--out", str(out)]) == 0
    assert load_checkpoint(out).grid == {"w0": -0.11, "r": 1.114, "C": 8}


def test_cli_quantize_plain_checkpoint_states_the_thesis_fallback(tmp_path, capsys):
    path = save_checkpoint(tmp_path / "plain.pt", build_model("lenet5"), "lenet5")   # no grid
    out = tmp_path / "q.pt"
    assert main(["--root", DATA_ROOT, "quantize", str(path), "--cq", "5", "--out", str(out)]) == 0
    assert "thesis range" in capsys.readouterr().out
    assert load_checkpoint(out).grid == thesis_grid(5).to_dict()


def test_cli_compress_uses_the_same_rule(zero_centred_checkpoint, tmp_path, capsys):
    path, _ = zero_centred_checkpoint
    mtq = tmp_path / "z.mtq"
    assert main(["compress", str(path), "--cq", "16", "--out", str(mtq)]) == 0
    assert "training grid" in capsys.readouterr().out
    (group,) = read_compressed(mtq).groups
    assert group.codebook == Grid(0.0, 0.5, 16)


def test_cli_dual_uses_the_same_rule(zero_centred_checkpoint, tmp_path, capsys):
    """``dual`` solves on the checkpoint's training grid (flags win, the thesis grid without one)."""
    import json

    path, _ = zero_centred_checkpoint

    def grid_of(*argv):
        assert main(["dual", *argv, "--variant", "thesis", "--json"]) == 0
        return json.loads(capsys.readouterr().out)["grid"]

    assert grid_of(str(path)) == {"w0": 0.0, "r": 0.5, "C": 6}
    assert grid_of(str(path), "--w0", "0.1", "--C", "4") == {"w0": 0.1, "r": 0.5, "C": 4}
    plain = save_checkpoint(tmp_path / "plain.pt", build_model("lenet5"), "lenet5")
    assert grid_of(str(plain)) == thesis_grid().to_dict()
