"""Post-training static int8 quantization of a checkpoint, gated by its validation accuracy, for
ExecuTorch (the default) or ONNX Runtime.

ExecuTorch (``--to executorch``, :mod:`.executorch`): PT2E quantization with the XNNPACK
quantizer (per-channel symmetric int8 weights, int8 activations) calibrated on training images,
lowered to XNNPACK, written as a ``.pte`` with its metadata file beside it. It is the default
because it is the int8 that pays: measured here (issue 20, 224 px, batch 1, 2 threads) it runs
Small 5.0× and Large 4.4× faster than its own fp32, where ONNX Runtime's int8 runs at 0.85–0.96×
its fp32 (below); ``bench/mobile.py`` measures both side by side.

ONNX Runtime (``--to onnxruntime``), the flow chosen by measurement on this project's models
(ONNX Runtime 1.32, an AVX2 CPU): BN folded
(:func:`~mnv3spec.model.inference.optimize_for_inference`), exported to ONNX with a dynamic batch,
each squeeze-and-excite ``ReduceMean`` rewritten as the ``GlobalAveragePool`` it is, then
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

import importlib.util
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
from ..errors import CheckpointError, DataError, ExportError, UserError
from ..files import check_output
from ..model.builder import SpecNet
from ..model.inference import for_xnnpack, optimize_for_inference
from ..services.evaluate import evaluate
from ..services.run_folder import RunFolder
from ..weights.checkpoint import load_model
from . import executorch, tflite
from .export import ort_session, require_onnx
from .int8 import (
    SUFFIX,
    export_float,
    float_ops,
    is_int8_model,
    node_rows,
    quantize_onnx,
    write_int8,
)
from .mobile import ProgramModel, check_outputs, metadata

# --to → suffix of its file
RUNTIMES = {"executorch": executorch.SUFFIX, "onnxruntime": SUFFIX, "tflite": tflite.SUFFIX}
DEFAULT_TO = "executorch"  # the int8 that runs faster than its float (module docstring)


def default_runtime() -> str:
    """ExecuTorch where the mobile extra is installed (its int8 is the fast one), else ONNX
    Runtime, which the export extra brings: ``quantize`` works out of the box either way."""
    wanted = ("executorch", "torchao")
    return DEFAULT_TO if all(importlib.util.find_spec(m) for m in wanted) else "onnxruntime"


# an int8 program's logits within this × their scale of its fake-quant graph's, by runtime. Both
# requantize in fixed point where the graph rounds in float, and a rounding step apart compounds
# over the rows of the tests' tiny checkpoint: 0.075 measured there for LiteRT, 0.155 for
# ExecuTorch (once the convolutions of a --keep-float program were int8 at all: 0.05 held only
# while they ran float); a broken lowering (layout, scales) is off by the whole scale.
PARITY = {"executorch": 0.3, "tflite": 0.15}
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
    float_ops: Counter  # op type → count, float compute left in the int8 graph (ExecuTorch:
    # ops outside the XNNPACK delegate)
    kept_float: list[str] = field(default_factory=list)  # rows left in float
    runtime: str = DEFAULT_TO
    delegation: str = ""  # ExecuTorch: which rows XNNPACK runs
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
    to: str | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> QuantizeResult:
    """Quantize ``checkpoint`` to int8 for the runtime ``to``, evaluate float and int8 top-1 on
    its validation split and write ``out`` (default: ``NAME.int8.pte``, ``.tflite`` or ``.onnx``
    beside it) only if the drop is at most ``max_drop`` points (or ``force``); else raise
    :class:`AccuracyGateError`. ``keep_float``: rows (index or name) left in float.
    ``sensitivity``: also the top-1 with each row alone int8. ``to``: a runtime, or None for
    :func:`default_runtime`."""
    to = to or default_runtime()
    if to not in RUNTIMES:
        raise UserError(f"unknown runtime '{to}'; use {' or '.join(RUNTIMES)}", field="to")
    REQUIRES[to]()
    if calib < 1:
        raise UserError(f"must be at least 1 image, got {calib}", field="calib")
    model, meta = _load_checkpoint(checkpoint)
    out = _output_path(checkpoint, out, to)
    keep = resolve_rows(model, keep_float)
    if to == "tflite" and (keep or sensitivity):
        raise UserError(tflite.ROWS_REFUSED, field="keep_float" if keep else "sensitivity")
    ds = _dataset(checkpoint, meta, data, data_dir)
    job = _Job(Path(checkpoint), out, model, meta, ds, _calibration_images(ds, calib, meta), keep)
    return QUANTIZERS[to](job, sensitivity, _Gate(max_drop, force), progress)


@dataclass(frozen=True)
class _Job:
    """What every runtime's quantization starts from."""

    checkpoint: Path
    out: Path
    model: SpecNet
    meta: dict
    ds: Dataset
    calib_images: torch.Tensor  # normalised training images
    keep: list[str]  # rows left in float


@dataclass(frozen=True)
class _Gate:
    max_drop: float
    force: bool


def _to_onnxruntime(
    job: _Job, sensitivity: bool, gate: _Gate, progress: Callable[[str], None]
) -> QuantizeResult:
    """:func:`quantize_checkpoint` for ONNX Runtime: QDQ int8 of the float ONNX export."""
    model, meta, calib_images = job.model, job.meta, job.calib_images
    with tempfile.TemporaryDirectory(prefix="mnv3spec-quant-") as tmp:
        work = Path(tmp)
        progress("exporting the BN-folded float model to ONNX")
        shape = (model.spec.in_channels, meta["resolution"], meta["resolution"])
        float_path = export_float(optimize_for_inference(model), work / "float.onnx", shape)
        cache = work / "calibration.json"
        progress(f"calibrating on {len(calib_images)} training images")
        int8_path = work / "int8.onnx"
        quantize_onnx(float_path, int8_path, calib_images, cache, exclude_rows=job.keep)
        val = _validation(job.ds)
        progress("evaluating float and int8 top-1")
        float_top1 = evaluate(model, val, mean=meta["mean"], std=meta["std"], device=_CPU).top1
        int8 = evaluate(onnx_run(int8_path), val, mean=meta["mean"], std=meta["std"], device=_CPU)
        int8_top1, images = int8.top1, int8.images
        result = QuantizeResult(
            None, float_top1, int8_top1, images, len(calib_images), float_ops(int8_path), job.keep
        )
        result.runtime = "onnxruntime"
        if sensitivity:
            result.sensitivity = _sensitivity(model, float_path, cache, calib_images, val, meta)
            progress("sensitivity done")
        _gate(result, gate.max_drop, gate.force, job.checkpoint)
        extra = _extra(job.checkpoint, meta, result)
        write_int8(int8_path, job.out, model, {**meta, "extra": extra})
        result.path = job.out
    return result


def _gate(result: QuantizeResult, max_drop: float, force: bool, checkpoint: str | Path) -> None:
    if result.drop > max_drop and not force:
        raise AccuracyGateError(
            f"int8 top-1 {result.int8_top1:.2f}% is {result.drop:.2f} points below float "
            f"{result.float_top1:.2f}%, more than the allowed {max_drop:g}; nothing was written "
            "(raise the limit, keep sensitive rows in float, or force)",
            result,
            file=str(checkpoint),
        )


def _extra(checkpoint: str | Path, meta: dict, result: QuantizeResult) -> dict:
    """The checkpoint's ``extra`` metadata, plus where the int8 model came from and its top-1."""
    return {
        **meta["extra"],
        "quantized_from": Path(checkpoint).name,
        "float_top1": round(result.float_top1, 4),
        "int8_top1": round(result.int8_top1, 4),
        "calibration_images": result.calib,
        "kept_float": result.kept_float,
    }


@dataclass(frozen=True)
class _Program:
    """A phone runtime's int8 steps: PT2E quantization, lowering to its file's bytes (and a
    description of what its delegate runs, and the float ops left), running those bytes, and
    writing them with the metadata file."""

    name: str  # the metadata's runtime
    quantize: Callable[..., Any]  # (fast, example, calib, exclude_rows=, only_rows=) → graph
    lower: Callable[[Any, torch.Tensor], tuple[bytes, str, Counter]]
    runner: Callable[[bytes], Callable[[torch.Tensor], torch.Tensor]]
    write: Callable[[Path, bytes, dict], None]


def _et_lower(graph: Any, example: torch.Tensor) -> tuple[bytes, str, Counter]:
    program, delegation = executorch.lower(graph, example)
    return program, delegation.describe(), delegation.ops()


def _tfl_lower(graph: Any, example: torch.Tensor) -> tuple[bytes, str, Counter]:
    model = tflite.convert(graph, example, int8=True)
    ops, floats = tflite.op_counts(model), tflite.op_counts(model, float_only=True)
    left = ", ".join(f"{op}×{n}" for op, n in floats.most_common()) or "none"
    return model, f"{sum(ops.values())} ops run by LiteRT; computing in float: {left}", floats


PROGRAMS = {
    "executorch": _Program(
        "executorch", executorch.quantize_pt2e, _et_lower, executorch.runner, executorch.write_pte
    ),
    "tflite": _Program(
        tflite.RUNTIME, tflite.quantize_pt2e, _tfl_lower, tflite.runner, tflite.write_tflite
    ),
}


def _to_program(
    runtime: str, job: _Job, sensitivity: bool, gate: _Gate, progress: Callable[[str], None]
) -> QuantizeResult:
    """:func:`quantize_checkpoint` for a phone runtime: PT2E, lowered or converted, the program
    run in the runtime itself for its top-1 (what ships is what is measured)."""
    steps, model, meta, calib_images = PROGRAMS[runtime], job.model, job.meta, job.calib_images
    fast = for_xnnpack(model)
    size = meta["resolution"]
    example = torch.zeros(1, model.spec.in_channels, size, size)
    progress(f"calibrating on {len(calib_images)} training images (PT2E)")
    graph = steps.quantize(fast, example, calib_images, exclude_rows=job.keep)
    progress(f"lowering to {runtime}")
    program, described, left_float = steps.lower(graph, example)
    run = steps.runner(program)
    _check_program(run, graph, calib_images[:2], job.out, runtime)
    val = _validation(job.ds)
    progress("evaluating float and int8 top-1")
    float_top1 = evaluate(model, val, mean=meta["mean"], std=meta["std"], device=_CPU).top1
    pte = ProgramModel(job.out, model.spec, size, run)
    int8 = evaluate(pte, val, mean=meta["mean"], std=meta["std"], device=_CPU)
    int8_top1, images = int8.top1, int8.images
    result = QuantizeResult(
        None, float_top1, int8_top1, images, len(calib_images), left_float, job.keep
    )
    result.runtime, result.delegation = runtime, described
    if sensitivity:
        for row in _computing_rows(model):
            alone = steps.quantize(fast, example, calib_images, only_rows=[row])
            # handed as a function: a PT2E graph has no eval mode
            top1 = evaluate(alone.forward, val, mean=meta["mean"], std=meta["std"], device=_CPU)
            result.sensitivity.append((row, top1.top1))
        progress("sensitivity done")
    _gate(result, gate.max_drop, gate.force, job.checkpoint)
    extra = _extra(job.checkpoint, meta, result)
    steps.write(job.out, program, metadata(model, {**meta, "extra": extra}, steps.name, "int8"))
    result.path = job.out
    return result


def _check_program(
    run: Callable, graph: Callable, images: torch.Tensor, out: Path, runtime: str = "executorch"
) -> None:
    """The int8 program in its runtime against its fake-quant graph in PyTorch: the same
    integer arithmetic up to rounding, so a larger difference is a broken lowering."""
    with torch.no_grad():
        for x in images.split(1):
            ref, got = graph(x), run(x)
            scale = ref.abs().max().item()
            diff = (ref - got).abs().max().item()
            if not (got.isfinite().all() and diff <= PARITY[runtime] * scale):
                raise ExportError(
                    f"the int8 program run by {runtime} differs from its fake-quant graph by "
                    f"{diff:.3g} (limit {PARITY[runtime]:g} × the largest logit {scale:.3g}); "
                    "nothing was written",
                    file=str(out),
                )


def _computing_rows(model: SpecNet) -> list[str]:
    return [name for name, m in model.layers.named_children() if any(True for _ in m.parameters())]


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
            f"is a folder; give a .safetensors file (e.g. {path / RunFolder.BEST})",
            file=str(path),
        )
    if is_int8_model(path):
        raise CheckpointError("is already an int8 model; give the float checkpoint", file=str(path))
    model, meta = load_model(path)
    return model.eval(), meta


def _output_path(checkpoint: str | Path, out: str | Path | None, to: str) -> Path:
    checkpoint = Path(checkpoint)
    suffix = RUNTIMES[to]
    if out is None:
        out = checkpoint.with_name(checkpoint.stem + ".int8" + suffix)
    if Path(out).resolve() == checkpoint.resolve():
        raise UserError("is the checkpoint itself; write the int8 model elsewhere", file=str(out))
    if to in PROGRAMS:
        return check_outputs(Path(out), PROGRAMS[to].name, inputs=[checkpoint])
    return check_output(out, "onnx", inputs=[checkpoint], suffix=suffix, field="out")


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


def onnx_run(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ONNX model as a function of a normalised CPU batch, run by ONNX Runtime."""
    session = ort_session(path, "cpu", threads=torch.get_num_threads())
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


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
            top1 = evaluate(onnx_run(path), val, mean=meta["mean"], std=meta["std"], device=_CPU)
            results.append((name, top1.top1))
    return results


# --to → what checks its extra is installed, and what quantizes, gates and writes
REQUIRES: dict[str, Callable[[], Any]] = {
    "executorch": executorch.require_executorch,
    "onnxruntime": require_onnx,
    "tflite": lambda: tflite.require_litert(convert=True),
}
QUANTIZERS: dict[str, Callable[..., QuantizeResult]] = {
    "executorch": lambda *a: _to_program("executorch", *a),
    "onnxruntime": _to_onnxruntime,
    "tflite": lambda *a: _to_program("tflite", *a),
}
