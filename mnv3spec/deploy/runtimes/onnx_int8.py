"""int8 ONNX models made: the float export, its calibration and static quantization in QDQ
format, what stays float. The file is one ``.onnx`` whose ``metadata_props`` carry what a
checkpoint's metadata carries (:mod:`.onnx_model`, shared with export's float files); the flow
around it, with its accuracy gate, is :mod:`.onnxruntime`'s.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .onnx_model import require_onnx, write_onnx

BATCH = 64  # images per calibration call


# 7-bit weights: without AVX-512 VNNI, ONNX Runtime's uint8 × int8 kernels sum pairs of products
# in int16, which saturates on 8-bit weights (measured here: logits 10 % of their scale away from
# the fake-quant graph's; 2 % with 7 bits). ONNX Runtime's own advice for such CPUs.
REDUCE_RANGE = True
# Ops that move or re-type int8 data, not float compute, in the graph ONNX Runtime runs.
_NOT_COMPUTE = {
    *("QuantizeLinear", "DequantizeLinear", "Transpose", "Reshape", "Flatten", "Identity"),
    *("ReorderInput", "ReorderOutput"),  # NCHWc layout changes around float convolutions
    *("Squeeze", "Unsqueeze"),  # the classifier's 1×1 input flattened for its matrix product
}


def export_float(fast: nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    """The BN-folded ``fast`` as ONNX for inputs of ``shape`` (C, H, W) with a dynamic batch, ready
    for quantization: contiguous (a channels_last export adds a Gather per SE block) and with
    SE's ReduceMean as GlobalAveragePool (which has an int8 kernel)."""
    onnx, _ = require_onnx()
    fast = fast.cpu().to(memory_format=torch.contiguous_format)
    write_onnx(fast, path, torch.randn(2, *shape), dynamic_batch=True)
    proto = onnx.load(str(path))
    _reduce_mean_to_pool(proto)
    onnx.save(proto, str(path))
    return path


def _reduce_mean_to_pool(proto: Any) -> None:
    """ReduceMean over the two spatial axes with keepdims is GlobalAveragePool; rewrite it."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type != "ReduceMean" or len(node.input) != 2 or node.input[1] not in consts:
            continue
        axes = sorted(int(a) % 4 for a in consts[node.input[1]].ravel())
        keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        if axes == [2, 3] and keep == 1:
            node.op_type = "GlobalAveragePool"
            del node.input[1:]
            del node.attribute[:]
    used = {name for node in proto.graph.node for name in node.input}
    unused = [i for i in proto.graph.initializer if i.name not in used]
    for init in unused:  # else ONNX Runtime warns about each when it loads the model
        proto.graph.initializer.remove(init)


class _Reader:
    """An ONNX Runtime CalibrationDataReader over normalised images, ``BATCH`` at a time."""

    def __init__(self, images: torch.Tensor) -> None:
        self._batches = iter(images.split(BATCH))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"input": batch.contiguous().numpy()}


def quantize_onnx(
    float_path: Path,
    int8_path: Path,
    calib_images: torch.Tensor | None,
    cache: Path,
    *,
    exclude_rows: Iterable[str] = (),
    only_rows: Iterable[str] | None = None,
) -> None:
    """QDQ int8 of ``float_path``: per-channel int8 weights (7-bit, :data:`REDUCE_RANGE`), uint8
    activations. Calibration ranges are read from ``cache`` when it exists, else computed on
    ``calib_images`` and saved there. ``exclude_rows`` stay float; with ``only_rows`` only those
    rows are quantized."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    onnx, _ = require_onnx()
    rows = node_rows(onnx.load(str(float_path)))
    excluded = set(exclude_rows)
    exclude = [n for n, r in rows.items() if r in excluded]
    include = None
    if only_rows is not None:
        include = [n for n, r in rows.items() if r in set(only_rows)]
        if not include:  # an empty list would mean every node to quantize_static
            raise ValueError(f"no nodes in rows {only_rows}")
    # quantize_static logs "consider pre-processing" (shape inference) on every call; the
    # exporter's graph has its shapes already.
    logging.disable(logging.WARNING)
    try:
        quantize_static(
            str(float_path),
            str(int8_path),
            _Reader(calib_images) if calib_images is not None else None,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=REDUCE_RANGE,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=exclude,
            nodes_to_quantize=include,
            calibration_cache_path=str(cache),
        )
    finally:
        logging.disable(logging.NOTSET)


def node_rows(proto: Any) -> dict[str, str]:
    """ONNX node name → spec row (``r03_bneck``), from the exporter's name scopes
    (``['', 'layers', 'layers.r03_bneck', ...]``); nodes outside any row are left out."""
    rows = {}
    for node in proto.graph.node:
        scopes = next(
            (m.value for m in node.metadata_props if m.key == "pkg.torch.onnx.name_scopes"), ""
        )
        for scope in json.loads(scopes.replace("'", '"')) if scopes else []:
            if scope.startswith("layers.") and scope.count(".") == 1:
                rows[node.name] = scope.split(".", 1)[1]
                break
    return rows


def float_ops(path: Path) -> Counter:
    """Op types that compute in float in the graph ONNX Runtime builds from ``path`` (after its
    QDQ fusion into QLinear kernels), with their counts."""
    onnx, ort = require_onnx()
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3  # the NCHWc warning about saving optimized graphs
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    ops = (n.op_type for n in graph.node)
    int8 = ("QLinear", "QGemm")  # ONNX Runtime's int8 kernels
    return Counter(op for op in ops if op not in _NOT_COMPUTE and not op.startswith(int8))
