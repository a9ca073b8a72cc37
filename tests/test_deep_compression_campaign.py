"""experiments/deep_compression.py declares its sweep points for metaq_utils.campaign (issue 22)."""
import json
import shutil
from pathlib import Path

import pytest

from metaq_utils.campaign import CampaignError

REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def exp(load_script):
    return load_script("experiments/deep_compression.py")


def _no_data():
    pytest.fail("a finished sweep point was started again")


def _copy(tmp_path, src, dst):
    (tmp_path / dst).mkdir(parents=True)
    shutil.copy(REPO / "runs" / "deep_compression" / src / "result.json", tmp_path / dst / "result.json")


def test_finished_point_is_done_and_other_settings_refused(exp, tmp_path):
    args = exp.parser().parse_args("--networks lenet5 --qualities 2.2 --retrain-epochs 8 --tag _r8".split())
    for run in ("lenet5_q2.2_conv8_fc5_r8", "lenet5_q2.2_conv5_fc4_r8", "lenet5_q2.2_conv4_fc3_r8"):
        _copy(tmp_path, run, run)
    c = exp.campaign(args, _no_data, "test", root=tmp_path)
    assert set(c.status().values()) == {"done"}
    ident = json.loads((tmp_path / "lenet5_q2.2_conv4_fc3_r8" / "identity.json").read_text())
    assert ident["identity"]["config"]["retrain_epochs"] == 8 and ident["identity"]["arch"] == "lenet5"
    assert c.run("w0") == 0
    # the r4 variant's result (4 retraining epochs) under an r8 folder: refused, naming the difference
    shutil.rmtree(tmp_path / "lenet5_q2.2_conv4_fc3_r8")
    _copy(tmp_path, "lenet5_q2.2_conv4_fc3_r4", "lenet5_q2.2_conv4_fc3_r8")
    with pytest.raises(CampaignError, match=r"config.retrain_epochs 4 \(declared 8\)"):
        exp.campaign(args, _no_data, "test", root=tmp_path).status()


def test_force_moves_the_old_result_aside(exp, tmp_path):
    args = exp.parser().parse_args("--networks lenet5 --qualities 2.2 --retrain-epochs 8 --tag _r8 --force".split())
    _copy(tmp_path, "lenet5_q2.2_conv4_fc3_r8", "lenet5_q2.2_conv4_fc3_r8")
    c = exp.campaign(args, _no_data, "test", root=tmp_path)
    assert c.status()["lenet5_q2.2_conv4_fc3_r8"] == "done"
    exp.move_aside(c)
    folder = tmp_path / "lenet5_q2.2_conv4_fc3_r8"
    assert not (folder / "result.json").exists() and len(list(folder.glob("result.replaced-*.json"))) == 1
    assert c.status()["lenet5_q2.2_conv4_fc3_r8"] == "todo"
