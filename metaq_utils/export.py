"""ONNX export of a decoded compressed model: ``python -m metaq_utils export FILE.mtq --onnx OUT.onnx``.

:func:`export_onnx` decodes a ``.mtq`` file exactly as ``python -m metaq_utils evaluate`` does
(:func:`metaq_utils.coding.fileformat.read_compressed`, then
:func:`metaq_utils.nn.networks.model_from_compressed`), and writes the rebuilt float32 network
with torch's ONNX exporter (``torch.onnx.export(..., dynamo=True)``, which needs ``onnx`` and
``onnxscript``; running the result needs ``onnxruntime``: the ``onnx`` extra, ``pip install '.[onnx]'``).

The ONNX graph has one input ``"input"``, float32 of shape ``(N, 1, 28, 28)`` with a dynamic batch
axis ``N``, and one output ``"logits"``, float32 ``(N, 10)`` (unnormalised class scores; the
prediction is their argmax).

Input preprocessing — what the decoded model expects, as :mod:`metaq_utils.coding.preprocessing`
defines it: an image is a 28×28 grayscale MNIST digit with values ``pixel / 255`` in ``[0, 1]``;
the network sees ``(x − mean) / std`` with the file's recorded preprocessing block (format version 2)
or, for a version-1 file that records none, its architecture's registry entry
(:mod:`metaq_utils.coding.architectures`); for every registered network that is MNIST's
``mean = 0.1307``, ``std = 0.3081``.

* ``include_preprocessing=False`` (default): the graph is the bare network, fed the *normalised*
  images, as ``evaluate`` feeds the decoded model (:func:`metaq_utils.nn.data.normalize`). The
  caller applies ``(x − mean) / std`` (float32) before running it.
* ``include_preprocessing=True``: the normalisation is inside the graph
  (:class:`metaq_utils.nn.networks.Normalize`), which then takes images in ``[0, 1]``.

Either way the preprocessing is in the returned dict (``"preprocessing"``) and in the ONNX file's
``metadata_props`` (``metaq.preprocessing``, JSON), with ``metaq.arch`` and ``metaq.source``.

Errors: a corrupted, truncated or foreign ``.mtq`` raises the file format's own
:class:`~metaq_utils.coding.fileformat.CompressedFileError`; a missing exporter package raises
:class:`OnnxUnavailableError` (an ``ImportError``) naming the extra. The ``.onnx`` is written
atomically (a temporary file in the target folder, then ``os.replace``): a failed export leaves any
earlier file untouched.
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "IMAGE_SHAPE", "OnnxUnavailableError", "export_onnx"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
IMAGE_SHAPE = (1, 28, 28)          # channels, height, width of every registered (MNIST) network's input
_EXPORT_PACKAGES = ("onnx", "onnxscript")   # torch.onnx.export(dynamo=True) needs both
INSTALL_HINT = "pip install '.[onnx]'  (or: pip install onnx onnxscript onnxruntime)"


class OnnxUnavailableError(ImportError):
    """A package the ONNX export needs is not installed."""


def _require_exporter() -> None:
    missing = []
    for name in _EXPORT_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise OnnxUnavailableError(f"ONNX export needs the package(s) {', '.join(missing)}, not installed; "
                                   f"install the onnx extra: {INSTALL_HINT}")


def export_onnx(mtq_path: str | os.PathLike, onnx_path: str | os.PathLike, *,
                include_preprocessing: bool = False, opset_version: int | None = None) -> dict[str, Any]:
    """Decode ``mtq_path`` and write its network as ONNX to ``onnx_path`` (see the module docstring
    for the graph's input, output and the preprocessing it expects). Returns a JSON-safe dict:
    ``mtq``, ``onnx``, ``arch``, ``format_version``, ``n_params``, ``file_bits``, ``onnx_bytes``,
    ``opset``, ``input`` / ``output`` (name, shape with ``"N"`` for the batch axis, dtype) and
    ``preprocessing`` (``input``, ``normalize`` {mean, std}, ``recorded_in`` "file" or "registry",
    ``in_graph`` and ``feed``: what to give the graph)."""
    mtq_path, onnx_path = Path(mtq_path), Path(onnx_path)
    if onnx_path.resolve() == mtq_path.resolve():
        raise ValueError(f"export: the ONNX output {onnx_path} would overwrite the compressed file")
    _require_exporter()
    import onnx
    import torch

    from .coding.architectures import preprocessing_for
    from .coding.fileformat import read_compressed
    from .nn.networks import model_from_compressed, with_preprocessing
    from .store.atomic import atomic_write_bytes

    cm = read_compressed(mtq_path)                 # CompressedFileError on a bad file
    recorded = cm.preprocessing
    pre = recorded or preprocessing_for(cm.arch)
    if pre is None:
        raise ValueError(f"{mtq_path}: architecture {cm.arch!r} records no preprocessing and has no registry entry")
    if pre.channels != IMAGE_SHAPE[0]:
        raise ValueError(f"{mtq_path}: preprocessing has {pre.channels} channels, the export expects {IMAGE_SHAPE[0]}")
    net = model_from_compressed(cm)                # the bare network, as `evaluate` builds it
    model = (with_preprocessing(net, pre) if include_preprocessing else net).eval()

    example = torch.zeros((2,) + IMAGE_SHAPE, dtype=torch.float32)
    with torch.no_grad():
        n_classes = int(model(example).shape[1])
    program = torch.onnx.export(model, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=({0: torch.export.Dim("N")},), opset_version=opset_version,
                                dynamo=True, external_data=False, verbose=False)
    proto = program.model_proto

    pre_info = {**pre.to_dict(), "recorded_in": "file" if recorded is not None else "registry",
                "in_graph": bool(include_preprocessing),
                "feed": ("float32 images in [0, 1] (pixel / 255), shape (N, 1, 28, 28); the graph normalises them"
                         if include_preprocessing else
                         f"float32 (x - {pre.mean[0]}) / {pre.std[0]} of images x in [0, 1] (pixel / 255), "
                         "shape (N, 1, 28, 28)")}
    meta = {"metaq.arch": cm.arch, "metaq.source": mtq_path.name, "metaq.preprocessing": json.dumps(pre_info)}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (f"METaQ decoded model {mtq_path.name} ({cm.arch}, {cm.n_params:,} parameters); "
                        f"input {INPUT_NAME!r}: {pre_info['feed']}; output {OUTPUT_NAME!r}: (N, {n_classes}) logits")
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    atomic_write_bytes(onnx_path, data)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"mtq": str(mtq_path), "onnx": str(onnx_path), "arch": cm.arch, "format_version": cm.version,
            "n_params": cm.n_params, "file_bits": cm.file_bits, "onnx_bytes": len(data), "opset": opset,
            "input": {"name": INPUT_NAME, "shape": ["N", *IMAGE_SHAPE], "dtype": "float32"},
            "output": {"name": OUTPUT_NAME, "shape": ["N", n_classes], "dtype": "float32"},
            "preprocessing": pre_info}
