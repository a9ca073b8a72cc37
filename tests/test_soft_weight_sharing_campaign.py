"""experiments/soft_weight_sharing.py declares its runs for metaq_utils.campaign (issue 22): a result written
before the runner is accepted only when its network/configuration/seed/settings agree (and then gets its
identity.json), a finished run is not retrained, another identity is refused by name."""
import json
import shutil
from pathlib import Path

import pytest

from metaq_utils.campaign import CampaignError

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "runs" / "soft_weight_sharing" / "lenet300100" / "tau0.1_smallest" / "seed0"


@pytest.fixture(scope="module")
def exp(load_script):
    return load_script("experiments/soft_weight_sharing.py")


def _no_data():
    pytest.fail("a finished run was started again")


def _legacy(tmp_path, rel, **changes):
    """A copy of the committed run's result.json (written before the runner: no identity) under tmp_path/rel."""
    res = json.loads((RUN / "result.json").read_text())
    res.pop("identity", None), res.pop("identity_key", None)
    for k, v in changes.items():
        if k.startswith("settings."):
            res["config"][k.split(".", 1)[1]] = v
        else:
            res[k] = v
    d = tmp_path / rel
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(res, indent=1))
    return d


def test_finished_run_is_recognised_and_not_rerun(exp, tmp_path):
    d = _legacy(tmp_path, "lenet300100/tau0.1_smallest/seed0")
    c = exp.campaign("lenet300100", "tau0.1_smallest", [0], _no_data, "test", root=tmp_path)
    assert c.status() == {"lenet300100/tau0.1_smallest/seed0": "done"}
    ident = json.loads((d / "identity.json").read_text())
    assert ident["identity"]["config"] == "tau0.1_smallest" and ident["identity"]["seed"] == 0
    assert ident["identity"]["settings"]["tau"] == 0.1
    assert c.run("w0") == 0
    assert c.status() == {"lenet300100/tau0.1_smallest/seed0": "done"}     # through identity.json now
    # a run finished by the runner (identity_key in result.json) is done as well
    shutil.copytree(d, tmp_path / "new" / "lenet300100/tau0.1_smallest/seed0")
    r = tmp_path / "new" / "lenet300100/tau0.1_smallest/seed0"
    res = json.loads((r / "result.json").read_text())
    (r / "identity.json").unlink()
    res["identity_key"] = c.runs[0].key
    (r / "result.json").write_text(json.dumps(res))
    c2 = exp.campaign("lenet300100", "tau0.1_smallest", [0], _no_data, "test", root=tmp_path / "new")
    assert c2.run("w0") == 0 and c2.status() == {"lenet300100/tau0.1_smallest/seed0": "done"}


def test_old_result_with_other_settings_is_refused(exp, tmp_path):
    _legacy(tmp_path, "lenet300100/tau0.1_smallest/seed0", **{"settings.epochs": 5})
    with pytest.raises(CampaignError, match=r"settings.epochs 5 \(declared 20\)"):
        exp.campaign("lenet300100", "tau0.1_smallest", [0], _no_data, "test", root=tmp_path).status()
    # the result of another configuration in this configuration's folder
    _legacy(tmp_path, "lenet300100/tau0.3_smallest/seed0")
    with pytest.raises(CampaignError, match="config 'tau0.1_smallest'.*settings.tau 0.1 \\(declared 0.3\\)"):
        exp.campaign("lenet300100", "tau0.3_smallest", [0], _no_data, "test", root=tmp_path).status()
    _legacy(tmp_path, "lenet300100/tau0.1_smallest/seed1")
    with pytest.raises(CampaignError, match=r"seed 0 \(declared 1\)"):
        exp.campaign("lenet300100", "tau0.1_smallest", [1], _no_data, "test", root=tmp_path).status()
    assert not list(tmp_path.rglob("identity.json"))
    # a declaration that changed (another identity recorded in the folder) is never overwritten
    d = _legacy(tmp_path, "lenet300100/tau0.1_smallest/seed2")
    (d / "result.json").write_text(json.dumps({"identity_key": "0" * 16}))
    with pytest.raises(CampaignError, match="another identity"):
        exp.campaign("lenet300100", "tau0.1_smallest", [2], _no_data, "test", root=tmp_path).status()
