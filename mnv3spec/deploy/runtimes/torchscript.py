"""TorchScript: a frozen trace saved for ``torch.jit.load`` (a ``.pt``), for Python and C++ hosts
of libtorch. It has no opset, no metadata and no int8 here; ``torch.compile``'s fallback in
``latency`` uses its frozen trace (:func:`trace_frozen`)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from ...files import writing
from ...model.inference import optimize_for_inference
from .record import Lowered, Run, Runtime


def trace_frozen(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``model`` traced on ``example`` and frozen (weights folded in as constants)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still wanted
        # Pointwise picks its branch from the input's shape; the trace keeps the branch taken,
        # and both compute the same function at every size, so the warning says nothing here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.freeze(torch.jit.trace(model.eval(), example))


def lower(fast: nn.Module, example: torch.Tensor, dynamic_batch: bool) -> Lowered:
    """The frozen trace (a trace takes any batch)."""
    return Lowered(trace_frozen(fast, example))


def runner(program: torch.jit.ScriptModule, threads: int | None = None) -> Run:
    """The program saved and loaded back, as ``torch.jit.load`` will run the file."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(program, buffer)
        buffer.seek(0)
        return torch.jit.load(buffer, map_location="cpu")


def write(out: Path, program: torch.jit.ScriptModule, info: dict) -> None:
    """The program saved for ``torch.jit.load``; a TorchScript file holds no metadata."""
    with writing(out, field="out") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(program, str(tmp))


RUNTIME = Runtime(
    name="torchscript",
    format="torchscript",
    choice="torchscript",
    suffix=".pt",
    metadata="none",
    extra="",
    order=20,
    require=lambda: None,
    prepare=optimize_for_inference,
    lower=lower,
    runner=runner,
    write=write,
)
