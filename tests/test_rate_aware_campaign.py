"""experiments/rate_aware.py declares its runs for metaq_utils.campaign (issue 22): results written before the
runner are accepted only when their RateAwareConfig/trial/checkpoints agree (and then get identity.json, as the
most complete stage of the folder: a search result that carries the test is the seeds stage's too), finished runs
are not retrained, another identity is refused by name, and a search-only result is completed, not overwritten
blindly."""
import json
from pathlib import Path

import pytest

from metaq_utils.campaign import CampaignError

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "runs" / "rate_aware" / "trial_ae10a8352788" / "lr0.0003"


@pytest.fixture(scope="module")
def exp(load_script):
    return load_script("experiments/rate_aware.py")


def _no_data():
    pytest.fail("a finished run was started again")


def _copy_all(tmp_path, exp, drop_test=()):
    """Copies of the committed runs' result.json (identity stripped: as written before the runner)."""
    for p in SRC.glob("lam*/seed*/result.json"):
        res = json.loads(p.read_text())
        res.pop("identity", None), res.pop("identity_key", None)
        if p.parent.relative_to(SRC).as_posix() in drop_test:
            res.pop("test_accuracy"), res.pop("accuracy")
        d = tmp_path / exp.TRIAL / "lr0.0003" / p.parent.relative_to(SRC)
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(res))
    return tmp_path / exp.TRIAL / "lr0.0003"


def test_finished_runs_are_recognised_and_not_rerun(exp, tmp_path):
    base = _copy_all(tmp_path, exp)
    c = exp.campaign(exp.TRIAL, _no_data, root=tmp_path)
    st = c.status()
    assert {n for n, v in st.items() if v == "done"} == (
        {f"search/lam{lam:g}" for lam in exp.LAMS} | {f"seeds/lam{lam}/seed{s}" for lam in ("0", "0.1") for s in (0, 1, 2)})
    assert {v for n, v in st.items() if n.startswith("seeds/lam0.") and not n.startswith("seeds/lam0.1/")} == {"skipped"}
    # the chosen λ's seed 0 folder (its result carries the test) is recorded as the seeds stage
    ident = json.loads((base / "lam0.1" / "seed0" / "identity.json").read_text())["identity"]
    assert ident["test"] is True and ident["rate_aware"]["lam"] == 0.1 and ident["seed"] == 0
    assert json.loads((base / "lam0.05" / "seed0" / "identity.json").read_text())["identity"]["test"] is False
    assert c.run("w0") == 0
    assert exp.campaign(exp.TRIAL, _no_data, root=tmp_path).status() == st      # through identity.json now


def test_search_only_result_is_completed_not_accepted(exp, tmp_path):
    """A chosen λ's seed-0 folder with the search result only: the search is done, the seeds stage runs there."""
    _copy_all(tmp_path, exp, drop_test=("lam0.1/seed0",))
    c = exp.campaign(exp.TRIAL, _no_data, root=tmp_path)
    st = c.status()
    assert st["search/lam0.1"] == "done" and st["seeds/lam0.1/seed0"] == "todo"
    called = []
    run = next(r for r in c.runs if r.name == "seeds/lam0.1/seed0")
    object.__setattr__(run, "job", lambda o: called.append(o) or {"test_accuracy": 0.99, "val_accuracy": 0.9904,
                                                                    "file_bits": 23072, "rate_aware": {"lam": 0.1}})
    assert c.run("w0", only=["seeds/lam0.1/seed0"]) == 1 and len(called) == 1
    assert c.status()["seeds/lam0.1/seed0"] == "done" and c.status()["search/lam0.1"] == "done"


def test_old_result_with_other_settings_is_refused(exp, tmp_path):
    base = _copy_all(tmp_path, exp)
    p = base / "lam0.05" / "seed0" / "result.json"
    res = json.loads(p.read_text())
    res["rate_aware"]["epochs"] = 8
    p.write_text(json.dumps(res))
    with pytest.raises(CampaignError, match=r"search/lam0.05.*rate_aware.epochs 8 \(declared 4\)"):
        exp.campaign(exp.TRIAL, _no_data, root=tmp_path).status()
    # another λ's result in this λ's folder
    (base / "lam0.05" / "seed0" / "result.json").write_text((base / "lam0.15" / "seed0" / "result.json").read_text())
    with pytest.raises(CampaignError, match=r"rate_aware.lam 0.15 \(declared 0.05\)"):
        exp.campaign(exp.TRIAL, _no_data, root=tmp_path).status()
    # another start trial
    res["rate_aware"]["epochs"] = 4
    res["start_trial"] = "trial_other"
    p.write_text(json.dumps(res))
    with pytest.raises(CampaignError, match="start_trial 'trial_other'"):
        exp.campaign(exp.TRIAL, _no_data, root=tmp_path).status()
    # a declaration that changed (another identity recorded in the folder) is never overwritten
    p.write_text(json.dumps({"identity_key": "0" * 16}))
    with pytest.raises(CampaignError, match="another identity"):
        exp.campaign(exp.TRIAL, _no_data, root=tmp_path).status()
