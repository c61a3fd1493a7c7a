"""ONNX Runtime: an ``.onnx`` file with its metadata inside (:mod:`.onnx_model`), float from
``export`` and int8 from ``quantize``, run on the CPU (or CUDA, for latency).

Its int8 flow, chosen by measurement on this project's models (ONNX Runtime 1.32, an AVX2 CPU):
BN folded, exported to ONNX with a dynamic batch, each squeeze-and-excite ``ReduceMean``
rewritten as the ``GlobalAveragePool`` it is, then ``onnxruntime.quantization.quantize_static``
in QDQ format with per-channel int8 weights and uint8 activations calibrated (min/max) on training
images. With uint8 activations ONNX Runtime fuses every convolution, residual add and SE multiply
into ``QLinear*`` kernels; with int8 activations it leaves a fifth of the convolutions and all
adds in float. Hard-swish and hard-sigmoid have no int8 kernel in ONNX Runtime: they run in float
between a DequantizeLinear and a QuantizeLinear (:func:`float_ops` counts them in the
graph ONNX Runtime actually runs).
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

from ...model.inference import optimize_for_inference
from .onnx_model import (
    EXTRA,
    FLOAT,
    INT8,
    load_onnx,
    metadata_props,
    onnx_format,
    ort_session,
    require_onnx,
    write_onnx,
    write_stamped,
)
from .record import Job, Lowered, Progress, QuantizeResult, Run, Runtime, Timed, in_turn


def lower(fast: nn.Module, example: torch.Tensor, dynamic_batch: bool) -> Lowered:
    """The bytes of ``fast`` exported to ONNX at ``example``'s shape, and its opset."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        opset = write_onnx(fast, path, example, dynamic_batch)
        return Lowered(path.read_bytes(), opset=opset)


def runner(model: Path | bytes, threads: int | None = None) -> Run:
    """An ONNX model as a function of a normalised CPU batch, run by ONNX Runtime."""
    session = ort_session(model, "cpu", threads=threads)
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def write(out: Path, program: bytes, info: dict) -> None:
    """The model with its metadata inside (``metadata_props``), float or int8 by ``info``."""
    fmt = INT8 if info["precision"] == "int8" else FLOAT
    write_stamped(out, program, metadata_props(info["spec"], info, fmt))


def is_int8_model(path: str | Path) -> bool:
    """Whether ``path`` is an int8 model written by ``quantize`` (an ``.onnx`` whose metadata
    says so); cheap enough to call on every file ``infer`` meets."""
    return onnx_format(path) == INT8


def time(model: nn.Module, x: torch.Tensor, int8: bool, loads: int = 1) -> Timed:
    """For ``latency``: the BN-folded ``model`` run by ONNX Runtime on ``x``'s device (int8: on
    the CPU, calibrated on random normal inputs, as timing does not depend on the ranges); the
    model loaded in ``loads`` sessions, run in turn (:func:`~.record.in_turn`)."""
    fast = optimize_for_inference(model)
    if int8:
        return _time_int8(fast, x, loads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        write_onnx(fast.cpu(), path, x.cpu(), dynamic_batch=False)
        run, sessions = _loaded(path, x.device.type, x, loads)
    return run, sessions[0].get_providers()[0]


def _loaded(path: Path, device: str, x: torch.Tensor, loads: int) -> tuple[Any, list[Any]]:
    """A call running ``x`` through the ONNX file at ``path`` opened in ``loads`` sessions, in
    turn (:func:`~.record.in_turn`), and the sessions."""
    sessions = [ort_session(path, device, threads=torch.get_num_threads()) for _ in range(loads)]
    feed = {"input": x.cpu().numpy()}
    return in_turn([lambda s=s: s.run(None, feed) for s in sessions]), sessions


def _time_int8(fast: nn.Module, example: torch.Tensor, loads: int) -> Timed:
    x = example.cpu().contiguous()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        float_path = export_float(fast, work / "float.onnx", tuple(x.shape[1:]))
        calib = torch.randn(8, *x.shape[1:], generator=torch.Generator().manual_seed(0))
        quantize_onnx(float_path, work / "int8.onnx", calib, work / "calibration.json")
        run, _ = _loaded(work / "int8.onnx", "cpu", x, loads)
    return run, "CPUExecutionProvider, QDQ int8"


def quantize(job: Job, sensitivity: bool, progress: Progress) -> QuantizeResult:
    """``quantize`` for ONNX Runtime: QDQ int8 of the float ONNX export (module docstring)."""
    model, meta, calib_images = job.model, job.meta, job.calib_images
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="mnv3spec-quant-") as tmp:
        work = Path(tmp)
        progress("exporting the BN-folded float model to ONNX")
        shape = (model.spec.in_channels, meta["resolution"], meta["resolution"])
        float_path = export_float(optimize_for_inference(model), work / "float.onnx", shape)
        cache = work / "calibration.json"
        progress(f"calibrating on {len(calib_images)} training images")
        int8_path = work / "int8.onnx"
        quantize_onnx(float_path, int8_path, calib_images, cache, exclude_rows=job.keep)
        progress("evaluating float and int8 top-1")
        float_top1 = job.top1(model)[0]
        int8_top1, images = job.top1(runner(int8_path, threads))
        result = QuantizeResult(
            None, float_top1, int8_top1, images, len(calib_images), float_ops(int8_path), job.keep
        )
        result.runtime = RUNTIME.choice
        if sensitivity:
            result.sensitivity = _sensitivity(job, float_path, cache)
            progress("sensitivity done")
        job.gate(result)
        info = {**job.metadata(result), "spec": model.spec.to_yaml(), "precision": "int8"}
        write(job.out, int8_path.read_bytes(), info)
        result.path = job.out
    return result


def _sensitivity(job: Job, float_path: Path, cache: Path) -> list[tuple[str, float]]:
    """Top-1 with one row at a time in int8 and the rest float, for every row with nodes in the
    graph (not dropout, flatten)."""
    results = []
    onnx, _ = require_onnx()
    with_nodes = set(node_rows(onnx.load(str(float_path))).values())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "row.onnx"
        for name, _ in job.model.layers.named_children():
            if name not in with_nodes:
                continue
            quantize_onnx(float_path, path, job.calib_images, cache, only_rows=[name])
            results.append((name, job.top1(runner(path, torch.get_num_threads()))[0]))
    return results


# --- int8: QDQ -----------------------------------------------------------------------------------

BATCH = 64  # images per calibration call


# 7-bit weights: without AVX-512 VNNI, ONNX Runtime's uint8 × int8 kernels sum pairs of products
# in int16, which saturates on 8-bit weights (logits far from the fake-quant graph's; 7 bits keep
# them close: docs/measurements.md). ONNX Runtime's own advice for such CPUs.
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


def _require() -> None:
    require_onnx()


def _load(path: str | Path, threads: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    return load_onnx(path, threads)


RUNTIME = Runtime(
    name="onnxruntime",
    format="onnx",
    choice="onnxruntime",
    suffix=".onnx",
    metadata="inside",
    extra=EXTRA,
    order=10,
    require=_require,
    prepare=optimize_for_inference,
    lower=lower,
    runner=runner,
    write=write,
    load=_load,
    time=time,
    quantize=quantize,
)
