"""The ways ``latency`` (and ``sweep``) run a network: eager, channels_last, compiled, ONNX
Runtime, ExecuTorch (XNNPACK) and LiteRT in float and int8, and a captured CUDA graph. Each gives
a no-argument call that runs the network once on a fixed example, and a note on how it ran.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ExportError, UserError
from ..model.inference import for_xnnpack, optimize_for_inference
from . import executorch, tflite
from .export import ort_session, trace_frozen, write_onnx
from .int8 import latency_runner as int8_runner

BACKENDS = (
    *("eager", "channels_last", "compiled", "onnxruntime", "onnxruntime-int8"),
    *("executorch", "executorch-int8", "tflite", "tflite-int8", "cuda-graph"),
)
CALIB = 8  # random images calibrating a timed int8 program (the ranges do not change the time)
GRAPH_WARMUP = 3  # eager calls on a side stream before capture (cuDNN picks its algorithms)

Runner = Callable[[], Any]


def prepare(model: nn.Module, backend: str, example: torch.Tensor) -> tuple[Runner, str]:
    """A no-argument call running ``model`` on ``example`` with ``backend``, and a note on how."""
    if backend == "eager":
        return lambda: model(example), ""
    if backend.startswith("executorch"):
        return _executorch(model, example, int8=backend.endswith("-int8"))
    if backend.startswith("tflite"):
        return _tflite(model, example, int8=backend.endswith("-int8"))
    cl = example.contiguous(memory_format=torch.channels_last)
    if backend == "channels_last":
        m = copy.deepcopy(model).to(memory_format=torch.channels_last)
        return lambda: m(cl), ""
    fast = optimize_for_inference(model)
    if backend == "compiled":
        return _compiled(fast, cl)
    if backend == "onnxruntime":
        return _onnxruntime(fast, example)
    if backend == "onnxruntime-int8":
        return int8_runner(fast, example)
    if backend == "cuda-graph":
        return _cuda_graph(fast, cl)
    raise UserError(f"unknown backend '{backend}'; use {', '.join(BACKENDS)}", field="backends")


def _compiled(fast: nn.Module, x: torch.Tensor) -> tuple[Runner, str]:
    """torch.compile of the BN-folded channels_last model; TorchScript freeze where it fails."""
    try:
        compiled = torch.compile(fast)
        with torch.inference_mode():  # compiles now, as it will be timed, so failures show here
            compiled(x)
        return lambda: compiled(x), "torch.compile"
    except Exception as e:  # inductor fails in many ways: no C++ compiler, no triton, ...
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        frozen = trace_frozen(fast, x)
        return lambda: frozen(x), f"torch.compile failed ({reason}); used TorchScript freeze"


def _onnxruntime(fast: nn.Module, x: torch.Tensor) -> tuple[Runner, str]:
    device = x.device.type
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        write_onnx(fast.cpu(), path, x.cpu(), dynamic_batch=False)
        session = ort_session(path, device, threads=torch.get_num_threads())
    feed = {"input": x.cpu().numpy()}
    provider = session.get_providers()[0]
    return lambda: session.run(None, feed), provider


def _executorch(model: nn.Module, x: torch.Tensor, int8: bool) -> tuple[Runner, str]:
    """The network lowered to XNNPACK as export (or quantize, calibrated on random inputs) does,
    run by ExecuTorch's runtime with as many threads as torch uses."""
    if x.device.type != "cpu":
        raise ExportError("ExecuTorch runs on the CPU here (its XNNPACK backend is for CPUs)")
    executorch.require_executorch()
    fast = for_xnnpack(model)
    if int8:
        calib = torch.randn(CALIB, *x.shape[1:], generator=torch.Generator().manual_seed(0))
        fast = executorch.quantize_pt2e(fast, x[:1], calib)
    program, delegation = executorch.lower(fast, x)
    run = executorch.runner(program, threads=torch.get_num_threads())
    kind = "int8 (PT2E)" if int8 else "fp32"
    return lambda: run(x), f"XNNPACK {kind}, {len(delegation.delegated)} rows delegated"


def _tflite(model: nn.Module, x: torch.Tensor, int8: bool) -> tuple[Runner, str]:
    """The network converted by litert-torch as export (or quantize, calibrated on random
    inputs) does, run by LiteRT's interpreter (XNNPACK delegate) with torch's thread count."""
    if x.device.type != "cpu":
        raise ExportError("LiteRT runs on the CPU here (its XNNPACK delegate is for CPUs)")
    tflite.require_litert(convert=True)
    fast = for_xnnpack(model)
    if int8:
        calib = torch.randn(CALIB, *x.shape[1:], generator=torch.Generator().manual_seed(0))
        fast = tflite.quantize_pt2e(fast, x[:1], calib)
    run = tflite.runner(tflite.convert(fast, x, int8=int8), threads=torch.get_num_threads())
    return lambda: run(x), f"LiteRT XNNPACK {'int8 (PT2E)' if int8 else 'fp32'}"


def _cuda_graph(fast: nn.Module, x: torch.Tensor) -> tuple[Runner, str]:
    """The BN-folded channels_last network's forward captured once as a CUDA graph and replayed:
    at batch 1 eager CUDA times Python and kernel launches, a replay times the network."""
    if x.device.type != "cuda":
        raise ExportError("cuda-graph runs on CUDA only (a captured graph is a CUDA feature)")
    static = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(side):
        for _ in range(GRAPH_WARMUP):
            fast(static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        fast(static)
    return graph.replay, "CUDA graph replay"
