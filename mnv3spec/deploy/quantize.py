"""Post-training static int8 quantization of a checkpoint, gated by its validation accuracy.

The flow, chosen by measurement on this project's models (ONNX Runtime 1.32, an AVX2 CPU):
BN folded (:func:`~mnv3spec.deploy.export.optimize_for_inference`), exported to ONNX with a dynamic
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

import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.batches import loader, normalize
from ..data.datasets import Dataset, load_dataset
from ..errors import CheckpointError, DataError, UserError
from ..files import check_output
from ..model.builder import SpecNet
from ..train.evaluate import evaluate
from ..weights.checkpoint import load_model
from .export import optimize_for_inference, ort_session, require_onnx
from .int8 import (
    SUFFIX,
    export_float,
    float_ops,
    is_int8_model,
    node_rows,
    quantize_onnx,
    write_int8,
)

DEFAULT_CALIB = 256
DEFAULT_MAX_DROP = 1.0  # top-1 points
BATCH = 64  # images per evaluation / calibration call


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
    """Row module names (``bneck3``, ``r03_bneck``) for ``rows`` given as indices (``3``, ``r3``)
    or names (a row's name is its module name); an empty entry, an unknown row and a row given
    twice are refused."""
    names = [p.name for p in model.plans]
    by_index = {p.row.index: p.name for p in model.plans}
    resolved = []
    for row in rows:
        text = row.strip()
        index = re.fullmatch(r"r?(\d{1,6})", text)
        name = by_index.get(int(index[1])) if index else text if text in names else None
        if name is None or name in resolved:
            problem = "an empty entry" if not text else f"no row {row!r}"
            if name is not None:
                problem = f"row {row!r} ({name}) is given twice"
            raise UserError(
                f"{problem}; rows are 0..{len(names) - 1} or names like {names[1]}",
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
