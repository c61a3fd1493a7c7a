"""Our ``.onnx`` files, float (written by ``export``) and int8 (written by ``quantize``): written
by torch's exporter, run by an ONNX Runtime session, with the metadata in their ``metadata_props``
that rebuilds their meaning (spec, classes, resolution, mean, std, extra, in the keys and JSON
encoding of a checkpoint's metadata), and the file read back as a module run by ONNX Runtime on
the CPU, which ``eval`` and ``infer`` use as they use a checkpoint.

The metadata travels inside the file (an ONNX model has a place for it), so unlike a ``.pte`` it
cannot be separated from the program; what could disagree with it (the graph's input, output and
class count) is checked against it as the file is read (:func:`_graph_problem`).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import CheckpointError, ExportError, UserError
from ...files import writing
from ...kinds import file_kind
from ...spec.load import load_spec
from ...spec.read import read_yaml
from ...weights.checkpoint import metadata_problem
from .record import require

FLOAT = "mnv3spec-float"  # metadata_props["format"] of export's float files
INT8 = "mnv3spec-int8"  # ... and of quantize's int8 files
FORMATS = (FLOAT, INT8)
MAX_FILE_BYTES = 1 << 31  # protobuf's own limit; our files are a few MB
MAX_PROP_BYTES = 16 << 20  # all metadata together, as a checkpoint's header is bounded
KEYS = ("classes", "resolution", "mean", "std")  # JSON-encoded, besides spec, format and extra
EXTRA = "export"  # the optional install extra that brings onnx, onnxscript and onnxruntime


def require_onnx() -> tuple[ModuleType, ModuleType]:
    """``(onnx, onnxruntime)``, or an :class:`ExportError` that names the extra to install
    (onnxscript too: torch's ONNX exporter imports it lazily)."""
    require("ONNX", EXTRA, ("onnx", "onnxruntime", "onnxscript"))
    import onnx
    import onnxruntime

    return onnx, onnxruntime


def write_onnx(model: nn.Module, path: Path, example: torch.Tensor, dynamic_batch: bool) -> int:
    """Export ``model`` traced on ``example`` to one self-contained ``.onnx`` file; its opset.

    Through ``torch.onnx.export(..., dynamo=True)``: in torch ≥ 2.9 it is the default and
    maintained exporter, while the TorchScript-based one warns on every call that it will be
    removed."""
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


def ort_session(model: Path | bytes, device: str = "cpu", threads: int | None = None) -> Any:
    """An ONNX Runtime session of a file or its bytes on ``device``; CUDA uses the CUDA
    provider, refused when absent."""
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
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=providers)


def metadata_props(spec_yaml: str, meta: dict, fmt: str) -> dict[str, str]:
    """The ``metadata_props`` of one of our files: a checkpoint's metadata (``meta``: classes,
    resolution, mean, std, extra) and its spec, each value JSON as a checkpoint stores it."""
    values = {**meta, "mean": list(meta["mean"]), "std": list(meta["std"])}
    props = {"format": fmt, "spec": spec_yaml}
    return props | {key: json.dumps(values[key]) for key in (*KEYS, "extra")}


def set_metadata(proto: Any, props: dict[str, str]) -> None:
    """Replace ``proto``'s ``metadata_props`` with ``props``."""
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)


def write_stamped(out: Path, program: bytes, props: dict[str, str]) -> None:
    """The ONNX model ``program`` written atomically to ``out`` with ``props`` as its
    ``metadata_props``: what lets ``eval`` and ``infer`` run it."""
    onnx, _ = require_onnx()
    proto = onnx.load_from_string(program)
    set_metadata(proto, props)
    with writing(out, field="out") as tmp:
        onnx.save(proto, str(tmp))


def onnx_format(path: str | Path) -> str | None:
    """Which of our :data:`FORMATS` ``path`` is (judged by its bytes, then its metadata), or None
    for anything else, an unreadable file or an ONNX model without our metadata included. Cheap
    enough to call on every file ``infer`` meets."""
    if file_kind(path) != "onnx":
        return None
    try:
        return read_format(path)
    except (CheckpointError, ImportError):  # without onnx nothing is one of ours
        return None


def read_format(path: str | Path) -> str | None:
    """Which of our :data:`FORMATS` the ONNX model at ``path`` is, or None when it has not our
    metadata; a :class:`CheckpointError` when it cannot be read as ONNX (truncated, damaged)."""
    fmt = _read_proto(Path(path))[1].get("format")
    return fmt if fmt in FORMATS else None


def _read_proto(path: Path) -> tuple[Any, dict[str, str]]:
    """The ONNX model (external data not loaded) and its metadata_props, size-checked."""
    import onnx

    where = {"file": str(path)}
    if path.stat().st_size > MAX_FILE_BYTES:
        raise CheckpointError(
            f"is larger than {MAX_FILE_BYTES:,} bytes; not our ONNX model", **where
        )
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, ValueError, OSError... for a bad file
        raise CheckpointError(f"not a readable ONNX file ({type(e).__name__})", **where) from None
    props = {p.key: p.value for p in proto.metadata_props}
    if sum(len(k) + len(v) for k, v in props.items()) > MAX_PROP_BYTES:
        raise CheckpointError(f"its metadata is over {MAX_PROP_BYTES:,} bytes (damaged?)", **where)
    return proto, props


def _weights_problem(proto: Any) -> str | None:
    """A weight stored outside the file, or not finite; else None."""
    from onnx import TensorProto, numpy_helper

    for init in proto.graph.initializer:
        if init.data_location == TensorProto.EXTERNAL or init.external_data:
            return f"weight {init.name[:60]} is stored in another file; ours are one file"
        floating = init.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)
        if floating and not np.isfinite(numpy_helper.to_array(init)).all():
            return f"weight {init.name[:60]} holds NaN or infinite values"
    return None


def _graph_problem(proto: Any, spec: dict, meta: dict) -> str | None:
    """What in the graph disagrees with the metadata (or with what export and quantize write), or
    None: weights stored outside the file or not finite, an input other than ``input`` of the
    metadata's channels and resolution, an output of another class count."""
    problem = _weights_problem(proto)
    if problem:
        return problem
    weights = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in weights]
    channels, size = spec["params"].get("in_channels", 3), meta["resolution"]
    if [i.name for i in inputs] != ["input"]:
        return f"its inputs are {[i.name[:40] for i in inputs][:4]}, not the one 'input'"
    if len(proto.graph.output) != 1:
        return f"it has {len(proto.graph.output)} outputs, not the one of logits"
    want = {"input": [None, channels, size, size], "output": [None, len(meta["classes"])]}
    for what, value in (("input", inputs[0]), ("output", proto.graph.output[0])):
        dims = [
            d.dim_value if d.HasField("dim_value") else None
            for d in value.type.tensor_type.shape.dim
        ]
        fixed = [d for d, w in zip(dims, want[what], strict=False) if w is not None]
        if len(dims) != len(want[what]) or fixed != [w for w in want[what] if w is not None]:
            shape = "×".join("N" if d is None else str(d) for d in dims)
            expected = "×".join("N" if w is None else str(w) for w in want[what])
            return f"its {what} is {shape}, where the metadata says {expected}"
    return None


class OnnxModel(nn.Module):
    """One of our ``.onnx`` files as a module: ``model(x)`` runs ONNX Runtime on the CPU on a
    normalised float NCHW batch and returns float logits on ``x``'s device (one image at a time
    when the graph was exported at batch 1). It has no parameters, so ``evaluate`` and ``infer``
    use it as they use a :class:`SpecNet` (``.spec`` included)."""

    def __init__(self, path: Path, spec: Any, threads: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.path = path
        try:
            self._session = ort_session(path, "cpu", threads=threads or torch.get_num_threads())
        except Exception as e:  # ONNX Runtime's own errors: a graph it cannot run
            raise CheckpointError(
                f"ONNX Runtime cannot load it ({_first_line(e)})", file=str(path)
            ) from None
        self._one_at_a_time = self._session.get_inputs()[0].shape[0] == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cpu = x.detach().to("cpu", torch.float32).contiguous()
        batches = cpu.split(1) if self._one_at_a_time else [cpu]
        try:
            logits = [self._session.run(None, {"input": b.numpy()})[0] for b in batches]
        except Exception as e:
            raise CheckpointError(
                f"ONNX Runtime cannot run it ({_first_line(e)})", file=str(self.path)
            ) from None
        return torch.from_numpy(np.concatenate(logits)).to(x.device)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def load_onnx(
    path: str | Path, threads: int | None = None, formats: tuple[str, ...] = FORMATS
) -> tuple[OnnxModel, dict]:
    """``(OnnxModel, metadata)`` from one of our files (of ``formats``); the metadata is decoded
    and checked as :func:`~mnv3spec.weights.checkpoint.read_metadata` decodes a checkpoint's,
    then against the graph it describes (:func:`_graph_problem`)."""
    require_onnx()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such file", file=str(path))
    proto, raw = _read_proto(path)
    if raw.get("format") not in formats:
        kinds = " or ".join({FLOAT: "float", INT8: "int8"}[f] for f in formats)
        raise CheckpointError(f"an ONNX file, but not an mnv3spec {kinds} model", file=str(path))
    try:
        spec, _ = read_yaml(raw["spec"], f"{path} (embedded spec)")
        meta = {key: json.loads(raw[key]) for key in KEYS}
        meta["extra"] = json.loads(raw.get("extra", "{}"))
        problem = metadata_problem(spec, meta) or _graph_problem(proto, spec, meta)
    except (KeyError, ValueError, UserError) as e:
        raise CheckpointError(f"damaged metadata ({e})", file=str(path)) from None
    if problem:
        raise CheckpointError(f"damaged: {problem}", file=str(path))
    meta = {**meta, "spec": spec, "mean": tuple(meta["mean"]), "std": tuple(meta["std"])}
    try:
        built = load_spec(spec)
    except UserError as e:
        raise CheckpointError(f"its embedded spec is not valid: {e}", file=str(path)) from None
    return OnnxModel(path, built, threads), meta
