"""Latency of compiled specs per width, device and backend (the seed's latency.py, for any spec).

Every candidate on one device — each spec and width, each backend, and torchvision's or timm's
twin of each network when asked for — is timed in the same alternating rounds, so a noisy
machine slows them alike. Timed one after another, the same network measured 3.51 to 4.56 ms on
this project's shared CPU, and of two specs the one timed second lost up to 30 %.
CPU calls are timed with ``perf_counter``; CUDA calls with events after a synchronisation.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
from ..spec.load import load_spec
from ..spec.read import resolve_path
from ..text import text_table
from ..weights import timm as timm_weights
from ..weights.torchvision import give_weights, load_torchvision, torchvision_twin
from .backends import BACKENDS, TIMED, Runner, prepare

DEVICES = ("cpu", "cuda")
DEFAULT_SPECS = ("small", "large")  # shipped specs, by name
# The libraries whose eager twin of a network ``reference`` times beside ours, and how each
# twin is found and given our weights.
TWINS = {
    "torchvision": (torchvision_twin, load_torchvision),
    "timm": (timm_weights.timm_twin, timm_weights.load_timm),
}


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
    torchvision_ms: float | None = None  # torchvision's eager twin in the same rounds
    timm_ms: float | None = None  # timm's eager twin in the same rounds
    note: str = ""

    @property
    def speedup(self) -> float | None:
        """torchvision eager ÷ this row: above 1 means faster than torchvision's eager model."""
        return _ratio(self.torchvision_ms, self.median_ms)

    @property
    def timm_speedup(self) -> float | None:
        """timm eager ÷ this row: above 1 means faster than timm's eager model."""
        return _ratio(self.timm_ms, self.median_ms)


def _ratio(reference: float | None, ours: float | None) -> float | None:
    return None if reference is None or ours is None else reference / ours


def time_rounds(
    runners: dict[Any, Runner], runs: int, warmup: int, device: str
) -> dict[Any, list[float]]:
    """Milliseconds per call: ``warmup`` untimed calls each, then ``runs`` rounds that call every
    runner once, in alternating order so none always runs first."""
    keys = list(runners)
    with torch.inference_mode():
        for key in keys:
            for _ in range(warmup):
                runners[key]()
        times: dict[Any, list[float]] = {key: [] for key in keys}
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
    reference: str | Sequence[str] = (),
    runs: int = 50,
    warmup: int = 10,
    progress: Callable[[str], None] = lambda line: None,
    loads: int = 1,
) -> list[LatencyRow]:
    """Time every (spec, width, device, backend); one row each, in that order. ``reference``:
    ``"torchvision"`` and/or ``"timm"``, whose twin of each network is timed in the same rounds
    (its time is None where the library has no twin of that network). ``loads``: a runtime's
    file loaded that many times, the loads run in turn."""
    devices = devices or default_devices()
    references = (reference,) if isinstance(reference, str) else tuple(reference or ())
    check_settings(devices, backends, references, batch, runs, warmup, loads)
    if "width" in (overrides or {}):
        raise UserError(
            "the width comes from the widths (one row per width), so this override would be "
            "lost; give widths instead",
            field="set width",
        )
    models = []
    for source in specs or DEFAULT_SPECS:
        spec = load_spec(source, **(overrides or {}))
        for width in widths:
            settings = {"width": width, **({"resolution": resolution} if resolution else {})}
            resolved = spec.derive(**settings)
            shapes = build(resolved, device="meta")
            for device in devices:  # refused before the weights are made, if too large
                _check_memory(shapes, device, batch, references)
            model = build(resolved).eval()
            models.append((model, _twins(model, references)))
    timed = {
        device: _measure_device(models, device, backends, batch, (runs, warmup, loads), progress)
        for device in devices
    }
    return [row for i in range(len(models)) for device in devices for row in timed[device][i]]


@dataclass(frozen=True)
class Timing:
    """One network timed on one backend: median and spread (IQR, 75th − 25th percentile) in
    ms, and how it ran."""

    median_ms: float
    iqr_ms: float
    note: str = ""


def time_model(
    model: torch.nn.Module,
    backend: str,
    example: torch.Tensor,
    *,
    int8: bool = False,
    runs: int = 50,
    warmup: int = 10,
) -> Timing:
    """``model`` timed on ``example`` (its batch, size and device) by ``backend``: ``eager``,
    ``compiled``, ... or a runtime of the registry (``onnxruntime``, ``executorch``, ``tflite``),
    with its program lowered as ``export`` (``int8``: as ``quantize``, calibrated on random
    inputs) lowers it. The one call a search needs to time a candidate network."""
    backend = f"{backend}-int8" if int8 else backend
    device = example.device.type
    check_settings([device], (backend,), (), runs, warmup)
    run, note = prepare(model.to(example.device).eval(), backend, example)
    median, _, iqr = percentiles(time_rounds({backend: run}, runs, warmup, device)[backend])
    return Timing(median, iqr, note)


def check_settings(
    devices: list[str], backends: tuple[str, ...], references: tuple[str, ...], *counts: int
) -> None:
    """Refuse, before any work, a device, backend or reference this machine cannot time."""
    for name, allowed, given in (
        ("devices", DEVICES, devices),
        ("backends", BACKENDS, backends),
        ("reference", tuple(TWINS), references),
    ):
        bad = [g for g in given if g not in allowed]
        if bad:
            raise UserError(f"unknown {', '.join(bad)}; use {', '.join(allowed)}", field=name)
    if "cuda" in devices and not torch.cuda.is_available():
        raise UserError("CUDA is not available on this machine; leave cuda out", field="devices")
    for choice in dict.fromkeys(b.removesuffix("-int8") for b in backends):
        if choice in TIMED:
            TIMED[choice].require()
    if "timm" in references:
        timm_weights.import_timm()  # a UserError saying how to install it, before any timing
    if min(counts) < 1:
        raise UserError("batch, runs, warmup and loads must be at least 1")


def _check_memory(model: SpecNet, device: str, batch: int, references: tuple[str, ...]) -> None:
    """Refuse, before allocating, a batch and resolution that cannot fit on ``device``."""
    spec = model.spec
    what = f"timing {spec.name} width {spec.width:g} on {device}"
    check_fits(model, batch, spec.resolution, training=False, device=device, what=what)
    if references:  # a twin is checked against ours on the CPU at batch 2
        check_fits(model, 2, spec.resolution, training=False, what=what)


def _twins(model: SpecNet, references: tuple[str, ...]) -> dict[str, torch.nn.Module]:
    """Each reference library's twin of ``model`` (where it has one), computing with our
    weights, so both meet the same tiny values."""
    twins = {}
    for name in references:
        find, load = TWINS[name]
        twin = find(model)
        if twin is not None:
            give_weights(model, twin, load)
            twins[name] = twin
    return twins


def _measure_device(
    models: list[tuple[SpecNet, dict[str, torch.nn.Module]]],
    device: str,
    backends: tuple[str, ...],
    batch: int,
    counts: tuple[int, int, int],
    progress: Callable[[str], None] = lambda line: None,
) -> list[list[LatencyRow]]:
    """Every network of ``models`` (with its twins) on ``device`` by every backend, all in the
    same alternating rounds (``counts``: their number, the warm-up calls, and the loads of a
    runtime's file); their rows, per network."""
    (runs, warmup, loads), runners, notes = counts, {}, {}
    for i, (model, twins) in enumerate(models):
        spec = model.spec
        progress(f"timing {spec.name} width {spec.width:g} on {device}")
        x = torch.randn(batch, spec.in_channels, spec.resolution, spec.resolution, device=device)
        for name, twin in twins.items():
            runners[i, f"reference {name}"] = prepare(twin.to(device), "eager", x)[0]
        model.to(device)
        for backend in backends:
            try:
                with _compiling(backend, progress):
                    runners[i, backend], notes[i, backend] = prepare(model, backend, x, loads)
            except ExportError as e:  # e.g. no CUDA provider in this onnxruntime: a row saying so
                notes[i, backend] = f"not run: {e.message}"
    times = time_rounds(runners, runs, warmup, device)
    return [_rows(i, model, twins, device, backends, batch, times, notes)
            for i, (model, twins) in enumerate(models)]  # fmt: skip


def _rows(i, model, twins, device, backends, batch, times, notes) -> list[LatencyRow]:
    """Network ``i``'s rows, one per backend, from the rounds' ``times`` (by (i, runner))."""
    spec, summary = model.spec, summarize(model.cpu())
    medians = {f"{name}_ms": percentiles(times[i, f"reference {name}"])[0] for name in twins}
    common = (spec.name, spec.width, device)
    size = (batch, spec.resolution, summary.params, summary.macs)
    return [
        LatencyRow(*common, backend, *size, *_stats(times.get((i, backend))),
                   **medians, note=notes[i, backend])
        for backend in backends
    ]  # fmt: skip


def _stats(times: list[float] | None) -> tuple[float | None, float | None, float | None]:
    return percentiles(times) if times is not None else (None, None, None)


SLOW_BACKENDS = {"compiled": "torch.compile"}  # minutes on a CPU: say so, then say how long
QUIET_LOGGERS = ("torch.utils.cpp_extension",)  # "No CUDA runtime is found": not the user's news


@contextmanager
def _compiling(backend: str, progress: Callable[[str], None]) -> Iterator[None]:
    """Around preparing ``backend``: a line when a slow compile starts and its time when it ends,
    and the warnings of torch's compile machinery that say nothing to the user kept quiet."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    started = time.perf_counter()
    if backend in SLOW_BACKENDS:
        progress(f"compiling with {SLOW_BACKENDS[backend]} (this can take minutes on a CPU)")
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    if backend in SLOW_BACKENDS:
        progress(f"compiled with {SLOW_BACKENDS[backend]} in {time.perf_counter() - started:.0f} s")


SPREAD_WARNING = 0.10  # an IQR above this fraction of the median: the timings are noisy


def timing_warnings(pairs: Sequence[tuple[float | None, float | None]]) -> list[str]:
    """At most one line each, to print once: the machine was busy (load average above its
    cores) while timing, and some spread (IQR) exceeds 10 % of its median."""
    lines = []
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not on every platform
        load = 0.0
    if load > cores:
        lines.append(
            f"warning: the load average ({load:.1f}) exceeds the {cores} cores: other work ran "
            "while timing, so these times are slower and noisier than on a quiet machine"
        )
    noisy = [(m, q) for m, q in pairs if m and q is not None and q > SPREAD_WARNING * m]
    if noisy:
        worst = max(q / m for m, q in noisy)
        lines.append(
            f"warning: {len(noisy)} of {len(pairs)} timings have a spread (IQR) above "
            f"{SPREAD_WARNING:.0%} of their median (up to {worst:.0%}): compare them with care, "
            "or time again with more runs on a quieter machine"
        )
    return lines


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
)
REFERENCE_COLUMNS = {  # shown for the references asked for
    "torchvision": (("tv ms", "torchvision_ms"), ("×tv", "speedup")),
    "timm": (("timm ms", "timm_ms"), ("×timm", "timm_speedup")),
}


def header(
    batch: int, runs: int, warmup: int, references: Sequence[str] = (), loads: int = 1
) -> str:
    """What the numbers are: batch, CPU threads, runs, the spread and the ratios' definition."""
    loaded = f"; each runtime's file loaded {loads} times, run in turn" if loads > 1 else ""
    lines = [
        f"batch {batch}, {torch.get_num_threads()} CPU threads (torch.get_num_threads(); ONNX "
        f"Runtime gets as many), {runs} timed runs after {warmup} warm-up, alternating rounds"
        f"{loaded}; CUDA rows timed with CUDA events.",
        "median / p90 / IQR (75th − 25th percentile) in ms",
    ]
    for name in references:
        (ms, _), (ratio, _) = REFERENCE_COLUMNS[name]
        lines.append(
            f"{ms} = {name}'s eager model of the same network in the same rounds (- where "
            f"{name} has none); {ratio} = {ms} ÷ median (above 1: faster than it)"
        )
    return "\n".join(lines)


def _cell(row: LatencyRow, key: str) -> str:
    value = getattr(row, key)
    if value is None:
        return "-"
    if key in ("macs", "params"):
        return f"{value / 1e6:.1f}" if key == "macs" else f"{value / 1e6:.2f}"
    if key.endswith("speedup"):
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:g}" if key == "width" else f"{value:.2f}"
    return str(value)


def format_latency(rows: list[LatencyRow], references: Sequence[str] = ()) -> str:
    """One line per row, with the columns of each reference asked for, then the notes (compile
    fallbacks, skipped backends, providers)."""
    columns = [*COLUMNS, *(c for name in references for c in REFERENCE_COLUMNS[name])]
    header = tuple(title for title, _ in columns)
    lines = [tuple(_cell(r, key) for _, key in columns) for r in rows]
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
        check_output(csv_path, "csv", inputs=inputs, field="csv", ours=_CSV_HEADER)
        inputs.append(csv_path)
    if plot_path:
        check_output(plot_path, "image", inputs=inputs, suffix=".png", field="plot")


_RATIOS = ("speedup", "timm_speedup")
_COLUMNS = [*(fl.name for fl in fields(LatencyRow)), *_RATIOS]
_CSV_HEADER = ",".join(_COLUMNS).encode()  # how a CSV of ours starts: any other is the user's


def write_csv(rows: list[LatencyRow], path: str | Path) -> None:
    """The raw rows, one per line, with the ratios to torchvision and timm (empty: not timed)."""
    with writing(path, field="csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, _COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({**asdict(r), **{k: getattr(r, k) for k in _RATIOS}})


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
