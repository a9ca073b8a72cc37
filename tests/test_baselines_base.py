"""baselines/base.py: one config, runner and result type, one entry shape, one round-trip check;
the baselines build on the layers below the pipeline (issue 14, part 4)."""
import json
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest
import torch

from metaq_utils.baselines.base import (BaselineRun, bias_group_spec, prunable, read_results)
from metaq_utils.baselines.deep_compression import DeepCompressionResult, read_runs
from metaq_utils.baselines.inq import read_baseline_runs
from metaq_utils.coding.fileformat import encode_compressed, metaq_group, mismatched_tensors, read_compressed, round_trip
from metaq_utils.core.grid import Grid
from metaq_utils.nn.networks import build_model


def test_baselines_import_neither_pipeline_nor_frontier():
    code = ("import sys; import metaq_utils.baselines.deep_compression, metaq_utils.baselines.inq, "
            "metaq_utils.baselines.ana, metaq_utils.baselines.lc_mix; "
            "bad = [m for m in ('metaq_utils.pipeline', 'metaq_utils.frontier', 'numba') if m in sys.modules]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def _run(cls=BaselineRun, **kw):
    base = dict(arch="lenet5", config={"a": (1, 2)}, n_params=100, file_bits=400, accuracy=0.9,
                accuracy_before_coding=0.9, history=[{"stage": "x"}], layers=[], file_bytes=b"abc")
    return cls(**{**base, **kw})


def test_one_result_type_and_one_entry_shape():
    inq = _run(method="inq", extra={"levels": {}})
    dc = _run(DeepCompressionResult, density=0.25)
    assert isinstance(dc, BaselineRun) and dc.method == "deep-compression"
    a, b = inq.to_json_dict(), dc.to_json_dict()
    assert set(b) == set(a) | {"density"}                        # the same entry, plus Deep Compression's density
    assert a["config"] == {"a": [1, 2]} and "file_bytes" not in a and json.loads(json.dumps(b)) == b
    assert (dc.bits_per_weight, dc.compression_ratio) == (4.0, 8.0)
    assert {f.name for f in fields(DeepCompressionResult)} - {f.name for f in fields(BaselineRun)} == {"density"}


def test_read_results_is_the_one_reader(tmp_path):
    for folder, runs in (("dc", {"r2": 2, "r1": 1}), ("inq", {"a": 3})):
        for name, k in runs.items():
            (tmp_path / folder / name).mkdir(parents=True)
            (tmp_path / folder / name / "result.json").write_text(json.dumps({"run": name, "k": k}))
    assert [d["run"] for d in read_results([tmp_path / "dc", tmp_path / "inq"])] == ["r1", "r2", "a"]
    both = [tmp_path / "inq", tmp_path / "dc"]
    assert read_baseline_runs(*map(str, both)) == read_results(both)
    assert read_results([tmp_path / "missing"]) == []
    with pytest.raises(KeyError):                      # read_runs sorts Deep Compression entries by their knobs
        read_runs(str(tmp_path / "dc"))


def test_round_trip_check_names_the_first_differing_parameter():
    torch.manual_seed(0)
    m = build_model("lenet5")
    grid = Grid(-0.125, 1.0, 64)
    names = [n for n, _ in m.named_parameters()]
    rt = round_trip("lenet5", [p.detach() for p in m.parameters()], metaq_group(grid))
    blob = encode_compressed("lenet5", [p.detach() for p in m.parameters()], metaq_group(grid))
    cm = read_compressed(blob)
    assert rt.data == blob and rt.file_bits == cm.file_bits and rt.decoded.arch == "lenet5"
    assert mismatched_tensors(list(m.parameters()), cm) == list(range(10))  # m is not on the grid
    assert rt.mismatched == tuple(range(10)) and not rt.exact
    with pytest.raises(AssertionError, match="conv1.weight: the decoded tensor differs"):
        rt.check(names)
    with pytest.raises(AssertionError, match="tensor 0: the decoded tensor differs"):
        rt.check()
    with torch.no_grad():
        for p, t in zip(m.parameters(), cm.tensors):
            p.copy_(torch.from_numpy(t))
    exact = round_trip("lenet5", [p.detach() for p in m.parameters()], metaq_group(grid))
    assert exact.exact and exact.check(names) is exact                       # exact now
    assert mismatched_tensors(cm.tensors[:3], cm) == list(range(3, 10))  # a count mismatch is a mismatch


def test_bias_group_and_prunable():
    m = build_model("lenet5")
    assert list(prunable(m)) == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"]
    g = bias_group_spec(m, "float32", "range")
    assert g.mode == "float32" and g.tensors == (1, 3, 5, 7, 9)
    k = bias_group_spec(m, "kmeans", "huffman")
    assert k.mode == "dense" and k.codec == "huffman" and np.all(np.diff(k.codebook) > 0)
    with pytest.raises(ValueError, match="biases must be"):
        bias_group_spec(m, "int8", "range")


def _counting_evaluate(monkeypatch, data, modules):
    """Replace ``evaluate`` in ``modules`` by a spy that records which split each call scored."""
    from metaq_utils.nn.training import evaluate as real

    calls = []

    def spy(model, x, y, *args, **kwargs):
        calls.append("test" if x is data.test_x else "validation" if x is data.val_x else "other")
        return real(model, x, y, *args, **kwargs)

    for module in modules:
        monkeypatch.setattr(module, "evaluate", spy)
    return calls


def test_stages_are_scored_on_validation_and_the_test_set_once(small_mnist, monkeypatch):
    """PROTOCOL.md: every stage of a baseline on validation, the test set once (the decoded file)."""
    import metaq_utils.baselines.base as base_mod
    import metaq_utils.baselines.inq as inq_mod
    from metaq_utils.baselines.deep_compression import DeepCompression, DeepCompressionConfig
    from metaq_utils.baselines.inq import INQ, INQConfig

    torch.manual_seed(0)
    dense = build_model("lenet300100")
    calls = _counting_evaluate(monkeypatch, small_mnist, [base_mod, inq_mod])
    cfg = DeepCompressionConfig(quality=1.0, rounds=1, retrain_epochs=1, finetune_epochs=0, fc_bits=3)
    run, _ = DeepCompression(cfg, small_mnist).run(dense, "lenet300100")
    assert calls.count("test") == 1 and calls[-1] == "test" and "other" not in calls
    stages = [h for h in run.history if h["stage"] != "encode"]
    assert stages and all("val_accuracy" in h and "accuracy" not in h and "test_accuracy" not in h for h in stages)
    assert run.history[-1]["test_accuracy"] == run.accuracy and run.selection == "validation"
    assert run.to_json_dict()["val_accuracy"] == run.val_accuracy is not None

    calls.clear()
    torch.manual_seed(0)
    run, _ = INQ(INQConfig(fractions=(0.5, 1.0), epochs_per_step=0, bits=3), small_mnist).run(
        build_model("lenet5"), "lenet5")
    assert calls.count("test") == 1 and calls[-1] == "test" and "other" not in calls
    assert all("accuracy" not in h for h in run.history)


def test_stage_accuracy_reads_protocol_and_older_entries(small_mnist):
    from metaq_utils.baselines.base import BaselineMethod, stage_accuracy

    assert stage_accuracy({"stage": "x", "val_accuracy": 0.98}) == (0.98, "validation")
    assert stage_accuracy({"stage": "x", "accuracy": 0.97}) == (0.97, "test")      # older than the protocol
    assert stage_accuracy({"stage": "x"}) == (None, None)
    from metaq_utils.nn.data import MNISTTensors
    no_val = MNISTTensors(small_mnist.train_x, small_mnist.train_y, small_mnist.test_x, small_mnist.test_y)
    with pytest.raises(ValueError, match="validation split"):
        BaselineMethod(None, no_val)._accuracy(build_model("lenet5"))
