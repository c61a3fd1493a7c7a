"""A file a runtime wrote (``.pte``, ``.tflite``, ``.onnx``) timed as it is: loaded by the
runtime that reads it (:func:`mnv3spec.deploy.runtimes.load_any`, which checks it against its
metadata) and called on random images at the resolution its metadata records."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from ..deploy.runtimes import load_any, runtime_of
from .measure import Timing, percentiles, time_rounds


class FileTiming(NamedTuple):
    timing: Timing
    runtime: str  # the name of the runtime that ran it (``executorch``, ``litert``, ...)


def time_file(path: str | Path, *, batch: int = 1, runs: int = 50, warmup: int = 10) -> FileTiming:
    """The program in ``path`` timed on the CPU, and the runtime that ran it."""
    model, meta = load_any(path)
    size = int(meta["resolution"])
    channels = len(meta.get("mean") or (0, 0, 0))
    images = torch.rand(batch, channels, size, size)
    times = time_rounds({"file": lambda: model(images)}, runs, warmup, "cpu")["file"]
    median, _, iqr = percentiles(times)
    return FileTiming(Timing(median, iqr, ""), runtime_of(path).name)
