"""Latency of compiled specs per width, device and backend (the seed's latency.py, for any spec).

Every candidate of one (spec, width, device) — each backend, and torchvision's twin of the network
when asked for — is timed in the same alternating rounds, so a noisy machine slows them alike.
CPU calls are timed with ``perf_counter``; CUDA calls with events after a synchronisation.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ExportError, UserError
from ..files import check_output, writing
from ..model.builder import SpecNet, build
from ..model.memory import check_fits
from ..model.summary import summarize
from ..spec.load import load_spec, resolve_path
from ..text import text_table
from ..weights.torchvision import load_torchvision, torchvision_twin
from .backends import BACKENDS, Runner, prepare
from .export import require_onnx

DEVICES = ("cpu", "cuda")
DEFAULT_SPECS = ("small", "large")  # shipped specs, by name
REFERENCE = "torchvision"


@dataclass(frozen=True)
class LatencyRow:
    """One timed (spec, width, device, backend)."""

    spec: str
    width: float
    device: str
    backend: str
    batch: int
    resolution: int
    params: int
    macs: int  # multiply-adds of one image
    median_ms: float | None  # None: the backend could not run here (see note)
    p90_ms: float | None
    iqr_ms: float | None  # spread: 75th − 25th percentile
    torchvision_ms: float | None  # torchvision's eager twin in the same rounds
    note: str = ""

    @property
    def speedup(self) -> float | None:
        """torchvision eager ÷ this row: above 1 means faster than torchvision's eager model."""
        if self.torchvision_ms is None or self.median_ms is None:
            return None
        return self.torchvision_ms / self.median_ms


def time_rounds(
    runners: dict[str, Runner], runs: int, warmup: int, device: str
) -> dict[str, list[float]]:
    """Milliseconds per call: ``warmup`` untimed calls each, then ``runs`` rounds that call every
    runner once, in alternating order so none always runs first."""
    keys = list(runners)
    with torch.inference_mode():
        for key in keys:
            for _ in range(warmup):
                runners[key]()
        times: dict[str, list[float]] = {key: [] for key in keys}
        for i in range(runs):
            for key in keys if i % 2 == 0 else reversed(keys):
                times[key].append(_time_one(runners[key], device))
    return times


def _time_one(run: Runner, device: str) -> float:
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    run()
    return (time.perf_counter() - t0) * 1e3


def percentiles(times: list[float]) -> tuple[float, float, float]:
    """``(median, p90, IQR)`` in the unit of ``times``."""
    p25, p50, p75, p90 = np.percentile(times, [25, 50, 75, 90])
    return float(p50), float(p90), float(p75 - p25)


def default_devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def measure(
    specs: list[str | Path] | None = None,
    *,
    widths: tuple[float, ...] = (0.25, 0.5, 1.0),
    devices: list[str] | None = None,
    backends: tuple[str, ...] = ("eager",),
    batch: int = 1,
    resolution: int | None = None,
    overrides: dict[str, Any] | None = None,
    reference: str | None = None,
    runs: int = 50,
    warmup: int = 10,
    progress: Callable[[str], None] = lambda line: None,
) -> list[LatencyRow]:
    """Time every (spec, width, device, backend); one row each, in that order."""
    devices = devices or default_devices()
    _check(devices, backends, reference, batch, runs, warmup)
    if "width" in (overrides or {}):
        raise UserError(
            "the width comes from the widths (one row per width), so this override would be "
            "lost; give widths instead",
            field="set width",
        )
    rows = []
    for source in specs or DEFAULT_SPECS:
        spec = load_spec(source, **(overrides or {}))
        for width in widths:
            settings = {"width": width, **({"resolution": resolution} if resolution else {})}
            resolved = spec.derive(**settings)
            for device in devices:  # refused before the weights are made, if too large
                _check_memory(build(resolved, device="meta"), device, batch, reference)
            model = build(resolved).eval()
            for device in devices:
                progress(f"{model.spec.name} width {width:g} on {device}")
                rows += _measure_one(model, device, backends, batch, reference, runs, warmup)
    return rows


def _check(
    devices: list[str], backends: tuple[str, ...], reference: str | None, *counts: int
) -> None:
    for name, allowed, given in (
        ("devices", DEVICES, devices),
        ("backends", BACKENDS, backends),
    ):
        bad = [g for g in given if g not in allowed]
        if bad:
            raise UserError(f"unknown {', '.join(bad)}; use {', '.join(allowed)}", field=name)
    if "cuda" in devices and not torch.cuda.is_available():
        raise UserError("CUDA is not available on this machine; leave cuda out", field="devices")
    if any(b.startswith("onnxruntime") for b in backends):
        require_onnx()
    if reference not in (None, REFERENCE):
        raise UserError(f"unknown reference '{reference}'; use {REFERENCE}", field="reference")
    if min(counts) < 1:
        raise UserError("batch, runs and warmup must be at least 1")


def _check_memory(model: SpecNet, device: str, batch: int, reference: str | None) -> None:
    """Refuse, before allocating, a batch and resolution that cannot fit on ``device``."""
    spec = model.spec
    what = f"timing {spec.name} width {spec.width:g} on {device}"
    check_fits(model, batch, spec.resolution, training=False, device=device, what=what)
    if reference:  # the twin is checked against ours on the CPU at batch 2
        check_fits(model, 2, spec.resolution, training=False, what=what)


def _measure_one(
    model: SpecNet,
    device: str,
    backends: tuple[str, ...],
    batch: int,
    reference: str | None,
    runs: int,
    warmup: int,
) -> list[LatencyRow]:
    spec = model.spec
    size, channels = spec.resolution, spec.in_channels
    summary = summarize(model.cpu())
    twin = torchvision_twin(model) if reference else None
    if twin is not None:  # the same numbers through both, so both meet the same tiny values
        load_torchvision(model, twin.state_dict())
    model = model.to(device)
    x = torch.randn(batch, channels, size, size, device=device)
    runners, notes = {}, {}
    for backend in backends:
        try:
            runners[backend], notes[backend] = prepare(model, backend, x)
        except ExportError as e:  # e.g. no CUDA provider in this onnxruntime: a row saying so
            notes[backend] = f"not run: {e.message}"
    if twin is not None:
        runners[REFERENCE] = prepare(twin.to(device), "eager", x)[0]
    times = time_rounds(runners, runs, warmup, device)
    ref = percentiles(times[REFERENCE])[0] if REFERENCE in times else None
    rows = []
    for backend in backends:
        stats = percentiles(times[backend]) if backend in times else (None, None, None)
        rows.append(
            LatencyRow(
                spec.name,
                spec.width,
                device,
                backend,
                batch,
                size,
                summary.params,
                summary.macs,
                *stats,
                ref,
                notes[backend],
            )
        )
    return rows


COLUMNS = (
    ("spec", "spec"),
    ("width", "width"),
    ("device", "device"),
    ("backend", "backend"),
    ("res", "resolution"),
    ("MAdds M", "macs"),
    ("params M", "params"),
    ("median ms", "median_ms"),
    ("p90 ms", "p90_ms"),
    ("IQR ms", "iqr_ms"),
    ("tv ms", "torchvision_ms"),
    ("×tv", "speedup"),
)


def header(batch: int, runs: int, warmup: int) -> str:
    """What the numbers are: batch, CPU threads, runs, the spread and the ratio's definition."""
    return (
        f"batch {batch}, {torch.get_num_threads()} CPU threads (torch.get_num_threads(); ONNX "
        f"Runtime gets as many), {runs} timed runs after {warmup} warm-up, alternating rounds; "
        "CUDA rows timed with CUDA events.\n"
        "median / p90 / IQR (75th − 25th percentile) in ms; tv ms = torchvision's eager model of "
        "the same network in the same rounds; ×tv = tv ms ÷ median (above 1: faster than it)"
    )


def _cell(row: LatencyRow, key: str) -> str:
    value = getattr(row, key)
    if value is None:
        return "-"
    if key in ("macs", "params"):
        return f"{value / 1e6:.1f}" if key == "macs" else f"{value / 1e6:.2f}"
    if key == "speedup":
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:g}" if key == "width" else f"{value:.2f}"
    return str(value)


def format_latency(rows: list[LatencyRow]) -> str:
    """One line per row, then the notes (compile fallbacks, skipped backends, providers)."""
    header = tuple(title for title, _ in COLUMNS)
    lines = [tuple(_cell(r, key) for _, key in COLUMNS) for r in rows]
    notes = sorted({f"{r.backend} on {r.device}: {r.note}" for r in rows if r.note})
    table = text_table(header, lines, None, {0, 1, 2, 3})
    return "\n".join([*table, *(f"note: {n}" for n in notes)])


def check_files(
    csv_path: str | Path | None,
    plot_path: str | Path | None,
    specs: list[str | Path] | None = None,
) -> None:
    """Refuse a ``--csv`` or ``--plot`` path that cannot be written, before any timing: neither
    may be one of the ``specs`` read (nor each other), nor replace a file of another kind."""
    inputs: list[str | Path] = [resolve_path(s) for s in specs or DEFAULT_SPECS]
    if csv_path:
        check_output(csv_path, "csv", inputs=inputs, field="csv")
        inputs.append(csv_path)
    if plot_path:
        check_output(plot_path, "png", inputs=inputs, suffix=".png", field="plot")


def write_csv(rows: list[LatencyRow], path: str | Path) -> None:
    """The raw rows, one per line, with the ratio to torchvision."""
    with writing(path, field="csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, [*(fl.name for fl in fields(LatencyRow)), "speedup"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**asdict(r), "speedup": r.speedup})


def plot(rows: list[LatencyRow], path: str | Path) -> None:
    """Median latency against multiply-adds, one line per (spec, backend, device), as a PNG —
    in the spirit of Figure 1 of the MobileNetV3 paper."""
    from matplotlib.figure import Figure  # no pyplot: no display, no global state

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    series: dict[str, list[LatencyRow]] = {}
    for r in rows:
        if r.median_ms is not None:
            series.setdefault(f"{r.spec} {r.backend} ({r.device})", []).append(r)
    for label, points in series.items():
        points.sort(key=lambda r: r.macs)
        ax.plot([r.macs / 1e6 for r in points], [r.median_ms for r in points], "o-", label=label)
    ax.set_xlabel("multiply-adds (millions)")
    ax.set_ylabel("median latency (ms)")
    ax.set_title(f"latency vs multiply-adds, batch {rows[0].batch}" if rows else "latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with writing(path, field="plot") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
