import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from metaq_utils.checkpoints import load_checkpoint, save_checkpoint
from metaq_utils.fileformat import CompressedFileError, read_compressed
from metaq_utils.grid import Grid
from metaq_utils.networks import build_model
from metaq_utils.pipeline import compress_model, format_table, load_any, model_from_compressed, run_pipeline
from metaq_utils.ptq import model_vector, quantize_model, select_point, sweep_cq, SweepPoint
from metaq_utils.regularizer import METaQConfig
from metaq_utils.training import TrainConfig, evaluate

from conftest import DATA_ROOT, REPO


def test_pipeline_end_to_end_small(small_mnist, tmp_path):
    cfg = TrainConfig(epochs=1, seed=0, augment=False)
    res = run_pipeline(small_mnist, cfg, METaQConfig(), name="t", cq_values=[4, 8, 16, 32], tolerance=0.05,
                       before_dir=tmp_path / "before", after_dir=tmp_path / "after", progress=False)
    assert (tmp_path / "before" / "t.pt").exists() and res.after_path.endswith(f"t_CQ{res.selected.C_Q}.pt")
    assert {r.codec for r in res.codec_rows} == {"huffman", "range", "gzip9", "zstd22", "raw"}
    for row in res.codec_rows:
        assert row.decoded_exact
        assert row.decoded_accuracy == pytest.approx(res.selected.accuracy)    # same model, same accuracy
        f = tmp_path / "after" / f"t_CQ{res.selected.C_Q}.{row.codec}.mtq"
        assert f.stat().st_size * 8 == row.file_bits                           # sizes are whole files
    assert [p.C_Q for p in res.sweep] == [4, 8, 16, 32] and all(p.file_bits for p in res.sweep)
    assert "range" in format_table(res) and "1,421,632" in format_table(res)


def test_sweep_point_accuracy_is_that_of_the_quantized_model(small_mnist):
    torch.manual_seed(0)
    m = build_model("lenet5")
    pts = sweep_cq(m, small_mnist.test_x, small_mnist.test_y, [3, 7], w0=-0.11, r=1.114, progress=False)
    q, idx = quantize_model(m, Grid(-0.11, 1.114, 7))
    assert pts[1].accuracy == evaluate(q, small_mnist.test_x, small_mnist.test_y)["accuracy"]
    assert pts[1].used_buckets == len(np.unique(idx))
    # every quantized weight is a bucket centre
    assert set(model_vector(q).astype(np.float32).tolist()) <= set(Grid(-0.11, 1.114, 7).v.astype(np.float32).tolist())


def test_select_point_rule():
    pts = [SweepPoint(2, 0.5, 10, 2), SweepPoint(8, 0.985, 100, 8), SweepPoint(16, 0.99, 200, 16), SweepPoint(32, 0.991, 300, 32)]
    assert select_point(pts, 0.991, 0.001).C_Q == 16
    assert select_point(pts, 0.991, 0.0).C_Q == 32
    with pytest.raises(ValueError, match="no C_Q reaches"):
        select_point(pts, 0.999, 0.0)


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
