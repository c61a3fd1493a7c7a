"""A file a runtime wrote (``.pte``, ``.tflite``, ``.onnx``) timed as it is: loaded by the
runtime that reads it (:func:`mnv3spec.deploy.runtimes.load_any`, which checks it against its
metadata) and called on random images at the resolution its metadata records."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from ..deploy.runtimes import load_any, runtime_of
from ..deploy.runtimes.record import in_turn
from .measure import Timing, percentiles, time_rounds


class FileTiming(NamedTuple):
    timing: Timing
    runtime: str  # the name of the runtime that ran it (``executorch``, ``litert``, ...)


def time_file(
    path: str | Path, *, batch: int = 1, runs: int = 50, warmup: int = 10, loads: int = 1
) -> FileTiming:
    """The program in ``path`` timed on the CPU, and the runtime that ran it; the file loaded
    ``loads`` times, the loads run in turn (:func:`~mnv3spec.deploy.runtimes.record.in_turn`)."""
    models = [load_any(path) for _ in range(loads)]
    meta = models[0][1]
    size = int(meta["resolution"])
    channels = len(meta.get("mean") or (0, 0, 0))
    images = torch.rand(batch, channels, size, size)
    run = in_turn([lambda m=m: m(images) for m, _ in models])
    times = time_rounds({"file": run}, runs, warmup, "cpu")["file"]
    median, _, iqr = percentiles(times)
    return FileTiming(Timing(median, iqr, ""), runtime_of(path).name)
