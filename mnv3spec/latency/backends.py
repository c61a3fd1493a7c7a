"""The ways ``latency`` (and ``sweep``) run a network: eager, channels_last, compiled, a captured
CUDA graph, and each runtime of the registry (:mod:`..deploy.runtimes`) that can time it, in
float and int8. Each gives a no-argument call that runs the network once on a fixed example, and
a note on how it ran.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..deploy.runtimes import RUNTIMES
from ..deploy.runtimes.torchscript import trace_frozen
from ..errors import ExportError, UserError
from ..model.inference import optimize_for_inference

GRAPH_WARMUP = 3  # eager calls on a side stream before capture (cuDNN picks its algorithms)

Runner = Callable[[], Any]
TIMED = {rt.choice: rt for rt in RUNTIMES.values() if rt.time is not None}  # backend → runtime
BACKENDS = (
    *("eager", "channels_last", "compiled"),
    *(name for choice in TIMED for name in (choice, f"{choice}-int8")),
    "cuda-graph",
)


def prepare(
    model: nn.Module, backend: str, example: torch.Tensor, loads: int = 1
) -> tuple[Runner, str]:
    """A no-argument call running ``model`` on ``example`` with ``backend``, and a note on how;
    a runtime's file loaded ``loads`` times, each call the next load (PyTorch's backends run the
    module in memory: one)."""
    choice = backend.removesuffix("-int8")
    if choice in TIMED:
        return TIMED[choice].time(model, example, backend.endswith("-int8"), loads)
    if backend == "eager":
        return lambda: model(example), ""
    cl = example.contiguous(memory_format=torch.channels_last)
    if backend == "channels_last":
        m = copy.deepcopy(model).to(memory_format=torch.channels_last)
        return lambda: m(cl), ""
    if backend == "compiled":
        return _compiled(optimize_for_inference(model), cl)
    if backend == "cuda-graph":
        return _cuda_graph(optimize_for_inference(model), cl)
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
