"""An export of a compiled network to a runtime's file (:mod:`.runtimes`: ONNX, TorchScript,
ExecuTorch's ``.pte`` delegated to XNNPACK, LiteRT's ``.tflite``), verified before it is kept.

Every export is the same steps, whatever the runtime: the network prepared for it, lowered to its
program, the program run back by the runtime that will run it (ONNX Runtime, ``torch.jit.load``,
ExecuTorch's runtime or LiteRT's interpreter) and compared with the PyTorch model on random
inputs; only a program that reproduces the model within :data:`TOLERANCE` is written, with its
metadata (inside an ONNX file, beside a phone program). A model whose own outputs are not finite
(NaN or infinite weights) is refused before anything is written, and the output path is never one
of the command's inputs nor a file of another kind (:mod:`..files`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ExportError, UserError
from ..kinds import named_or_is
from ..model.builder import SpecNet, build
from ..model.memory import check_fits
from ..model.parity import Difference, max_difference
from ..spec.load import load_spec
from ..spec.read import resolve_path
from ..weights.checkpoint import load_model
from .runtimes import runtime_for
from .runtimes.record import Runtime, metadata

TOLERANCE = 1e-4  # max abs difference of the logits, and at most RELATIVE × the largest logit:
RELATIVE = 1e-3  # randomly initialised specs give logits near 1e-6, where 1e-4 alone checks nothing


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    size: int  # bytes
    max_abs_diff: float
    max_logit: float  # the scale the difference is judged against
    opset: int | None  # ONNX only
    random_init: bool  # exported from a spec, not a checkpoint
    delegation: str = ""  # ExecuTorch: which rows XNNPACK runs; LiteRT: how many ops


def load_source(
    source: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[SpecNet, dict | None]:
    """A checkpoint (``.safetensors``, rebuilt from its metadata) or a spec with random weights;
    returns ``(model in eval mode, the checkpoint's metadata or None for a spec)``."""
    if named_or_is(source, "safetensors"):
        if overrides:
            raise UserError(
                "overrides change a spec; a checkpoint carries its own (export its spec instead)",
                file=str(source),
                field="overrides",
            )
        model, meta = load_model(source)
        return model.eval(), meta
    return build(load_spec(source, **(overrides or {}))).eval(), None


def export(
    source: str | Path,
    fmt: str,
    out: str | Path | None = None,
    *,
    resolution: int | None = None,
    dynamic_batch: bool = False,
    overrides: dict[str, Any] | None = None,
) -> ExportResult:
    """Export a checkpoint or spec to the runtime whose ``--format`` is ``fmt``, verify the file,
    and only then keep it.

    Without ``out`` a checkpoint's export goes beside it, a spec's into the current folder.
    """
    runtime = _check_format(fmt, dynamic_batch)
    model, meta = load_source(source, overrides)
    source = Path(source) if meta is not None else resolve_path(source)
    out = _output_path(source, out, runtime, beside=meta is not None)
    size = resolution or model.spec.resolution
    batches = (1, 3) if dynamic_batch else (1, 1)
    check_fits(model, max(batches), size, training=False, what="this export")
    # A dynamic batch is traced at 2: torch.export specialises a dimension that is 1 in the example.
    example = torch.randn(2 if dynamic_batch else 1, model.spec.in_channels, size, size)
    check_finite(model, example, source)
    shapes = [(b, *example.shape[1:]) for b in batches]
    lowered = runtime.lower(runtime.prepare(model), example, dynamic_batch)
    diff = max_difference(model, runtime.runner(lowered.program), shapes)
    check_parity(diff, runtime.format, out)
    info = {**metadata(model, meta, runtime.name, "float32"), "resolution": size}
    runtime.write(out, lowered.program, info)
    return ExportResult(
        out,
        runtime.format,
        os.path.getsize(out),
        diff.max_abs,
        diff.scale,
        lowered.opset,
        meta is None,
        lowered.note,
    )


def _check_format(fmt: str, dynamic_batch: bool) -> Runtime:
    """The runtime of ``fmt``; refused, before any work, an unknown format, a missing extra, or
    a phone program with a dynamic batch."""
    runtime = runtime_for(fmt, "format")
    runtime.require()
    if runtime.fixed_batch and dynamic_batch:
        raise UserError(
            f"a {runtime.suffix} is exported at batch 1, as an app calls it; leave out "
            "dynamic_batch",
            field="dynamic_batch",
        )
    return runtime


def _output_path(source: Path, out: str | Path | None, runtime: Runtime, beside: bool) -> Path:
    """``out`` checked (:mod:`..files`), or the default: beside a checkpoint, here for a spec."""
    if out is None:
        out = (source.parent if beside else Path.cwd()) / (source.stem + runtime.suffix)
    return runtime.check_out(out, [source], suffix=False)


def check_parity(diff: Difference, fmt: str, out: Path) -> None:
    """Refuse an export whose outputs are not the PyTorch model's (NaN included)."""
    if not diff.within(TOLERANCE, RELATIVE):
        raise ExportError(
            f"the exported {fmt} model differs from the PyTorch model by up to "
            f"{diff.max_abs:.3g} (limit {TOLERANCE:g}, and {RELATIVE:g} × the largest logit "
            f"{diff.scale:.3g}); nothing was written",
            file=str(out),
        )


def check_finite(model: nn.Module, example: torch.Tensor, source: Path) -> None:
    """Refuse a model whose outputs hold NaN or infinity: no export could be checked against it."""
    with torch.inference_mode():
        logits = model(example)
    if not logits.isfinite().all():
        bad = (~logits.isfinite()).sum().item()
        raise ExportError(
            f"the model's outputs are not finite ({bad} of {logits.numel()} logits are NaN or "
            "infinite; the weights are probably damaged); nothing was written",
            file=str(source),
        )
