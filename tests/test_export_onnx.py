"""ONNX export of decoded .mtq files (metaq_utils/export.py, ``python -m metaq_utils export``).

Every shipped compressed file is exported and run in onnxruntime — an implementation of ONNX
independent of torch — on all 10,000 MNIST test images, fed exactly as ``evaluate`` feeds the
decoded torch model; the predicted classes must be equal on every image. The ONNX file's weights
must be the decoded tensors bit for bit. One network of each other registered architecture (a
campaign file where the repository has one) checks the graphs of the other layer types.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the onnx extra: pip install '.[onnx]')")

from metaq_utils.coding.architectures import known_architectures   # noqa: E402
from metaq_utils.coding.fileformat import CompressedFileError, GroupSpec, encode_compressed, read_compressed  # noqa: E402
from metaq_utils.export import OnnxUnavailableError, export_onnx   # noqa: E402
from metaq_utils.nn.data import normalize   # noqa: E402
from metaq_utils.nn.networks import build_model, model_from_compressed   # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = "BestModelsAfterQuantization"


def _tracked(pattern: str) -> list[str] | None:
    try:
        r = subprocess.run(["git", "ls-files", pattern], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.split() if r.returncode == 0 else None


def shipped_files() -> list[str]:
    """The tracked .mtq of the model folder, plus the compressed file each results/headline*.json names."""
    files = _tracked(f"{MODEL_DIR}/*.mtq")
    if files is None:                               # no git (an unpacked archive): what the folder holds
        files = [str(p.relative_to(REPO)) for p in (REPO / MODEL_DIR).glob("*.mtq")]
    for head in sorted((REPO / "results").glob("headline*.json")):
        cf = json.loads(head.read_text()).get("compressed_file")
        if isinstance(cf, str) and cf.endswith(".mtq"):
            files.append(cf)
    return sorted(set(files))


SHIPPED = shipped_files()


@pytest.fixture(scope="module")
def test_images(mnist):
    """The 10,000 test images in [0, 1] and normalised as ``evaluate`` normalises them."""
    return mnist.test_x, normalize(mnist.test_x)


def _session(path: Path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _torch_logits(model, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + 5000]) for i in range(0, x.shape[0], 5000)]).numpy()


def _compare(mtq: Path, onnx_path: Path, x_torch: torch.Tensor, x_feed: np.ndarray, *, raw_input: bool = False):
    """Runs the ONNX file in onnxruntime and the decoded torch model (float32, as `evaluate` runs it,
    and in float64 as the reference of both) on the same inputs; checks the ONNX initializers are the
    decoded tensors bit for bit and that onnxruntime's logits are as close to the float64 logits as
    torch's own float32 logits are (4× their error, + 1e-5: both differ from float64 only by float32
    rounding), on the 256 images where onnxruntime and torch differ most. Returns (max |ONNX − torch float32|, number of differing predictions, n)."""
    import onnx
    from onnx import numpy_helper
    cm = read_compressed(mtq)
    model = model_from_compressed(cm, raw_input=raw_input)
    ref = _torch_logits(model, x_torch)
    got = _session(onnx_path).run(["logits"], {"input": x_feed})[0]
    assert got.shape == ref.shape and got.dtype == np.float32
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(onnx_path)).graph.initializer}
    for (name, p), t in zip(model.named_parameters(), cm.tensors):
        assert name in inits, f"{name} not an initializer of {onnx_path.name}: {sorted(inits)}"
        assert inits[name].dtype == np.float32 and np.array_equal(inits[name], t), f"{name} differs from the file"
    gap = np.max(np.abs(got.astype(np.float64) - ref), axis=1)
    worst = np.argsort(gap)[-256:]                  # float64 (slow on CPU) on the images where they differ most
    with torch.no_grad():
        ref64 = copy.deepcopy(model).double()(x_torch[torch.as_tensor(worst)].double()).numpy()
    diff = float(gap.max())
    err_onnx, err_torch = (float(np.max(np.abs(a[worst].astype(np.float64) - ref64))) for a in (got, ref))
    assert err_onnx <= 4 * err_torch + 1e-5, (f"{mtq.name}: ONNX logits {err_onnx:.3g} from the float64 ones, "
                                              f"torch float32 {err_torch:.3g}; max |ONNX - torch| {diff:.3g}")
    return diff, int(np.sum(got.argmax(1) != ref.argmax(1))), ref.shape[0]


def test_shipped_files_found():
    assert SHIPPED, f"no .mtq found under {MODEL_DIR}/"


@pytest.mark.parametrize("rel", SHIPPED)
def test_export_matches_torch_on_the_test_set(rel, tmp_path, test_images):
    x01, xn = test_images
    out = export_onnx(REPO / rel, tmp_path / "model.onnx")
    assert out["input"] == {"name": "input", "shape": ["N", 1, 28, 28], "dtype": "float32"}
    assert out["output"]["name"] == "logits" and out["preprocessing"]["in_graph"] is False
    diff, wrong, n = _compare(REPO / rel, tmp_path / "model.onnx", xn, xn.numpy())
    assert n == 10_000
    assert wrong == 0, f"{rel}: {wrong} of {n} predictions differ; max |logit diff| {diff:.3g}"
    print(f"{rel}: max |logit diff| {diff:.3g} over {n} test images, predictions equal")


def test_preprocessing_in_graph_takes_images_in_unit_range(tmp_path, test_images):
    """--with-preprocessing: the graph normalises; fed raw [0, 1] images it predicts as the torch model
    that applies the file's preprocessing (``model_from_compressed(raw_input=True)``) and as `evaluate`."""
    x01, xn = test_images
    rel = SHIPPED[0]
    out = export_onnx(REPO / rel, tmp_path / "raw.onnx", include_preprocessing=True)
    assert out["preprocessing"]["in_graph"] is True
    diff, wrong, n = _compare(REPO / rel, tmp_path / "raw.onnx", x01, x01.numpy(), raw_input=True)
    assert wrong == 0, f"{rel}: {wrong} of {n} differ, max |logit diff| {diff:.3g}"
    bare = _torch_logits(model_from_compressed(read_compressed(REPO / rel)), xn)
    got = _session(tmp_path / "raw.onnx").run(["logits"], {"input": x01.numpy()})[0]
    assert np.array_equal(got.argmax(1), bare.argmax(1))


def _architecture_files(tmp_path: Path) -> dict[str, Path]:
    """One file per registered architecture: a shipped one, else a campaign file of the repository,
    else one written here from a freshly initialised network (float32 mode, lossless)."""
    files: dict[str, Path] = {}
    for rel in SHIPPED:
        files.setdefault(read_compressed(REPO / rel).arch, REPO / rel)
    for arch in known_architectures():
        if arch in files:
            continue
        campaign = sorted((REPO / "runs" / "benchmarks" / arch / "seeds").glob("*/seed0/model.mtq"))
        if campaign:
            files[arch] = campaign[0]
            continue
        torch.manual_seed(0)
        tensors = [p.detach() for p in build_model(arch).parameters()]
        files[arch] = tmp_path / f"{arch}.mtq"
        files[arch].write_bytes(encode_compressed(arch, tensors, GroupSpec(mode="float32")))
    return files


def test_every_architecture_exports(tmp_path, test_images):
    x01, xn = test_images
    x, xf = xn[:2000], xn[:2000].numpy()
    for arch, mtq in _architecture_files(tmp_path).items():
        if mtq.is_relative_to(REPO) and mtq.parent.name == MODEL_DIR:
            continue                                    # a shipped file: the parametrised test covers it
        onnx_path = tmp_path / f"{arch}.onnx"
        assert export_onnx(mtq, onnx_path)["arch"] == arch
        diff, wrong, n = _compare(mtq, onnx_path, x, xf)
        assert wrong == 0, f"{arch} ({mtq}): {wrong} of {n} differ, max |logit diff| {diff:.3g}"
        print(f"{arch} ({mtq.relative_to(REPO) if mtq.is_relative_to(REPO) else mtq.name}): "
              f"max |logit diff| {diff:.3g} over {n} images")


def test_cli_end_to_end(tmp_path, test_images):
    x01, xn = test_images
    rel = SHIPPED[-1]
    out_path = tmp_path / "cli" / "model.onnx"
    r = subprocess.run([sys.executable, "-m", "metaq_utils", "export", rel, "--onnx", str(out_path), "--json"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["onnx"] == str(out_path) and info["onnx_bytes"] == out_path.stat().st_size
    assert info["arch"] == read_compressed(REPO / rel).arch
    diff, wrong, n = _compare(REPO / rel, out_path, xn[:1000], xn[:1000].numpy())
    assert wrong == 0, f"{rel}: {wrong} of {n} differ, max |logit diff| {diff:.3g}"


def test_cli_prints_what_it_wrote(tmp_path, capsys):
    from metaq_utils.__main__ import main
    out_path = tmp_path / "model.onnx"
    assert main(["export", str(REPO / SHIPPED[0]), "--onnx", str(out_path)]) == 0
    text = capsys.readouterr().out
    assert f"→ {out_path} ({out_path.stat().st_size:,} bytes" in text and "feed it: float32 (x - " in text, text


def _corrupted(tmp_path: Path) -> dict[str, Path]:
    data = (REPO / SHIPPED[0]).read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    cases = {"truncated": data[: len(data) // 2], "flipped": bytes(flipped), "empty": b"", "foreign": b"PK\x03\x04zip"}
    paths = {}
    for name, blob in cases.items():
        paths[name] = tmp_path / f"{name}.mtq"
        paths[name].write_bytes(blob)
    return paths


def test_corrupted_file_gives_the_format_error_and_writes_nothing(tmp_path, capsys):
    target = tmp_path / "out.onnx"
    target.write_bytes(b"earlier export")
    for name, path in _corrupted(tmp_path).items():
        with pytest.raises(CompressedFileError):
            export_onnx(path, target)
        assert target.read_bytes() == b"earlier export", f"{name}: the earlier .onnx was touched"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".mtq") == ["out.onnx"]   # no temporary left
    from metaq_utils.__main__ import main
    assert main(["export", str(tmp_path / "truncated.mtq"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "error: truncated" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()


def test_refuses_to_overwrite_the_compressed_file(tmp_path):
    mtq = tmp_path / "m.mtq"
    mtq.write_bytes((REPO / SHIPPED[0]).read_bytes())
    with pytest.raises(ValueError, match="overwrite"):
        export_onnx(mtq, mtq)
    assert mtq.read_bytes() == (REPO / SHIPPED[0]).read_bytes()


@pytest.mark.parametrize("package", ["onnx", "onnxscript"])
def test_missing_exporter_package_names_the_extra(package, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, package, None)       # `import package` now raises ImportError
    with pytest.raises(OnnxUnavailableError, match=r"pip install '\.\[onnx\]'") as e:
        export_onnx(REPO / SHIPPED[0], tmp_path / "m.onnx")
    assert package in str(e.value) and not (tmp_path / "m.onnx").exists()
    from metaq_utils.__main__ import main
    assert main(["export", str(REPO / SHIPPED[0]), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "pip install '.[onnx]'" in capsys.readouterr().err
