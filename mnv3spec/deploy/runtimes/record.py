"""The record each runtime declares (:data:`mnv3spec.deploy.runtimes.RUNTIMES`), in the pattern of
the operators' ``OPS``: what the pipelines of ``export``, ``quantize``, ``latency``, ``eval`` and
``infer`` ask of a runtime, in one place per runtime.

Every export is the same steps (:func:`mnv3spec.deploy.export.export`): the network prepared
(``prepare``: a copy from :mod:`mnv3spec.model.inference`), lowered to the runtime's program
(``lower``), run back by the runtime (``runner``) against the network, and only then written with
its metadata (``write``). A written file comes back as a module and its metadata (``load``).
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ExportError

if TYPE_CHECKING:
    import torch
    from torch import nn

Run = Callable[["torch.Tensor"], "torch.Tensor"]  # a function of one CPU batch
Timed = tuple[Callable[[], Any], str]  # latency: a no-argument call, and a note on how it ran


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
    format: str  # what ``export --format`` calls its file
    choice: str  # what ``quantize --to`` and ``latency --backends`` call it
    kind: str  # its file's kind (:data:`mnv3spec.kinds.KINDS`, :data:`mnv3spec.files.KINDS`)
    suffix: str
    metadata: str  # where a file's metadata lives: "inside" it, a "sidecar" JSON, or "none"
    extra: str  # the optional install extra that brings it
    require: Callable[[], None]  # nothing, or an ExportError naming the extra
    prepare: Callable[[nn.Module], nn.Module]
    lower: Callable[[nn.Module, torch.Tensor, bool], Lowered]  # (prepared, example, dynamic)
    runner: Callable[..., Run]  # (program or path, threads=None) → a function of a batch
    write: Callable[[Path, Any, dict], None]  # (out, program, metadata), atomically
    load: Callable[..., tuple[nn.Module, dict]] | None = None  # (path, threads=None)
    time: Callable[[nn.Module, torch.Tensor, bool], Timed] | None = None  # latency (int8?)
    quantize: Callable[..., Any] | None = None  # (job, sensitivity, progress) → its int8 result
    rows_refused: str = ""  # why quantize cannot leave rows float or score them alone, if so
    fixed_batch: bool = False  # exported at batch 1, as an app calls it
    signature: str = ""  # what its file holds at byte 4, as a message says it

    @property
    def on_phone(self) -> bool:
        return self.metadata == "sidecar"


def require(what: str, extra: str, modules: tuple[str, ...]) -> None:
    """Import ``modules``, or raise an :class:`ExportError` naming the ``extra`` that brings
    them: "``what`` needs the optional ``extra`` extra (X is not installed): pip install ..."."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ExportError(
                f"{what} needs the optional {extra} extra ({e.name or module} is not installed): "
                f'pip install -e ".[{extra}]"'
            ) from None
