import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from metaq_utils.coding.fileformat import CompressedFileError, read_compressed
from metaq_utils.core.grid import Grid
from metaq_utils.nn.checkpoints import load_checkpoint, save_checkpoint
from metaq_utils.nn.networks import build_model
from metaq_utils.nn.ptq import check_clean_validation, model_vector, quantize_model, select_point, sweep_cq, SweepPoint
from metaq_utils.nn.regularizer import METaQConfig
from metaq_utils.nn.training import TrainConfig, evaluate
from metaq_utils.pipeline import (PipelineOptions, QuantizedModel, compress_model, format_table, load_any,
                                  model_from_compressed, run_pipeline)

from conftest import DATA_ROOT, REPO


def test_pipeline_end_to_end_small(small_mnist, tmp_path):
    cfg = TrainConfig(epochs=1, seed=0, augment=False)
    res = run_pipeline(small_mnist, cfg, METaQConfig(), name="t", cq_values=[4, 8, 16, 32], tolerance=0.05,
                       before_dir=tmp_path / "before", after_dir=tmp_path / "after", progress=False)
    assert (tmp_path / "before" / "t.pt").exists() and res.after_path.endswith(f"t_CQ{res.selected.C_Q}.pt")
    assert {r.codec for r in res.codec_rows} == {"huffman", "range", "gzip9", "zstd22", "raw"}
    for row in res.codec_rows:
        assert row.decoded_exact
        assert row.decoded_val_accuracy == pytest.approx(res.selected.accuracy)   # same model, same accuracy
        assert row.decoded_accuracy == pytest.approx(res.test_accuracy)           # test, once, after selection
        f = tmp_path / "after" / f"t_CQ{res.selected.C_Q}.{row.codec}.mtq"
        assert f.stat().st_size * 8 == row.file_bits                           # sizes are whole files
    assert [p.C_Q for p in res.sweep] == [4, 8, 16, 32] and all(p.file_bits for p in res.sweep)
    table = format_table(res)
    assert "range" in table and "1,421,632" in table
    assert "val acc %" in table and "test acc %" in table and "selected on VALIDATION" in table
    # the main job shows what the entropy term added (the default METaQConfig(): thesis rules, β ≠ 0)
    assert "entropy term (β of the last training step" in table
    beta_row = next(line for line in table.splitlines() if line.strip().startswith("1 "))
    assert float(beta_row.split()[4]) > 0                                     # β max > 0: it acts
    assert "added nothing" not in table


def test_pipeline_table_says_when_the_term_added_nothing(small_mnist, tmp_path):
    """Under our former rules (constant start, best point) β stays 0: the table says so."""
    cfg = TrainConfig(epochs=1, seed=0, augment=False)
    res = run_pipeline(small_mnist, cfg, METaQConfig(variant="constant_best"), name="z", cq_values=[8, 16],
                       tolerance=0.5, before_dir=tmp_path, after_dir=tmp_path, progress=False, codecs=("range",))
    assert "β = 0 at every recorded step: the term added nothing" in format_table(res)


def test_pipeline_selects_on_validation_and_tests_once_after(small_mnist, tmp_path):
    """The sweep and the selection use the validation split; the test set only scores the selected models."""
    cfg = TrainConfig(epochs=1, seed=0, augment=False)
    res = run_pipeline(small_mnist, cfg, METaQConfig(), name="v", cq_values=[4, 8, 16], tolerance=0.05,
                       before_dir=tmp_path / "b", after_dir=tmp_path / "a", progress=False, codecs=["range"])
    assert res.selection == "validation" and res.split == small_mnist.split
    assert all(p.evaluated_on == "validation" for p in res.sweep)
    assert all("test_accuracy" not in r and r["selection"] == "validation" for r in res.train_history)
    unq = load_checkpoint(tmp_path / "b" / "v.pt")
    assert unq.config["selection"] == "validation" and unq.metrics["epoch"] == res.best_epoch
    model = unq.build_model()
    assert res.unquantized_val_accuracy == evaluate(model, small_mnist.val_x, small_mnist.val_y)["accuracy"]
    assert res.unquantized_test_accuracy == evaluate(model, small_mnist.test_x, small_mnist.test_y)["accuracy"]
    q = load_checkpoint(res.after_path)
    qm = q.build_model()
    assert res.selected.accuracy == res.val_accuracy == evaluate(qm, small_mnist.val_x, small_mnist.val_y)["accuracy"]
    assert res.test_accuracy == evaluate(qm, small_mnist.test_x, small_mnist.test_y)["accuracy"]
    assert q.config["selection"] == "validation" and q.metrics["selection"] == "validation"
    assert q.config["split"]["val_indices_sha256"] == small_mnist.split["val_indices_sha256"]
    assert q.metrics["val_accuracy"] == res.val_accuracy and q.metrics["test_accuracy"] == res.test_accuracy
    d = res.to_dict()
    assert d["selection"] == "validation" and {"val_accuracy", "test_accuracy", "unquantized_val_accuracy",
                                               "unquantized_test_accuracy", "split"} <= set(d)


def test_pipeline_select_on_test_marks_everything(small_mnist, tmp_path):
    cfg = TrainConfig(epochs=1, seed=0, augment=False)
    res = run_pipeline(small_mnist, cfg, METaQConfig(), name="t", cq_values=[4, 8], tolerance=0.05,
                       before_dir=tmp_path / "b", after_dir=tmp_path / "a", progress=False, codecs=["range"],
                       select_on="test")
    assert res.selection == "test" and all(p.evaluated_on == "test" for p in res.sweep)
    assert all(r["selection"] == "test" for r in res.train_history)
    assert res.selected.accuracy == res.test_accuracy
    for path in (tmp_path / "b" / "t.pt", res.after_path):
        ck = load_checkpoint(path)
        assert ck.config["selection"] == "test" and ck.metrics["selection"] == "test"
    assert "selected on TEST" in format_table(res) and res.to_dict()["selection"] == "test"


def test_pipeline_without_validation_split_needs_explicit_test(small_mnist, tmp_path):
    from metaq_utils.nn.data import MNISTTensors
    data = MNISTTensors(small_mnist.train_x[:256], small_mnist.train_y[:256], small_mnist.test_x, small_mnist.test_y)
    with pytest.raises(ValueError, match="no validation split"):
        run_pipeline(data, TrainConfig(epochs=1), METaQConfig(), before_dir=tmp_path, after_dir=tmp_path, progress=False)


def test_pipeline_options_and_keywords_and_the_plain_range(small_mnist, tmp_path):
    """run_pipeline's options come as a PipelineOptions or as keywords (which override it); a plain
    model (no METaQ grid) is quantized on the thesis range, and the checkpoint says so."""
    from metaq_utils.core.grid import thesis_grid
    torch.manual_seed(0)
    m = build_model("lenet5")
    opts = PipelineOptions(name="p", cq_values=[4, 8], tolerance=0.5, codecs=("range",), progress=False,
                           before_dir=tmp_path, after_dir=tmp_path / "o")
    a = run_pipeline(small_mnist, TrainConfig(epochs=0), None, opts, model=m)
    b = run_pipeline(small_mnist, TrainConfig(epochs=0), None, model=m, name="p", cq_values=[4, 8], tolerance=0.5,
                     codecs=("range",), progress=False, before_dir=tmp_path, after_dir=tmp_path / "k")
    c = run_pipeline(small_mnist, TrainConfig(epochs=0), None, opts, model=m, after_dir=tmp_path / "x")
    assert a.sweep == b.sweep == c.sweep and a.after_path.startswith(str(tmp_path / "o"))
    assert c.after_path.startswith(str(tmp_path / "x"))                      # a keyword overrides the options
    q = load_checkpoint(a.after_path)
    assert q.grid == thesis_grid(a.selected.C_Q).to_dict()
    assert q.config["metaq"] is None and "thesis range" in q.config["quantization_range"]
    assert q.metrics["C_Q"] == a.selected.C_Q and q.metrics["entropy_bits"] == a.selected.entropy_bits
    with pytest.raises(TypeError):
        run_pipeline(small_mnist, TrainConfig(epochs=0), None, opts, model=m, tolerence=0.1)


def test_quantized_model_quantizes_saves_and_codes(small_mnist, tmp_path):
    torch.manual_seed(0)
    m = build_model("lenet5")
    grid = Grid(0.0, 0.5, 9)
    q = QuantizedModel.of(m, "lenet5", grid)
    ref, idx = quantize_model(m, grid)
    assert np.array_equal(model_vector(q.model), model_vector(ref)) and np.array_equal(q.indices, idx)
    ck = load_checkpoint(q.save(tmp_path / "q.pt", config={"x": 1}, metrics={"accuracy": 0.5}))
    assert ck.grid == grid.to_dict() and ck.metrics == {"accuracy": 0.5, "entropy_bits": q.entropy_bits, "C_Q": 9}
    (row,) = q.code(small_mnist, codecs=("range",), out_dir=tmp_path, stem="q")
    assert row.decoded_exact and (tmp_path / "q.range.mtq").stat().st_size * 8 == row.file_bits
    assert (tmp_path / "q.range.mtq").read_bytes() == compress_model(m, "lenet5", grid, "range")

def test_sweep_point_accuracy_is_that_of_the_quantized_model(small_mnist):
    torch.manual_seed(0)
    m = build_model("lenet5")
    pts = sweep_cq(m, small_mnist.val_x, small_mnist.val_y, [3, 7], evaluated_on="validation", w0=-0.11, r=1.114,
                   progress=False)
    q, idx = quantize_model(m, Grid(-0.11, 1.114, 7))
    assert pts[1].accuracy == evaluate(q, small_mnist.val_x, small_mnist.val_y)["accuracy"]
    assert all(p.evaluated_on == "validation" for p in pts)
    assert pts[1].used_buckets == len(np.unique(idx))
    # every quantized weight is a bucket centre
    assert set(model_vector(q).astype(np.float32).tolist()) <= set(Grid(-0.11, 1.114, 7).v.astype(np.float32).tolist())


def test_select_point_rule():
    pts = [SweepPoint(2, 0.5, 10, 2), SweepPoint(8, 0.985, 100, 8), SweepPoint(16, 0.99, 200, 16), SweepPoint(32, 0.991, 300, 32)]
    assert select_point(pts, 0.991, 0.001).C_Q == 16
    assert select_point(pts, 0.991, 0.0).C_Q == 32
    with pytest.raises(ValueError, match="no C_Q reaches"):
        select_point(pts, 0.999, 0.0)


def test_selection_functions_take_the_validation_split(small_mnist):
    """sweep_cq must be told which split it scores; select_point refuses test-scored points
    unless the test selection is explicit."""
    m = build_model("lenet5")
    with pytest.raises(TypeError, match="evaluated_on"):
        sweep_cq(m, small_mnist.test_x, small_mnist.test_y, [3], w0=-0.11, r=1.114, progress=False)
    with pytest.raises(ValueError, match="select_on must be"):
        sweep_cq(m, small_mnist.val_x, small_mnist.val_y, [3], evaluated_on="train", w0=-0.11, r=1.114, progress=False)
    test_pts = [SweepPoint(8, 0.985, 100, 8, evaluated_on="test"), SweepPoint(16, 0.99, 200, 16, evaluated_on="test")]
    with pytest.raises(ValueError, match="scored on 'test'.*select_on='test'"):
        select_point(test_pts, 0.99, 0.01)
    assert select_point(test_pts, 0.99, 0.01, select_on="test").C_Q == 8
    val_pts = [SweepPoint(8, 0.985, 100, 8), SweepPoint(16, 0.99, 200, 16)]
    with pytest.raises(ValueError, match="scored on 'validation'"):
        select_point(val_pts, 0.99, 0.01, select_on="test")


def test_check_clean_validation(small_mnist):
    check_clean_validation({"split": dict(small_mnist.split)}, small_mnist.split)
    with pytest.raises(ValueError, match="legacy run"):
        check_clean_validation({"train": {}}, small_mnist.split)
    with pytest.raises(ValueError, match="another split"):
        check_clean_validation({"split": {"val_indices_sha256": "ab"}}, small_mnist.split)
    with pytest.raises(ValueError, match="no validation split"):
        check_clean_validation({"split": dict(small_mnist.split)}, {"val_size": 0, "val_indices_sha256": None})


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "metaq_utils", "--root", DATA_ROOT, *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def test_cli_compress_decompress_evaluate(tmp_path):
    torch.manual_seed(1)
    m = build_model("lenet5")
    ck = save_checkpoint(tmp_path / "m.pt", m, "lenet5", grid={"w0": -0.11, "r": 1.114, "C": 64})
    mtq = tmp_path / "m.mtq"
    r = _cli("compress", str(ck), "--codec", "range", "--out", str(mtq))
    assert r.returncode == 0, r.stderr
    r = _cli("evaluate", str(mtq), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"accuracy", "file_bits", "n_params", "compression_ratio"}
    assert out["file_bits"] == mtq.stat().st_size * 8 and out["n_params"] == 44_426
    assert out["compression_ratio"] == pytest.approx(32 * 44_426 / out["file_bits"])
    q, _ = quantize_model(m, Grid(-0.11, 1.114, 64))
    r = _cli("decompress", str(mtq), "--out", str(tmp_path / "sd.pt"))
    assert r.returncode == 0, r.stderr
    sd = torch.load(tmp_path / "sd.pt", weights_only=True)           # a plain state_dict
    for (k, a), b in zip(sd.items(), q.parameters()):
        assert torch.equal(a, b.detach()), k


def test_cli_reports_corrupted_files_clearly(tmp_path):
    torch.manual_seed(2)
    data = compress_model(build_model("lenet5"), "lenet5", Grid(-0.11, 1.114, 16), "range")
    bad = tmp_path / "bad.mtq"
    bad.write_bytes(data[: len(data) // 2])
    r = _cli("evaluate", str(bad))
    assert r.returncode == 2 and "error:" in r.stderr and "truncated" in r.stderr
    with pytest.raises(CompressedFileError):
        load_any(bad)
    ck = tmp_path / "c.pt"
    ck.write_bytes(b"PK\x03\x04 not really a checkpoint")
    r = _cli("evaluate", str(ck))
    assert r.returncode == 2 and "cannot be read" in r.stderr


def test_cli_stop_rule_parsing_and_errors():
    from metaq_utils.__main__ import _stop_rules, build_parser
    args = build_parser().parse_args(["train", "--stop-rule", "5:test_accuracy:0.97", "--stop-rule", "20:entropy_grid_bits::60000"])
    r1, r2 = _stop_rules(args)
    assert (r1.epoch, r1.metric, r1.minimum, r1.maximum) == (5, "test_accuracy", 0.97, None)
    assert (r2.epoch, r2.metric, r2.minimum, r2.maximum) == (20, "entropy_grid_bits", None, 60000.0)
    for bad in ("x:acc:1", "5:acc", "5:acc::"):
        with pytest.raises(ValueError, match="--stop-rule"):
            _stop_rules(build_parser().parse_args(["train", "--stop-rule", bad]))


def test_cli_select_on_option_parses():
    from metaq_utils.__main__ import build_parser
    for cmd in (["train"], ["pipeline"], ["quantize", "x.pt"]):
        assert build_parser().parse_args(cmd).select_on == "validation"
        assert build_parser().parse_args(cmd + ["--select-on", "test"]).select_on == "test"
        with pytest.raises(SystemExit):
            build_parser().parse_args(cmd + ["--select-on", "train"])


def test_cli_quantize_selects_on_validation_and_marks_test(tmp_path, mnist):
    torch.manual_seed(3)
    m = build_model("lenet5")
    legacy = save_checkpoint(tmp_path / "legacy.pt", m, "lenet5", config={"train": {}})
    # a legacy checkpoint (no split recorded: trained on all 60k) cannot be selected on validation
    r = _cli("quantize", str(legacy), "--max-cq", "4", "--tolerance", "1", "--out", str(tmp_path / "q0.pt"), "--w0", "-0.11", "--r", "1.114")
    assert r.returncode == 2 and "contaminated" in r.stderr
    r = _cli("quantize", str(legacy), "--max-cq", "4", "--tolerance", "1", "--out", str(tmp_path / "q1.pt"), "--select-on", "test",
             "--w0", "-0.11", "--r", "1.114")
    assert r.returncode == 0, r.stderr
    q1 = load_checkpoint(tmp_path / "q1.pt")
    assert q1.metrics["selection"] == q1.config["selection"] == "test" and q1.metrics["cq_selection"] == "test"
    # a checkpoint trained with the split held out: selection on validation, test measured once after
    clean = save_checkpoint(tmp_path / "clean.pt", m, "lenet5",
                            config={"train": {}, "split": dict(mnist.split), "selection": "validation"})
    r = _cli("quantize", str(clean), "--max-cq", "4", "--tolerance", "1", "--out", str(tmp_path / "q2.pt"), "--w0", "-0.11", "--r", "1.114")
    assert r.returncode == 0, r.stderr
    q2 = load_checkpoint(tmp_path / "q2.pt")
    assert q2.metrics["selection"] == "validation" and q2.metrics["cq_selection"] == "validation"
    qm = q2.build_model()
    assert q2.metrics["test_accuracy"] == evaluate(qm, mnist.test_x, mnist.test_y)["accuracy"]
    assert q2.metrics["val_accuracy"] == evaluate(qm, mnist.val_x, mnist.val_y)["accuracy"]


@pytest.mark.parametrize("arch", ["lenet5", "lenet300100", "lenet5caffe"])
def test_cli_pipeline_names_its_files_after_the_network(arch, monkeypatch):
    """The default file stem is metaq_<arch> (it was metaq_lenet5 for every network); --name overrides it."""
    import metaq_utils.nn.data as data_mod
    import metaq_utils.pipeline as pipeline_mod
    from metaq_utils.__main__ import main

    seen = []

    class Stop(Exception):
        pass

    def fake_run(data, cfg, metaq, *, name, **kw):
        seen.append((cfg.arch, name))
        raise Stop

    monkeypatch.setattr(data_mod, "load_mnist", lambda *a, **k: None)
    monkeypatch.setattr(pipeline_mod, "run_pipeline", fake_run)
    for argv, stem in ((["pipeline", "--arch", arch, "--quiet"], f"metaq_{arch}"),
                       (["pipeline", "--arch", arch, "--quiet", "--name", "mine"], "mine")):
        with pytest.raises(Stop):
            main(argv)
        assert seen.pop() == (arch, stem)
