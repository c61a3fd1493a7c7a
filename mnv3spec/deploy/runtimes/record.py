"""The record each runtime declares (:data:`mnv3spec.deploy.runtimes.RUNTIMES`), in the pattern of
the operators' ``OPS``: what the pipelines of ``export``, ``quantize``, ``latency``, ``eval`` and
``infer`` ask of a runtime, in one place per runtime.

Every export is the same steps (:func:`mnv3spec.deploy.export.export`): the network prepared
(``prepare``: a copy from :mod:`mnv3spec.model.inference`), lowered to the runtime's program
(``lower``), run back by the runtime (``runner``) against the network, and only then written with
its metadata (``write``). A written file comes back as a module and its metadata (``load``).
``quantize`` hands a runtime's int8 flow a :class:`Job` and gets a :class:`QuantizeResult`.
"""

from __future__ import annotations

import importlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ExportError, UserError
from ...files import check_output
from ...model.builder import SpecNet
from ...services.evaluate import evaluate

Run = Callable[[torch.Tensor], torch.Tensor]  # a function of one CPU batch
Timed = tuple[Callable[[], Any], str]  # latency: a no-argument call, and a note on how it ran


GROUP = 4  # loads run in turn at a time (:func:`in_turn`)
SPAN = 48  # calls a group runs before the next takes over


def in_turn(runs: list[Callable[[], Any]]) -> Callable[[], Any]:
    """One call that runs each of ``runs`` in turn: a file loaded several times, timed as one;
    each load run once first, so none is timed on its first call. A loaded program's speed is
    partly its load's luck: four loads of one network, timed in the same rounds, kept their order
    round after round, the slowest 6 to 9 % behind the fastest (docs/measurements.md#adapt),
    which more rounds of one load cannot average away. More than :data:`GROUP` loads run
    :data:`GROUP` at a time, a whole group for :data:`SPAN` calls, then the next: 16 loads run in
    turn all together timed Small 1.17 ms with a p90 of 1.91 where 4 gave 1.10 and 1.20, as
    each call found its weights out of the cache (``latency --loads``, docs/measurements.md)."""
    for run in runs:
        run()
    groups = [runs[i : i + GROUP] for i in range(0, len(runs), GROUP)]
    each = SPAN // GROUP  # calls per load while its group runs: every load as often
    order = (
        runs if len(groups) == 1 else [g[i % len(g)] for g in groups for i in range(each * len(g))]
    )
    turn = itertools.cycle(order)
    return lambda: next(turn)()


Shapes = tuple[list[tuple[int, ...]], list[tuple[int, ...]]]  # a program's inputs', outputs'


@dataclass(frozen=True)
class Lowered:
    """A runtime's program (its own object: bytes, a script module) and what to say about it."""

    program: Any
    note: str = ""  # which rows its delegate runs, how many ops
    opset: int | None = None  # ONNX only


@dataclass(frozen=True)
class Int8:
    """How a runtime makes its int8 program by PT2E: quantize the prepared network into a
    fake-quant graph, lower that graph (its program, a description, the ops left in float), and
    how far the program may be from the graph (× the largest logit)."""

    quantize: Callable[..., Any]  # (prepared, example, calib, exclude_rows=, only_rows=) → graph
    lower: Callable[[Any, torch.Tensor], tuple[Any, str, Counter]]
    parity: float


@dataclass(frozen=True)
class Runtime:
    """One runtime: its names, its file, and how each pipeline step is done in it."""

    name: str  # the runtime's own name: in messages and in a file's metadata
    format: str  # what ``export --format`` calls its file, and its file's kind (:attr:`kind`)
    choice: str  # what ``quantize --to`` and ``latency --backends`` call it
    suffix: str
    metadata: str  # where a file's metadata lives: "inside" it, a "sidecar" JSON, or "none"
    extra: str  # the optional install extra that brings it
    order: int  # its place in the registry (and in latency's backends): gaps leave room
    require: Callable[[], None]  # nothing, or an ExportError naming the extra
    prepare: Callable[[nn.Module], nn.Module]
    lower: Callable[[nn.Module, torch.Tensor, bool], Lowered]  # (prepared, example, dynamic)
    runner: Callable[..., Run]  # (program or path, threads=None) → a function of a batch
    write: Callable[[Path, Any, dict], None]  # (out, program, metadata), atomically
    shapes: Callable[[Path], Shapes] | None = None  # a phone program's, as it declares them
    load: Callable[..., tuple[nn.Module, dict]] | None = None  # (path, threads=None)
    time: Callable[[nn.Module, torch.Tensor, bool, int], Timed] | None = None  # (int8?, loads)
    quantize: Callable[..., Any] | None = None  # (job, sensitivity, progress) → its int8 result
    rows_refused: str = ""  # why quantize cannot leave rows float or score them alone, if so
    fixed_batch: bool = False  # exported at batch 1, as an app calls it
    signature: str = ""  # what its file holds at byte 4, as a message says it
    # (out, runtime, inputs) → out: its own check of the files it writes (a phone program's
    # metadata file beside it too); None: its kind's (:func:`mnv3spec.files.check_output`)
    check_outputs: Callable[[Path, Runtime, list[Path]], Path] | None = None

    @property
    def kind(self) -> str:
        """Its file's kind in :data:`mnv3spec.kinds.KINDS`: named as ``--format`` names it."""
        return self.format

    @property
    def on_phone(self) -> bool:
        return self.metadata == "sidecar"

    def check_out(self, out: str | Path, inputs: list[Path], *, suffix: bool = True) -> Path:
        """``out`` checked, before any work, as a place for this runtime's file (its suffix
        required with ``suffix``; a phone program's always is)."""
        if self.check_outputs is not None:
            return self.check_outputs(Path(out), self, inputs)
        wanted = self.suffix if suffix else None
        return check_output(out, self.kind, inputs=inputs, suffix=wanted, field="out")


FORMAT = "mnv3spec-mobile"  # the metadata's "format" (an ONNX file's write stamps its own)


def metadata(model: SpecNet, meta: dict | None, runtime: str, precision: str) -> dict[str, Any]:
    """What every runtime's file is written with (:attr:`Runtime.write`'s ``info``: inside an ONNX
    model, the JSON beside a phone program), from a checkpoint's metadata or, for a spec (``meta``
    None), numbered classes and identity normalisation (a spec knows no data)."""
    if meta is None:
        c = model.spec.in_channels
        n = model.spec.params["num_classes"]
        meta = {
            "classes": [str(i) for i in range(n)],
            "resolution": model.spec.resolution,
            "mean": [0.0] * c,
            "std": [1.0] * c,
            "extra": {"random_init": True},
        }
    return {
        "format": FORMAT,
        "runtime": runtime,
        "precision": precision,
        "spec": model.spec.to_yaml(),
        "classes": list(meta["classes"]),
        "resolution": meta["resolution"],
        "mean": list(meta["mean"]),
        "std": list(meta["std"]),
        "extra": meta["extra"],
    }


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
    runtime: str = "executorch"
    delegation: str = ""  # ExecuTorch: which rows XNNPACK runs
    sensitivity: list[tuple[str, float]] = field(default_factory=list)  # (row, top-1 alone int8)

    @property
    def drop(self) -> float:
        return self.float_top1 - self.int8_top1


class AccuracyGateError(UserError):
    """The int8 model loses more top-1 than allowed; nothing was written. Exit status 4 tells it
    apart from bad input (2) and divergence (3): the inputs were fine, the result was not."""

    exit_code = 4

    def __init__(self, message: str, result: QuantizeResult, **where: Any) -> None:
        super().__init__(message, **where)
        self.result = result  # the measurements, for the caller to show


@dataclass(frozen=True)
class Job:
    """What every runtime's quantization starts from."""

    runtime: Runtime
    checkpoint: Path
    out: Path
    model: SpecNet
    meta: dict
    val: Iterable[tuple[torch.Tensor, torch.Tensor]]  # validation batches, uint8
    calib_images: torch.Tensor  # normalised training images
    keep: list[str]  # rows left in float
    max_drop: float
    force: bool

    def top1(self, run: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, int]:
        """``(top-1 percent, images)`` of a network or a function of a batch on the CPU."""
        r = evaluate(run, self.val, mean=self.meta["mean"], std=self.meta["std"], device=CPU)
        return r.top1, r.images

    def gate(self, result: QuantizeResult) -> None:
        if result.drop > self.max_drop and not self.force:
            raise AccuracyGateError(
                f"int8 top-1 {result.int8_top1:.2f}% is {result.drop:.2f} points below float "
                f"{result.float_top1:.2f}%, more than the allowed {self.max_drop:g}; nothing was "
                "written (raise the limit, keep sensitive rows in float, or force)",
                result,
                file=str(self.checkpoint),
            )

    def metadata(self, result: QuantizeResult) -> dict:
        """The checkpoint's metadata, its ``extra`` plus where the int8 model came from and its
        top-1."""
        extra = {
            **self.meta["extra"],
            "quantized_from": self.checkpoint.name,
            "float_top1": round(result.float_top1, 4),
            "int8_top1": round(result.int8_top1, 4),
            "calibration_images": result.calib,
            "kept_float": result.kept_float,
        }
        return {**self.meta, "extra": extra}


Progress = Callable[[str], None]
CPU = torch.device("cpu")


def require(what: str, extra: str, modules: tuple[str, ...]) -> None:
    """Import ``modules``, or raise an :class:`ExportError` naming the ``extra`` that brings
    them: "``what`` needs the optional ``extra`` extra (X is not installed): pip install ..."."""
    for module in modules:
        try:  # the package first: a submodule imported earlier would answer from its cache
            importlib.import_module(module.partition(".")[0])
            importlib.import_module(module)
        except ImportError as e:
            raise ExportError(
                f"{what} needs the optional {extra} extra ({e.name or module} is not installed): "
                f'pip install -e ".[{extra}]"'
            ) from None
