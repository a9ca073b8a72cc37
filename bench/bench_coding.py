"""Side-by-side of the entropy codecs on quantized sparse networks: our file format with codec
"context" (metaq_utils.coding.context), "range", "huffman", "zstd22", the order-0 entropy, and
NNCodec's DeepCABAC (nncodec 2.1.3, run in its own venv) on the SAME per-layer integers.

Inputs (command line): METaQ checkpoints (.pt, loaded with metaq_utils.nn.checkpoints) or
compressed files (.mtq, read with metaq_utils.coding.fileformat.read_compressed). Per layer:

* our codecs: the file written with ``per_layer_table_groups(tensors, codec=...)`` (one dense
  group per tensor, table = the tensor's distinct float32 values); ``file_bits`` is the whole
  file, ``payload_bits`` per layer the coded symbols (the table's K float32 are in the file
  overhead). Every file is read back and checked bit-exact.
* integers for NNCodec: for a checkpoint with a uniform grid, ``k = bucket(w) − bucket(0)`` (the
  grid's integer levels, zero at 0; checked to reproduce the tensor); otherwise (tables, e.g.
  Deep Compression's k-means) ``k = rank(w) − rank(0.0)`` among the tensor's sorted distinct
  values. DeepCABAC codes each layer with its own ``deepCABAC.Encoder`` (initCtxModels(11,
  param_opt), encodeLayer with dq_flag 0, scan order 0, profile 0, HDSP off; both param_opt
  settings are tried and the smaller kept) and is decoded back and compared. Its
  ``est_file_bits`` = Σ its layer payloads + the overhead of our "context" file (same header and
  tables), i.e. what our container would weigh with DeepCABAC payloads; NNCodec's own NNR
  headers are not counted.
* ``quant_best.pt`` checkpoints of a prune_quantize run (``result.json`` with per-parameter
  ``steps`` next to them): our files use the recipe's groups instead (per-tensor zero-centred
  ``Grid(0, CΔ/2, C)``, dense; bucket (C−1)/2 is 0.0) and NNCodec gets ``round(w/Δ)``.
* ``.mtq`` inputs also report their original file size (e.g. Deep Compression's sparse
  gap/value Huffman file).

Usage::

    .venv/bin/python bench/bench_coding.py --nnc-python /work/nncvenv/bin/python \\
        --out results/bench_coding.json BestModelsAfterQuantization/*.pt \\
        runs/deep_compression/protocol/*/seed0/model.mtq
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def nnc_worker(npz_in: str, json_out: str) -> None:
    """Runs under NNCodec's venv: encode/decode each int32 array with DeepCABAC."""
    from nncodec.extensions import deepCABAC
    from nncodec.extensions.deepCABAC import HdspMode

    data = np.load(npz_in)
    out = {}
    for key in sorted(data.files, key=lambda k: int(k.split("_")[1])):
        ints = np.ascontiguousarray(data[key].astype(np.int32))
        best = None
        for param_opt in (0, 1):
            enc = deepCABAC.Encoder()
            enc.initCtxModels(11, param_opt)
            chan_skip = np.zeros(ints.shape[0] if ints.ndim else 1, dtype=np.int32)
            enc.encodeLayer(ints, 0, 0, 0, 0, 0, chan_skip, HdspMode.AlwaysOff, np.array((0, 0), dtype=np.int8), 0, 0)
            bs = bytearray(enc.finish().tobytes())
            dec = deepCABAC.Decoder()
            dec.setStream(bs)
            dec.initCtxModels(11)
            got = np.zeros_like(ints)
            dec.decodeLayer(got, 0, 0, 0, 0, HdspMode.AlwaysOff, np.array((0, 0), dtype=np.int8), 0, 0)
            dec.finish()
            ok = bool(np.array_equal(got, ints))
            if best is None or (ok and (not best["exact"] or 8 * len(bs) < best["bits"])):
                best = {"bits": 8 * len(bs), "exact": ok, "param_opt": param_opt}
        out[key] = best
    with open(json_out, "w") as f:
        json.dump(out, f)


def load_tensors(path: str):
    """(arch, names, float32 tensors, grid or None, original file bits or None)."""
    if path.endswith(".mtq"):
        from metaq_utils.coding.fileformat import read_compressed

        cm = read_compressed(path)
        names = None
        try:
            from metaq_utils.nn.networks import parameter_shapes

            names = [n for n, _ in parameter_shapes(cm.arch)]
        except Exception:
            pass
        return cm.arch, names, [t + np.float32(0.0) for t in cm.tensors], None, cm.file_bits
    from metaq_utils.nn.checkpoints import load_checkpoint

    ck = load_checkpoint(path)
    names = list(ck.state_dict)
    tensors = [v.detach().cpu().numpy().astype(np.float32) + np.float32(0.0) for v in ck.state_dict.values()]
    return ck.arch, names, tensors, getattr(ck, "grid", None), None


def recipe_steps(path: str):
    """Per-parameter quantization steps of a prune_quantize run (``result.json`` next to a
    ``quant_best.pt``), or None."""
    rj = Path(path).parent / "result.json"
    if not path.endswith(".pt") or not rj.exists():
        return None
    with open(rj) as f:
        steps = json.load(f).get("steps")
    return steps or None


def grid_groups(names, tensors, steps, codec: str):
    """The recipe's file groups (metaq_utils.recipes.prune_quantize.file_groups without building the
    module): one dense group per tensor on its zero-centred grid Grid(0, CΔ/2, C)."""
    from metaq_utils.coding.fileformat import GroupSpec
    from metaq_utils.recipes.prune_quantize import tensor_grid

    return [GroupSpec(tensors=(i,), codebook=tensor_grid(t, steps[n]), mode="dense", codec=codec)
            for i, (n, t) in enumerate(zip(names, tensors))]


def integers_for(t: np.ndarray, grid) -> tuple[np.ndarray, str]:
    """Signed integer levels (zero at 0) that reproduce ``t`` with a per-layer step/codebook."""
    if isinstance(grid, dict):
        from metaq_utils.core.grid import Grid

        grid = Grid(float(grid["w0"]), float(grid["r"]), int(grid["C"]))
    if grid is not None:
        from metaq_utils.quant.quantization import dequantize, quantize_indices

        idx = quantize_indices(t, grid)
        z = int(quantize_indices(np.zeros(1), grid)[0])
        if np.array_equal(dequantize(idx, grid).astype(np.float32), t) and float(dequantize(np.array([z]), grid)[0]) == 0.0:
            return (idx - z).astype(np.int32), "grid"
    table = np.unique(t)
    ranks = np.searchsorted(table, t)
    z = int(np.searchsorted(table, 0.0)) if (table == 0).any() else int(np.abs(table).argmin())
    return (ranks - z).astype(np.int32), "table-rank"


def entropy_bits(symbols: np.ndarray) -> float:
    c = np.bincount(np.asarray(symbols).ravel() - np.asarray(symbols).min())
    c = c[c > 0]
    return float(-(c * np.log2(c / c.sum())).sum())


def bench_model(path: str, codecs: list[str], nnc_python: str | None) -> dict:
    from metaq_utils.coding.fileformat import per_layer_table_groups, round_trip

    arch, names, tensors, grid, orig_bits = load_tensors(path)
    names = names if names and len(names) == len(tensors) else [f"tensor{i}" for i in range(len(tensors))]
    res = {"path": path, "arch": arch, "n_params": int(sum(t.size for t in tensors)),
           "zero_fraction": float(np.mean(np.concatenate([t.ravel() for t in tensors]) == 0)),
           "layers": names, "codecs": {}}
    if orig_bits is not None:
        res["original_file_bits"] = orig_bits
    steps = recipe_steps(path)
    if steps is not None:
        res["groups"] = "recipe grid (zero-centred Grid(0, C*step/2, C) per tensor, dense)"
        res["steps"] = [steps[n] for n in names]
    for name in codecs:
        t0 = time.perf_counter()
        groups = (per_layer_table_groups(tensors, codec=name) if steps is None
                  else grid_groups(names, tensors, steps, name))
        rt = round_trip(arch, tensors, groups, preprocessing=None)
        dt = time.perf_counter() - t0
        rt.check(names)
        res["codecs"][name] = {
            "file_bits": rt.file_bits,
            "payload_bits": [8 * g.payload_bytes for g in rt.decoded.groups],
            "payload_total_bits": int(sum(8 * g.payload_bytes for g in rt.decoded.groups)),
            "exact": rt.exact,
            "encode_decode_s": round(dt, 3),
        }
    ints, kinds = [], []
    for n, t in zip(names, tensors):
        if steps is not None:
            k = np.rint(t.astype(np.float64) / steps[n]).astype(np.int32)
            ints.append(k.reshape(t.shape))
            kinds.append("round(w/step)")
            continue
        k, kind = integers_for(t, grid)
        ints.append(k.reshape(t.shape))
        kinds.append(kind)
    ent = [entropy_bits(k) for k in ints]
    res["integers"] = sorted(set(kinds))
    res["order0_entropy_bits"] = [round(e, 1) for e in ent]
    res["order0_entropy_total_bits"] = round(sum(ent), 1)
    if nnc_python:
        with tempfile.TemporaryDirectory() as d:
            npz, js = os.path.join(d, "ints.npz"), os.path.join(d, "nnc.json")
            np.savez(npz, **{f"t_{i}": k for i, k in enumerate(ints)})
            t0 = time.perf_counter()
            subprocess.run([nnc_python, os.path.abspath(__file__), "--nnc-worker", npz, js], check=True)
            dt = time.perf_counter() - t0
            with open(js) as f:
                nnc = json.load(f)
        layer = [nnc[f"t_{i}"] for i in range(len(ints))]
        total = int(sum(x["bits"] for x in layer))
        ctx = res["codecs"].get("context")
        res["codecs"]["nncodec_deepcabac"] = {
            "payload_bits": [x["bits"] for x in layer],
            "payload_total_bits": total,
            "exact": all(x["exact"] for x in layer),
            "param_opt": [x["param_opt"] for x in layer],
            "est_file_bits": None if ctx is None else total + ctx["file_bits"] - ctx["payload_total_bits"],
            "encode_decode_s": round(dt, 3),
        }
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="*")
    ap.add_argument("--codecs", default="context,range,huffman,zstd22")
    ap.add_argument("--nnc-python", default=None, help="python of a venv with nncodec installed")
    ap.add_argument("--out", default="results/bench_coding.json")
    ap.add_argument("--nnc-worker", nargs=2, metavar=("NPZ", "JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.nnc_worker:
        nnc_worker(*args.nnc_worker)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    codecs = [c for c in args.codecs.split(",") if c]
    models = []
    for p in args.inputs:
        r = bench_model(p, codecs, args.nnc_python)
        line = "  ".join(f"{k}={v.get('file_bits', v.get('est_file_bits'))}" for k, v in r["codecs"].items())
        print(f"{p}: H0={r['order0_entropy_total_bits']:.0f}  {line}", flush=True)
        models.append(r)
    out = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable and ".venv/bin/python", "bench/bench_coding.py", *(argv if argv is not None else sys.argv[1:])]),
        "note": "bits; file_bits = whole METaQ file (per-layer table groups, no preprocessing block); "
                "payload_bits = coded symbols per layer; nncodec est_file_bits = DeepCABAC payloads + "
                "the context file's overhead",
        "models": models,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
