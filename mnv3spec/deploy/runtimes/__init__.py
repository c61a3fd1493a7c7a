"""The one registry of runtimes: :data:`RUNTIMES`, one record (:class:`.record.Runtime`) per module
of this folder. ``export``, ``quantize``, ``latency``, ``eval`` and ``infer`` loop over it; adding a
runtime is one module declaring its ``RUNTIME`` and one line here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ...errors import UserError
from ...kinds import file_kind
from ...weights.checkpoint import load_model
from . import executorch, litert, onnxruntime, torchscript
from .record import Runtime

# torchao registers an Enum with pytree when ExecuTorch or LiteRT quantizes, and torch logs a
# deprecation warning about it on every run: a line of theirs in our output, about nothing the
# user can change.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

RUNTIMES: dict[str, Runtime] = {
    m.RUNTIME.name: m.RUNTIME for m in (onnxruntime, torchscript, executorch, litert)
}


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
    """The runtime that reads the file ``path``: by its bytes where the metadata is inside (an
    ONNX model), by its suffix where it is beside (a phone program, whose signature is checked as
    it is read); None for anything else (a checkpoint)."""
    kind, suffix = file_kind(path), Path(path).suffix.lower()
    for rt in RUNTIMES.values():
        if rt.load is not None and (rt.suffix == suffix if rt.on_phone else rt.kind == kind):
            return rt
    return None


def load_any(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """A checkpoint, or a file a runtime wrote (an ``.onnx`` float from export or int8 from
    quantize, an ExecuTorch ``.pte``, a LiteRT ``.tflite``), as ``(model, metadata)``: the one
    call ``eval`` and ``infer`` need to accept all. A runtime's file always runs on the CPU and
    hands its logits back on ``device``."""
    runtime = runtime_of(path)
    if runtime is not None:  # ours, or an error saying why not
        return runtime.load(path)
    return load_model(path, device)
