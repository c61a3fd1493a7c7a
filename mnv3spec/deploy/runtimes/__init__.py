"""The one registry of runtimes: :data:`RUNTIMES`, one record (:class:`.record.Runtime`) per module
of this folder. ``export``, ``quantize``, ``latency``, ``eval`` and ``infer`` loop over it and reach
a runtime only through its record; adding a runtime is one new module here declaring its
``RUNTIME``.

The registry finds those modules itself (:func:`discover`: every module of this package, by
``pkgutil``), rather than naming them in an import line: real plugin discovery, so a new file is
enough. Tools that draw the imports from ``import`` statements do not see these.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from ...errors import UserError
from ...kinds import file_kind
from ...weights.checkpoint import load_model
from .record import Runtime

# torchao registers an Enum with pytree when ExecuTorch or LiteRT quantizes, and torch logs a
# deprecation warning about it on every run: a line of theirs in our output, about nothing the
# user can change.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def modules() -> Iterable[ModuleType]:
    """Every module of this package, imported."""
    for found in pkgutil.iter_modules(__path__):
        yield importlib.import_module(f"{__name__}.{found.name}")


def discover(found: Iterable[ModuleType]) -> dict[str, Runtime]:
    """The ``RUNTIME`` each of ``found`` declares (a module without one is a helper), by name,
    in their declared :attr:`~.record.Runtime.order`; two records of one name are refused."""
    records = [m.RUNTIME for m in found if isinstance(getattr(m, "RUNTIME", None), Runtime)]
    registry = {rt.name: rt for rt in sorted(records, key=lambda rt: rt.order)}
    if len(registry) != len(records):
        raise ValueError(f"two runtimes share a name: {sorted(rt.name for rt in records)}")
    return registry


RUNTIMES: dict[str, Runtime] = discover(modules())


def runtime_for(word: str, by: str, allowed: list[Runtime] | None = None) -> Runtime:
    """The runtime among ``allowed`` (default: all) that a command names by ``word``: by its
    ``format`` (export's ``--format``) or its ``choice`` (``quantize --to``); else a
    :class:`UserError` listing them."""
    allowed = list(RUNTIMES.values()) if allowed is None else allowed
    for rt in allowed:
        if getattr(rt, by) == word:
            return rt
    what, field = _ASKED[by]
    names = " or ".join(getattr(rt, by) for rt in allowed)
    raise UserError(f"unknown {what} '{word}'; use {names}", field=field)


_ASKED = {"format": ("format", "format"), "choice": ("runtime", "to")}  # by → its words, flag


def runtime_of(path: str | Path) -> Runtime | None:
    """The runtime that reads the file ``path``: a phone runtime's by its suffix, so a damaged
    or foreign ``.pte`` is refused by that runtime's check of the signature, not read as a
    checkpoint; else by its bytes (a ``.pte`` renamed ``.bin`` is still a program). None for
    anything else."""
    kind, suffix = file_kind(path), Path(path).suffix.lower()
    loaders = [rt for rt in RUNTIMES.values() if rt.load is not None]
    named = [rt for rt in loaders if rt.on_phone and rt.suffix == suffix]
    return next(iter(named or [rt for rt in loaders if rt.kind == kind]), None)


def load_any(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """A checkpoint, or a file a runtime wrote (an ``.onnx`` float from export or int8 from
    quantize, an ExecuTorch ``.pte``, a LiteRT ``.tflite``), as ``(model, metadata)``: the one
    call ``eval`` and ``infer`` need to accept all. A runtime's file always runs on the CPU and
    hands its logits back on ``device``."""
    runtime = runtime_of(path)
    if runtime is not None:  # ours, or an error saying why not
        return runtime.load(path)
    return load_model(path, device)
