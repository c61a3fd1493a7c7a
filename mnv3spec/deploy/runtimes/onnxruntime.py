"""ONNX Runtime: an ``.onnx`` file with its metadata inside (:mod:`.onnx_model`), float from
``export`` and int8 from ``quantize`` (:mod:`.onnx_int8`), run on the CPU (or CUDA, for latency).

Its int8 flow, chosen by measurement on this project's models (ONNX Runtime 1.32, an AVX2 CPU):
BN folded, exported to ONNX with a dynamic batch, each squeeze-and-excite ``ReduceMean``
rewritten as the ``GlobalAveragePool`` it is, then ``onnxruntime.quantization.quantize_static``
in QDQ format with per-channel int8 weights and uint8 activations calibrated (min/max) on training
images. With uint8 activations ONNX Runtime fuses every convolution, residual add and SE multiply
into ``QLinear*`` kernels; with int8 activations it leaves a fifth of the convolutions and all
adds in float. Hard-swish and hard-sigmoid have no int8 kernel in ONNX Runtime: they run in float
between a DequantizeLinear and a QuantizeLinear (:func:`.onnx_int8.float_ops` counts them in the
graph ONNX Runtime actually runs).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...model.inference import optimize_for_inference
from .onnx_int8 import export_float, float_ops, node_rows, quantize_onnx
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
from .quantizing import Job, Progress, QuantizeResult
from .record import Lowered, Run, Runtime, Timed


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


def time(model: nn.Module, x: torch.Tensor, int8: bool) -> Timed:
    """For ``latency``: the BN-folded ``model`` run by ONNX Runtime on ``x``'s device (int8: on
    the CPU, calibrated on random normal inputs, as timing does not depend on the ranges)."""
    fast = optimize_for_inference(model)
    if int8:
        return _time_int8(fast, x)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        write_onnx(fast.cpu(), path, x.cpu(), dynamic_batch=False)
        session = ort_session(path, x.device.type, threads=torch.get_num_threads())
    feed = {"input": x.cpu().numpy()}
    return lambda: session.run(None, feed), session.get_providers()[0]


def _time_int8(fast: nn.Module, example: torch.Tensor) -> Timed:
    x = example.cpu().contiguous()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        float_path = export_float(fast, work / "float.onnx", tuple(x.shape[1:]))
        calib = torch.randn(8, *x.shape[1:], generator=torch.Generator().manual_seed(0))
        quantize_onnx(float_path, work / "int8.onnx", calib, work / "calibration.json")
        session = ort_session(work / "int8.onnx", "cpu", threads=torch.get_num_threads())
    feed = {"input": x.numpy()}
    return lambda: session.run(None, feed), "CPUExecutionProvider, QDQ int8"


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


def _require() -> None:
    require_onnx()


def _load(path: str | Path, threads: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    return load_onnx(path, threads)


RUNTIME = Runtime(
    name="onnxruntime",
    format="onnx",
    choice="onnxruntime",
    kind="onnx",
    suffix=".onnx",
    metadata="inside",
    extra=EXTRA,
    require=_require,
    prepare=optimize_for_inference,
    lower=lower,
    runner=runner,
    write=write,
    load=_load,
    time=time,
    quantize=quantize,
)
