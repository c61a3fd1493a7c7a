"""Post-training static int8 quantization of a checkpoint, gated by its validation accuracy.

The flow, chosen by measurement on this project's models (ONNX Runtime 1.32, an AVX2 CPU):
BN folded (:func:`~mnv3spec.run.export.optimize_for_inference`), exported to ONNX with a dynamic
batch, each squeeze-and-excite ``ReduceMean`` rewritten as the ``GlobalAveragePool`` it is, then
``onnxruntime.quantization.quantize_static`` in QDQ format with per-channel int8 weights and uint8
activations calibrated (min/max) on training images. With uint8 activations ONNX Runtime fuses
every convolution, residual add and SE multiply into ``QLinear*`` kernels; with int8 activations
it leaves a fifth of the convolutions and all adds in float. Hard-swish and hard-sigmoid have no
int8 kernel in ONNX Runtime: they run in float between a DequantizeLinear and a QuantizeLinear
(:func:`float_ops` counts them in the graph ONNX Runtime actually runs).

The int8 file is one ``.onnx`` whose ``metadata_props`` carry what a checkpoint's metadata carries
(spec, classes, resolution, mean, std, extra), so ``eval`` and ``infer`` need nothing else
(:func:`load_int8`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.batches import loader, normalize
from ..data.datasets import Dataset, load_dataset
from ..errors import CheckpointError, DataError, UserError
from ..files import check_output, writing
from ..model.builder import SpecNet
from ..weights.checkpoint import load_model
from .evaluate import evaluate
from .export import optimize_for_inference, ort_session, require_onnx, write_onnx
from .int8 import FORMAT, SUFFIX, is_int8_model

DEFAULT_CALIB = 256
DEFAULT_MAX_DROP = 1.0  # top-1 points
BATCH = 64  # images per evaluation / calibration call
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


class AccuracyGateError(UserError):
    """The int8 model loses more top-1 than allowed; nothing was written. Exit status 4 tells it
    apart from bad input (2) and divergence (3): the inputs were fine, the result was not."""

    exit_code = 4

    def __init__(self, message: str, result: QuantizeResult, **where: Any) -> None:
        super().__init__(message, **where)
        self.result = result  # the measurements, for the caller to show


@dataclass
class QuantizeResult:
    path: Path | None  # None: nothing written (a sensitivity-only run)
    float_top1: float
    int8_top1: float
    images: int  # validation images
    calib: int  # calibration images
    float_ops: Counter  # op type → count, float compute left in the int8 graph
    kept_float: list[str] = field(default_factory=list)  # rows left in float
    sensitivity: list[tuple[str, float]] = field(default_factory=list)  # (row, top-1 alone int8)

    @property
    def drop(self) -> float:
        return self.float_top1 - self.int8_top1


def quantize_checkpoint(
    checkpoint: str | Path,
    out: str | Path | None = None,
    *,
    calib: int = DEFAULT_CALIB,
    max_drop: float = DEFAULT_MAX_DROP,
    force: bool = False,
    data: str | None = None,
    data_dir: str | Path = "./data",
    keep_float: Iterable[str] = (),
    sensitivity: bool = False,
    progress: Callable[[str], None] = lambda line: None,
) -> QuantizeResult:
    """Quantize ``checkpoint`` to int8, evaluate float and int8 top-1 on its validation split and
    write ``out`` (default: ``NAME.int8.onnx`` beside it) only if the drop is at most
    ``max_drop`` points (or ``force``); else raise :class:`AccuracyGateError`. ``keep_float``:
    rows (index or name) left in float. ``sensitivity``: also the top-1 with each row alone int8."""
    require_onnx()
    if calib < 1:
        raise UserError(f"must be at least 1 image, got {calib}", field="calib")
    model, meta = _load_checkpoint(checkpoint)
    out = _output_path(checkpoint, out)
    keep = resolve_rows(model, keep_float)
    ds = _dataset(checkpoint, meta, data, data_dir)
    calib_images = _calibration_images(ds, calib, meta)
    with tempfile.TemporaryDirectory(prefix="mnv3spec-quant-") as tmp:
        work = Path(tmp)
        progress("exporting the BN-folded float model to ONNX")
        shape = (model.spec.in_channels, meta["resolution"], meta["resolution"])
        float_path = export_float(optimize_for_inference(model), work / "float.onnx", shape)
        cache = work / "calibration.json"
        progress(f"calibrating on {len(calib_images)} training images")
        int8_path = work / "int8.onnx"
        quantize_onnx(float_path, int8_path, calib_images, cache, exclude_rows=keep)
        val = _validation(ds)
        progress("evaluating float and int8 top-1")
        float_top1 = evaluate(model, val, mean=meta["mean"], std=meta["std"], device=_CPU).top1
        int8_top1, images = onnx_top1(int8_path, val, meta["mean"], meta["std"])
        result = QuantizeResult(
            None, float_top1, int8_top1, images, len(calib_images), float_ops(int8_path), keep
        )
        if sensitivity:
            result.sensitivity = _sensitivity(model, float_path, cache, calib_images, val, meta)
            progress("sensitivity done")
        if result.drop > max_drop and not force:
            raise AccuracyGateError(
                f"int8 top-1 {int8_top1:.2f}% is {result.drop:.2f} points below float "
                f"{float_top1:.2f}%, more than the allowed {max_drop:g}; nothing was written "
                "(raise the limit, keep sensitive rows in float, or force)",
                result,
                file=str(checkpoint),
            )
        extra = {
            **meta["extra"],
            "quantized_from": Path(checkpoint).name,
            "float_top1": round(float_top1, 4),
            "int8_top1": round(int8_top1, 4),
            "calibration_images": len(calib_images),
            "kept_float": keep,
        }
        write_int8(int8_path, out, model, {**meta, "extra": extra})
        result.path = out
    return result


_CPU = torch.device("cpu")


def _load_checkpoint(path: str | Path) -> tuple[SpecNet, dict]:
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        raise CheckpointError(
            "is a spec; quantize needs trained weights (a .safetensors checkpoint from train)",
            file=str(path),
        )
    if path.is_dir():
        raise CheckpointError(
            f"is a folder; give a .safetensors file (e.g. {path / 'best.safetensors'})",
            file=str(path),
        )
    if is_int8_model(path):
        raise CheckpointError("is already an int8 model; give the float checkpoint", file=str(path))
    model, meta = load_model(path)
    return model.eval(), meta


def _output_path(checkpoint: str | Path, out: str | Path | None) -> Path:
    checkpoint = Path(checkpoint)
    if out is None:
        out = checkpoint.with_name(checkpoint.stem + ".int8" + SUFFIX)
    if Path(out).resolve() == checkpoint.resolve():
        raise UserError("is the checkpoint itself; write the int8 model elsewhere", file=str(out))
    return check_output(out, "onnx", inputs=[checkpoint], suffix=SUFFIX, field="out")


def resolve_rows(model: SpecNet, rows: Iterable[str]) -> list[str]:
    """Row module names (``r03_bneck``) for ``rows`` given as indices (``3``) or names."""
    names = [name for name, _ in model.layers.named_children()]
    by_index = {str(int(name[1:].split("_")[0])): name for name in names}
    resolved = []
    for row in rows:
        name = by_index.get(row.strip().lstrip("r").lstrip("0") or "0", row.strip())
        if name not in names:
            raise UserError(
                f"no row {row!r}; rows are 0..{len(names) - 1} or names like {names[1]}",
                field="keep_float",
            )
        resolved.append(name)
    return resolved


def _dataset(checkpoint: str | Path, meta: dict, data: str | None, root: str | Path) -> Dataset:
    data = data or meta["extra"].get("data", "cifar100")
    ds = load_dataset(data, root, meta["resolution"], num_classes=len(meta["classes"]))
    if list(ds.classes) != list(meta["classes"]):
        raise DataError(
            f"the checkpoint was trained on {len(meta['classes'])} classes but '{data}' has "
            f"{len(ds.classes)} (or other names); quantize it with the data it was trained on",
            file=str(checkpoint),
        )
    return ds


def _calibration_images(ds: Dataset, n: int, meta: dict) -> torch.Tensor:
    """``n`` training images (a fixed random draw, all if fewer), normalised, unaugmented."""
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(ds.train_labels), generator=g)[:n].sort().values
    return normalize(ds.train_images[pick.tolist()], meta["mean"], meta["std"])


def _validation(ds: Dataset) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    return loader(ds.val_images, ds.val_labels, BATCH, shuffle=False)


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


def onnx_top1(
    path: Path,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> tuple[float, int]:
    """``(top-1 percent, images)`` of an ONNX model on uint8 image batches."""
    session = ort_session(path, "cpu", threads=torch.get_num_threads())
    hits = total = 0
    for x, y in batches:
        logits = session.run(None, {"input": normalize(x, mean, std).numpy()})[0]
        hits += int((torch.from_numpy(logits).argmax(1) == y).sum())
        total += len(y)
    return 100 * hits / max(total, 1), total


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


def _sensitivity(
    model: SpecNet,
    float_path: Path,
    cache: Path,
    calib_images: torch.Tensor,
    val: Iterable,
    meta: dict,
) -> list[tuple[str, float]]:
    """Top-1 with one row at a time in int8 and the rest float, for every row that computes."""
    results = []
    onnx, _ = require_onnx()
    with_nodes = set(node_rows(onnx.load(str(float_path))).values())  # not dropout, flatten
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "row.onnx"
        for name, _ in model.layers.named_children():
            if name not in with_nodes:
                continue
            quantize_onnx(float_path, path, calib_images, cache, only_rows=[name])
            results.append((name, onnx_top1(path, val, meta["mean"], meta["std"])[0]))
    return results


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
