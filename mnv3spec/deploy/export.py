"""An inference copy of a compiled network, and its export to ONNX, TorchScript, ExecuTorch (a
``.pte`` delegated to XNNPACK, :mod:`.executorch`) or LiteRT (a ``.tflite``, :mod:`.tflite`), the
phone formats with their metadata beside them.

Every export is written to a temporary file, loaded back by the runtime that will run it (ONNX
Runtime, ``torch.jit.load``, ExecuTorch's runtime or LiteRT's interpreter) and compared with the
PyTorch model on random inputs; only a file that reproduces the model within :data:`TOLERANCE`
replaces the output path. A model whose own outputs are not finite (NaN or infinite weights) is
refused before anything is written, and the output path is never one of the command's inputs nor
a file of another kind (:mod:`..files`).

ONNX goes through ``torch.onnx.export(..., dynamo=True)``: in torch ≥ 2.9 it is the default and
maintained exporter, while the TorchScript-based one warns on every call that it will be removed.
It needs ``onnxscript``, which is why onnx, onnxscript and onnxruntime form one optional extra.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..errors import ExportError, UserError
from ..files import check_output, writing
from ..model.builder import SpecNet, build
from ..model.inference import for_xnnpack, optimize_for_inference
from ..model.memory import check_fits
from ..model.parity import Difference, max_difference
from ..spec.load import load_spec, resolve_path
from ..weights.checkpoint import load_model
from . import executorch, tflite
from .executorch import require_executorch
from .mobile import check_outputs, metadata
from .onnx_model import stamp_float

# format → default suffix; also its files.KINDS key
FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "executorch": ".pte", "tflite": ".tflite"}
PHONE = {"executorch": "executorch", "tflite": "litert"}  # format → its .mobile runtime
TOLERANCE = 1e-4  # max abs difference of the logits, and at most RELATIVE × the largest logit:
RELATIVE = 1e-3  # randomly initialised specs give logits near 1e-6, where 1e-4 alone checks nothing
INSTALL_HINT = 'pip install -e ".[export]"'


def require_onnx() -> tuple[ModuleType, ModuleType]:
    """``(onnx, onnxruntime)``, or an :class:`ExportError` that names the extra to install."""
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch's ONNX exporter imports it lazily)
    except ImportError as e:
        raise ExportError(
            f"ONNX needs the optional export extra ({e.name or 'onnx'} is not installed): "
            f"{INSTALL_HINT}"
        ) from None
    return onnx, onnxruntime


def write_onnx(model: nn.Module, path: Path, example: torch.Tensor, dynamic_batch: bool) -> int:
    """Export ``model`` traced on ``example`` to one self-contained ``.onnx`` file; its opset."""
    onnx, _ = require_onnx()
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=True,
        external_data=False,
        verbose=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=shapes,
    )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    return next(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx"))


def ort_session(path: Path, device: str = "cpu", threads: int | None = None) -> Any:
    """An ONNX Runtime session on ``device``; CUDA uses the CUDA provider, refused when absent."""
    _, ort = require_onnx()
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ExportError("this onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu)")
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    # ONNX Runtime's threads busy-wait after each run by default, taking the cores from whatever
    # runs next: in latency's alternating rounds that is the next backend (or torchvision's twin).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=providers)


def trace_frozen(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``model`` traced on ``example`` and frozen (weights folded in as constants)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still wanted
        # Pointwise picks its branch from the input's shape; the trace keeps the branch taken,
        # and both compute the same function at every size, so the warning says nothing here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.freeze(torch.jit.trace(model.eval(), example))


def write_torchscript(model: nn.Module, path: Path, example: torch.Tensor) -> None:
    """A frozen trace of ``model`` saved for ``torch.jit.load`` (TorchScript has no opset)."""
    traced = trace_frozen(model, example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(traced, str(path))


def load_back(fmt: str, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The written file as a function of a CPU batch, run by the runtime that will run it."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    session = ort_session(path)
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


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
    if Path(source).suffix == ".safetensors":
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
    """Export a checkpoint or spec with BN folded, verify the file, and only then keep it.

    Without ``out`` a checkpoint's export goes beside it, a spec's into the current folder.
    """
    _check_format(fmt, dynamic_batch)
    model, meta = load_source(source, overrides)
    source = Path(source) if meta is not None else resolve_path(source)
    out = _output_path(source, out, fmt, beside=meta is not None)
    size = resolution or model.spec.resolution
    batches = (1, 3) if dynamic_batch else (1, 1)
    check_fits(model, max(batches), size, training=False, what="this export")
    # A dynamic batch is traced at 2: torch.export specialises a dimension that is 1 in the example.
    example = torch.randn(2 if dynamic_batch else 1, model.spec.in_channels, size, size)
    check_finite(model, example, source)
    shapes = [(b, *example.shape[1:]) for b in batches]
    return EXPORTERS[fmt](model, meta, example, out, shapes)


def _check_format(fmt: str, dynamic_batch: bool) -> None:
    """Refuse, before any work, an unknown format, a missing extra, or a phone program with a
    dynamic batch."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}'; use {' or '.join(FORMATS)}", field="format")
    REQUIRES[fmt]()
    if fmt in PHONE and dynamic_batch:
        raise UserError(
            f"a {FORMATS[fmt]} is exported at batch 1, as an app calls it; leave out dynamic_batch",
            field="dynamic_batch",
        )


def _output_path(source: Path, out: str | Path | None, fmt: str, beside: bool) -> Path:
    """``out`` checked (:mod:`..files`), or the default: beside a checkpoint, here for a spec."""
    if out is None:
        out = (source.parent if beside else Path.cwd()) / (source.stem + FORMATS[fmt])
    if fmt in PHONE:
        return check_outputs(out, PHONE[fmt], inputs=[source])
    return check_output(out, fmt, inputs=[source], field="out")


def _export_host(fmt: str) -> Callable[..., ExportResult]:
    """The exporter of ONNX or TorchScript: the BN-folded channels_last model written, loaded
    back by its runtime and compared with ``model`` at each shape."""

    def write(model: SpecNet, meta: dict | None, example: torch.Tensor, out: Path, shapes: list):
        fast = optimize_for_inference(model)
        opset = None
        with writing(out, field="out") as tmp:
            if fmt == "onnx":
                opset = write_onnx(fast, tmp, example, dynamic_batch=shapes[0] != shapes[1])
                stamp_float(tmp, model, meta, example.shape[-1])  # what eval and infer need
            else:
                write_torchscript(fast, tmp, example)
            diff = max_difference(model, load_back(fmt, tmp), shapes)
            check_parity(diff, fmt, out)
        size = os.path.getsize(out)
        return ExportResult(out, fmt, size, diff.max_abs, diff.scale, opset, meta is None)

    return write


def check_parity(diff: Difference, fmt: str, out: Path) -> None:
    """Refuse an export whose outputs are not the PyTorch model's (NaN included)."""
    if not diff.within(TOLERANCE, RELATIVE):
        raise ExportError(
            f"the exported {fmt} model differs from the PyTorch model by up to "
            f"{diff.max_abs:.3g} (limit {TOLERANCE:g}, and {RELATIVE:g} × the largest logit "
            f"{diff.scale:.3g}); nothing was written",
            file=str(out),
        )


def _export_pte(
    model: SpecNet, meta: dict | None, example: torch.Tensor, out: Path, shapes: list
) -> ExportResult:
    """Lower to XNNPACK, run the program in ExecuTorch's runtime against ``model``, and only then
    write it with its metadata file."""
    program, delegation = executorch.lower(for_xnnpack(model), example)
    diff = max_difference(model, executorch.runner(program), shapes)
    check_parity(diff, "executorch", out)
    executorch.write_pte(out, program, metadata(model, meta, "executorch", "float32"))
    size = os.path.getsize(out)
    return ExportResult(
        out, "executorch", size, diff.max_abs, diff.scale, None, meta is None, delegation.describe()
    )


def _export_tflite(
    model: SpecNet, meta: dict | None, example: torch.Tensor, out: Path, shapes: list
) -> ExportResult:
    """Convert with litert-torch, run the model in LiteRT's interpreter against ``model``, and
    only then write it with its metadata file."""
    program = tflite.convert(for_xnnpack(model), example)
    diff = max_difference(model, tflite.runner(program), shapes)
    check_parity(diff, "tflite", out)
    tflite.write_tflite(out, program, metadata(model, meta, tflite.RUNTIME, "float32"))
    ops = tflite.op_counts(program)
    summary = f"{sum(ops.values())} ops, run by LiteRT's XNNPACK delegate"
    size = os.path.getsize(out)
    return ExportResult(out, "tflite", size, diff.max_abs, diff.scale, None, meta is None, summary)


# format → what checks its extra is installed, and what writes and checks the file
REQUIRES: dict[str, Callable[[], Any]] = {
    "onnx": require_onnx,
    "torchscript": lambda: None,
    "executorch": require_executorch,
    "tflite": lambda: tflite.require_litert(convert=True),
}
EXPORTERS: dict[str, Callable[..., ExportResult]] = {
    "onnx": _export_host("onnx"),
    "torchscript": _export_host("torchscript"),
    "executorch": _export_pte,
    "tflite": _export_tflite,
}


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
