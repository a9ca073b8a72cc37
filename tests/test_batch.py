import json

import pytest

from metaq_utils.batch import expand_batch, format_summary, record_metrics, run_batch


def test_grid_expands_to_the_cartesian_product():
    runs = expand_batch({"runs": [{"notebook": "nb/T.ipynb", "parameters": {"epochs": 2},
                                   "grid": {"lam": [1, 2], "variant": ["a", "b", "c"]}}]})
    assert len(runs) == 6
    assert {(r.parameters["lam"], r.parameters["variant"]) for r in runs} == {(l, v) for l in (1, 2) for v in "abc"}
    assert all(r.parameters["epochs"] == 2 for r in runs)
    assert len({r.label for r in runs}) == 6


@pytest.mark.parametrize("spec,msg", [({}, "'runs' must be a non-empty list"),
                                      ({"runs": [{"parameters": {}}]}, "has no 'notebook'"),
                                      ({"runs": [{"notebook": "x", "grid": {"a": []}}]}, "non-empty lists")])
def test_bad_batch_files(spec, msg):
    with pytest.raises(ValueError, match=msg):
        expand_batch(spec)


def test_record_metrics_and_dry_run(tmp_path):
    record_metrics({"acc": 0.99}, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {"acc": 0.99}
    record_metrics({"acc": 1}, "")            # no path: nothing written, no error
    f = tmp_path / "b.json"
    f.write_text(json.dumps({"name": "x", "runs": [{"notebook": "n.ipynb", "grid": {"a": [1, 2]}}]}))
    rows = run_batch(f, tmp_path / "runs", dry_run=True)
    assert [r["param.a"] for r in rows] == [1, 2]
    assert "param.a" in format_summary(rows)
