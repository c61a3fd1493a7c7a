"""int8 ONNX models: made (the float export, its calibration and static quantization in QDQ
format, what stays float) and read back. The file is one ``.onnx`` whose ``metadata_props`` carry
what a checkpoint's metadata carries (spec, classes, resolution, mean, std, extra), run by ONNX
Runtime on the CPU; ``eval`` and ``infer`` take it as they take checkpoints (:func:`load_any`).
The command around it, with its accuracy gate, is :mod:`.quantize`.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, UserError
from ..files import writing
from ..model.builder import SpecNet
from ..spec.load import load_spec, read_yaml
from ..weights.checkpoint import _metadata_problem, load_model
from .export import ort_session, require_onnx, write_onnx
from .mobile import runtime_of

BATCH = 64  # images per calibration call
FORMAT = "mnv3spec-int8"  # metadata_props["format"] of our int8 files
SUFFIX = ".onnx"


MAX_FILE_BYTES = 1 << 31  # protobuf's own limit; our int8 files are a few MB
MAX_PROP_BYTES = 16 << 20  # all metadata together, as a checkpoint's header is bounded


def is_int8_model(path: str | Path) -> bool:
    """Whether ``path`` is an int8 model written by :func:`quantize_checkpoint` (an ``.onnx``
    whose metadata says so); cheap enough to call on every file ``infer`` meets."""
    path = Path(path)
    if path.suffix.lower() != SUFFIX or not path.is_file():
        return False
    try:
        return _read_proto(path)[1].get("format") == FORMAT
    except (CheckpointError, ImportError):  # without onnx nothing is an int8 model
        return False


def _read_proto(path: Path) -> tuple[Any, dict[str, str]]:
    """The ONNX model (external data not loaded) and its metadata_props, size-checked."""
    import onnx

    where = {"file": str(path)}
    if path.stat().st_size > MAX_FILE_BYTES:
        raise CheckpointError(
            f"is larger than {MAX_FILE_BYTES:,} bytes; not our int8 model", **where
        )
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, ValueError, OSError... for a bad file
        raise CheckpointError(f"not a readable ONNX file ({type(e).__name__})", **where) from None
    props = {p.key: p.value for p in proto.metadata_props}
    if sum(len(k) + len(v) for k, v in props.items()) > MAX_PROP_BYTES:
        raise CheckpointError(f"its metadata is over {MAX_PROP_BYTES:,} bytes (damaged?)", **where)
    return proto, props


def _graph_problem(proto: Any, spec: dict, meta: dict) -> str | None:
    """What in the graph disagrees with the metadata (or with what quantize writes), or None:
    weights stored outside the file or not finite, an input other than ``input`` of the
    metadata's channels and resolution, an output of another class count."""
    from onnx import TensorProto, numpy_helper

    for init in proto.graph.initializer:
        if init.data_location == TensorProto.EXTERNAL or init.external_data:
            return f"weight {init.name[:60]} is stored in another file; quantize writes one file"
        floating = init.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)
        if floating and not np.isfinite(numpy_helper.to_array(init)).all():
            return f"weight {init.name[:60]} holds NaN or infinite values"
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


class Int8Model(nn.Module):
    """An int8 ``.onnx`` as a module: ``model(x)`` runs ONNX Runtime on the CPU on a normalised
    float NCHW batch and returns float logits on ``x``'s device. It has no parameters, so
    ``evaluate`` and ``infer`` use it as they use a :class:`SpecNet` (``.spec`` included)."""

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {"input": x.detach().to("cpu", torch.float32).contiguous().numpy()}
        try:
            logits = self._session.run(None, feed)[0]
        except Exception as e:
            raise CheckpointError(
                f"ONNX Runtime cannot run it ({_first_line(e)})", file=str(self.path)
            ) from None
        return torch.from_numpy(logits).to(x.device)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def load_int8(path: str | Path, threads: int | None = None) -> tuple[Int8Model, dict]:
    """``(Int8Model, metadata)`` from an int8 file; the metadata is decoded and checked as
    :func:`~mnv3spec.weights.checkpoint.read_metadata` decodes a checkpoint's, then against the
    graph it describes (:func:`_graph_problem`)."""
    require_onnx()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such file", file=str(path))
    proto, raw = _read_proto(path)
    if raw.get("format") != FORMAT:
        raise CheckpointError("an ONNX file, but not an mnv3spec int8 model", file=str(path))
    try:
        spec, _ = read_yaml(raw["spec"], f"{path} (embedded spec)")
        meta = {key: json.loads(raw[key]) for key in ("classes", "resolution", "mean", "std")}
        meta["extra"] = json.loads(raw.get("extra", "{}"))
        problem = _metadata_problem(spec, meta) or _graph_problem(proto, spec, meta)
    except (KeyError, ValueError, UserError) as e:
        raise CheckpointError(f"damaged metadata ({e})", file=str(path)) from None
    if problem:
        raise CheckpointError(f"damaged: {problem}", file=str(path))
    meta = {**meta, "spec": spec, "mean": tuple(meta["mean"]), "std": tuple(meta["std"])}
    try:
        built = load_spec(spec)
    except UserError as e:
        raise CheckpointError(f"its embedded spec is not valid: {e}", file=str(path)) from None
    return Int8Model(path, built, threads), meta


def load_any(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """A checkpoint, an int8 file, an ExecuTorch ``.pte`` or a LiteRT ``.tflite``, as ``(model,
    metadata)``: the one call ``eval`` and ``infer`` need to accept all. An int8 ``.onnx``, a
    ``.pte`` and a ``.tflite`` always run on the CPU (ONNX Runtime, ExecuTorch, LiteRT) and hand
    their logits back on ``device``."""
    if is_int8_model(path):
        return load_int8(path)
    if runtime_of(path) == "executorch":  # runs in ExecuTorch on the CPU
        from .executorch import load_pte

        return load_pte(path)
    if runtime_of(path) == "litert":
        from .tflite import load_tflite

        return load_tflite(path)
    return load_model(path, device)


# --- making one -------------------------------------------------------------------------------


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


def write_int8(int8_path: Path, out: Path, model: SpecNet, meta: dict) -> None:
    """Copy the quantized model to ``out`` atomically with the metadata that rebuilds its
    meaning, in the keys and JSON encoding a checkpoint uses."""
    onnx, _ = require_onnx()
    proto = onnx.load(str(int8_path))
    props = {
        "format": FORMAT,
        "spec": model.spec.to_yaml(),
        "classes": json.dumps(meta["classes"]),
        "resolution": json.dumps(meta["resolution"]),
        "mean": json.dumps(list(meta["mean"])),
        "std": json.dumps(list(meta["std"])),
        "extra": json.dumps(meta["extra"]),
    }
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    with writing(out, field="out") as tmp:
        onnx.save(proto, str(tmp))


def latency_runner(fast: nn.Module, example: torch.Tensor) -> tuple[Callable[[], Any], str]:
    """For ``latency --backends onnxruntime-int8``: a no-argument call running the int8 model of
    the BN-folded ``fast`` on ``example`` (CPU), calibrated on random normal inputs (timing does
    not depend on the ranges), and a note. Same shape as latency's ``_onnxruntime``."""
    x = example.cpu().contiguous()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        float_path = export_float(fast, work / "float.onnx", tuple(x.shape[1:]))
        calib = torch.randn(8, *x.shape[1:], generator=torch.Generator().manual_seed(0))
        quantize_onnx(float_path, work / "int8.onnx", calib, work / "calibration.json")
        session = ort_session(work / "int8.onnx", "cpu", threads=torch.get_num_threads())
    feed = {"input": x.numpy()}
    return lambda: session.run(None, feed), "CPUExecutionProvider, QDQ int8"
