"""``quantize``: post-training static int8 quantization of a checkpoint for a runtime
(:mod:`.runtimes`: ExecuTorch by default, LiteRT or ONNX Runtime), gated by its validation
accuracy.

What is the same for every runtime is here: the checks, the checkpoint and its data, the
calibration images (a fixed draw of training images), the rows left in float. The runtime's own
flow (:attr:`~.runtimes.record.Runtime.quantize`) quantizes, lowers, runs its program for the
int8 top-1, gates it and writes the file: the phone runtimes' PT2E flow is
:func:`.runtimes.phone.pt2e`, ONNX Runtime's QDQ flow :func:`.runtimes.onnxruntime.quantize`.
ExecuTorch is the default because its int8 is the one that runs faster than its own float.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ..data.batches import loader, normalize
from ..data.datasets import Dataset, load_dataset
from ..errors import CheckpointError, DataError, UserError
from ..kinds import KINDS
from ..model.builder import SpecNet
from ..services.run_folder import RunFolder
from ..weights.checkpoint import load_model
from .runtimes import RUNTIMES, runtime_for, runtime_of
from .runtimes.record import Job, QuantizeResult, Runtime

DEFAULT_TO = "executorch"  # the int8 that runs faster than its float
DEFAULT_CALIB = 256
DEFAULT_MAX_DROP = 1.0  # top-1 points
BATCH = 64  # images per evaluation call


def int8_runtimes() -> list[Runtime]:
    """The runtimes ``quantize`` writes for: the default first, then the registry's order."""
    found = [rt for rt in RUNTIMES.values() if rt.quantize is not None]
    return sorted(found, key=lambda rt: rt.choice != DEFAULT_TO)


def default_runtime() -> str:
    """ExecuTorch where the mobile extra is installed (the int8 a phone app loads), else ONNX
    Runtime, which the export extra brings: ``quantize`` works out of the box either way."""
    wanted = ("executorch", "torchao")
    return DEFAULT_TO if all(importlib.util.find_spec(m) for m in wanted) else "onnxruntime"


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
    :class:`~.runtimes.record.AccuracyGateError`. ``keep_float``: rows (index or name) left
    in float. ``sensitivity``: also the top-1 with each row alone int8. ``to``: a runtime, or None
    for the one whose file ``out`` names by its suffix, else :func:`default_runtime`."""
    runtime = runtime_for(
        to or _runtime_named_by(out) or default_runtime(), "choice", int8_runtimes()
    )
    runtime.require()
    if calib < 1:
        raise UserError(f"must be at least 1 image, got {calib}", field="calib")
    model, meta = _load_checkpoint(checkpoint)
    out = _output_path(checkpoint, out, runtime)
    keep = resolve_rows(model, keep_float)
    if runtime.rows_refused and (keep or sensitivity):
        raise UserError(runtime.rows_refused, field="keep_float" if keep else "sensitivity")
    ds = _dataset(checkpoint, meta, data, data_dir)
    val = loader(ds.val_images, ds.val_labels, BATCH, shuffle=False)
    images = _calibration_images(ds, calib, meta)
    job = Job(runtime, Path(checkpoint), out, model, meta, val, images, keep, max_drop, force)
    return runtime.quantize(job, sensitivity, progress)


def _runtime_named_by(out: str | Path | None) -> str | None:
    """The runtime whose file ends as ``out`` does (``x.onnx``: ONNX Runtime), if one does."""
    suffix = Path(out).suffix.lower() if out is not None else ""
    found = [rt.choice for rt in int8_runtimes() if rt.suffix == suffix]
    return found[0] if found else None


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
    written = runtime_of(path)
    if written is not None:  # an int8 model of quantize's, or export's float one
        raise CheckpointError(
            f"is {KINDS[written.kind].description}, not a checkpoint; give the float "
            ".safetensors it came from",
            file=str(path),
        )
    model, meta = load_model(path)
    return model.eval(), meta


def _output_path(checkpoint: str | Path, out: str | Path | None, runtime: Runtime) -> Path:
    checkpoint = Path(checkpoint)
    suffix = runtime.suffix
    if out is None:
        out = checkpoint.with_name(checkpoint.stem + ".int8" + suffix)
    if Path(out).resolve() == checkpoint.resolve():
        raise UserError("is the checkpoint itself; write the int8 model elsewhere", file=str(out))
    return runtime.check_out(out, [checkpoint])


def resolve_rows(model: SpecNet, rows: Iterable[str]) -> list[str]:
    """Row module names (``bneck3``, ``r03_bneck``) for ``rows`` given as they are in ``--set``:
    digits are an index (``3``), anything else a row's name in the resolved spec (a variant's
    rename included), or the module name of a row without one; an empty entry, an unknown row
    and a row given twice are refused."""
    names = [p.name for p in model.plans]
    by_index = {p.row.index: p.name for p in model.plans}
    resolved = []
    for row in rows:
        text = row.strip()
        index = re.fullmatch(r"\d{1,6}", text)
        name = by_index.get(int(text)) if index else text if text in names else None
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
