"""Latency of one spec on the runtime that ships it, measured whole on its exported program,
and the folder's cache of those measurements (``latency.json``), keyed by a hash of the resolved
spec and the latency settings, so a resumed search never times a network twice.

:func:`measure_spec` is the one place that calls the deploy package's timing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import SearchError, UserError
from ..files import read_regular, writing
from ..services.device import cpu_threads
from ..spec.resolve import Spec

BACKENDS = ("executorch", "tflite", "onnxruntime", "eager")
CACHE = "latency.json"
MAX_CACHE_BYTES = 64 << 20


@dataclass(frozen=True)
class LatencySettings:
    """How a spec is timed: the runtime (``backend``, its int8 program or not), and the calls."""

    backend: str = "executorch"
    int8: bool = False
    runs: int = 30
    warmup: int = 5
    threads: int = 1  # the runtime's CPU threads (:func:`threads_of`)

    @property
    def runtime(self) -> str:
        """The ``latency`` backend name: executorch, executorch-int8, ..."""
        return f"{self.backend}-int8" if self.int8 else self.backend


@dataclass(frozen=True)
class Measured:
    """One network's latency: median and spread (IQR) in ms, the machine's 1-minute load
    average when it was timed, the seconds its export and timing took, and, when it was timed
    beside its parent, the parent's median in those same rounds and the noise of the saving
    (0: timed alone)."""

    median_ms: float
    spread_ms: float
    load: float
    seconds: float = 0.0
    parent_ms: float = 0.0
    noise_ms: float = 0.0  # beside its parent: the noise of its saving (:func:`saving_noise`)


def check_settings(s: LatencySettings) -> None:
    """Refuse, before any work, a runtime this machine cannot time (naming its extra)."""
    from ..latency import measure as latency

    if s.backend not in BACKENDS:
        raise UserError(f"unknown {s.backend}; use {', '.join(BACKENDS)}", field="backend")
    if s.int8 and s.backend == "eager":
        raise UserError("eager has no int8 program; use executorch, tflite or onnxruntime")
    latency.check_settings(["cpu"], (s.runtime,), (), 1, s.runs, s.warmup)


def threads_of(s: LatencySettings) -> AbstractContextManager[None]:
    """``s.threads`` CPU threads for the block (:func:`~..services.device.cpu_threads`: each
    runtime's load takes torch's count), then as before. One by default, the paper's (a single
    large core of the phone): a ratio of two networks timed anew at one thread spread 3.4–3.9 %,
    at two 4.6–6.2 % on this shared 2-core machine, and at two the search's own trainings and
    Ray's processes share the cores it times on (``bench/loads.py``)."""
    return cpu_threads(s.threads)


def measure_spec(spec: Spec, s: LatencySettings) -> Measured:
    """``spec`` (resolved: its resolution and overrides those of the deployed network) timed
    alone at batch 1 on the CPU by ``s.runtime``, its file loaded :data:`LOADS` times."""
    from ..latency.measure import percentiles, time_rounds

    load, started = os.getloadavg()[0], time.perf_counter()
    with threads_of(s):
        times = time_rounds({"net": _prepared(spec, s)}, s.runs, s.warmup, "cpu")["net"]
    median, _, spread = percentiles(times)
    return Measured(median, spread, load, time.perf_counter() - started)


_PREPARED: dict[str, Callable[[], Any]] = {}  # the networks exported in this process, by key
KEEP = 4  # besides the first (a search's start): the last used (a step's parent, its proposals)
# Each network's file is loaded this many times and the loads run in turn, round after round
# (:func:`~mnv3spec.deploy.runtimes.record.in_turn`): four loads of the bench's start, timed in
# the same rounds, kept their order round after round, the slowest 6 to 9 % behind the fastest
# (``bench/adapt_retime.py``), where a step is to save 5 %. A load costs a fraction of a second
# beside the export's 10–28 s. Twelve loads, run four at a time, halved the spread of a ratio of
# two networks timed anew: 1.6 % of it where four loads gave 3.7 % (``bench/loads.py``, five
# repeats at one thread, the machine quiet), and the bench's path recorded with four was timed
# again 2–4 % slower. On a busy machine a ratio still spreads a few % (3.4–6.2 % there).
LOADS = 12


def _prepared(spec: Spec, s: LatencySettings) -> Callable[[], Any]:
    """``spec`` exported and loaded once in this process, kept while it may be timed again (the
    start, beside which every chosen network is confirmed; a step's parent, beside which each
    proposal is measured; a child measured and then confirmed): the first always, and the
    :data:`KEEP` used last. Kept in the order they were exported, a step's parent went after its
    fourth proposal and was exported again, some 14 s each time (bench run 12: five times)."""
    mine = key(spec, s)
    if mine in _PREPARED and mine != next(iter(_PREPARED)):
        _PREPARED[mine] = _PREPARED.pop(mine)  # used now: the last to go
    if mine not in _PREPARED:
        for old in list(_PREPARED)[1:-KEEP] if len(_PREPARED) > KEEP else []:
            del _PREPARED[old]
        _PREPARED[mine] = _program(spec, s)
    return _PREPARED[mine]


def _program(spec: Spec, s: LatencySettings) -> Callable[[], Any]:
    """``spec`` exported by ``s.runtime`` and loaded :data:`LOADS` times: one call at batch 1."""
    from ..latency.backends import prepare
    from ..model.builder import build

    x = torch.randn(1, spec.in_channels, spec.resolution, spec.resolution)
    return prepare(build(spec).eval(), s.runtime, x, loads=LOADS)[0]


def keep_start(spec: Spec, s: LatencySettings) -> None:
    """The start exported and loaded first in this process, if nothing is yet (a continued
    search, whose start's latency comes from the cache): the first is the one kept, beside which
    every taken network is confirmed and recorded; a step's parent, exported first, was kept
    in its place."""
    if not _PREPARED:
        with threads_of(s):
            _prepared(spec, s)


def measure_pair(child: Spec, parent: Spec, s: LatencySettings) -> Measured:
    """``child`` timed in the same alternating rounds as ``parent``, as ``latency`` times
    backends side by side: a load that rises or falls slows both alike, so the saving is the
    difference of two medians measured together."""
    from ..latency.measure import percentiles, time_rounds

    load, started = os.getloadavg()[0], time.perf_counter()
    with threads_of(s):
        theirs = _prepared(parent, s)  # first: the search's first parent, the start, is kept
        runners = {"child": _prepared(child, s), "parent": theirs}
        times = time_rounds(runners, s.runs, s.warmup, "cpu")
    median, _, spread = percentiles(times["child"])
    seconds = time.perf_counter() - started
    noise = saving_noise(times["parent"], times["child"])
    return Measured(median, spread, load, seconds, percentiles(times["parent"])[0], noise)


def measure_apart(child: Spec, start: Spec, s: LatencySettings) -> Measured:
    """``child`` timed beside ``start`` as ``latency`` times them afterwards: in a new process,
    the start exported and loaded first, then the child, in the same alternating rounds. The
    figure a search records for a taken network and stops on. In the search's own process, which
    has exported a hundred networks by its last step, a bench's path networks each measured
    beside the start 3 % slower on the median (0.94 to 1.01 of it, each once, timed again in a
    new one, ``bench/adapt_retime.py``), and its result, recorded at 0.950 of the target,
    measured 0.87 to 0.92 of it in ``latency`` afterwards; the start exported first in a process
    and kept timed 5 % faster beside the result than the start exported again after twelve
    others (docs/measurements.md#adapt)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    started = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")  # a fork would copy this process's heap
    try:
        with ProcessPoolExecutor(1, mp_context=spawn) as apart:
            m = apart.submit(_pair_first, child, start, s).result()
    except BrokenProcessPool:
        raise SearchError(
            f"the process timing {child.name} beside the start ended before it had finished "
            "(killed, or out of memory); the same command continues the search from its last step"
        ) from None
    return dataclasses.replace(m, seconds=time.perf_counter() - started)


def _pair_first(child: Spec, start: Spec, s: LatencySettings) -> Measured:
    """In a process of its own (:func:`measure_apart`): ``start`` exported first, ``child``
    beside it."""
    from ..latency.measure import percentiles, time_rounds

    load = os.getloadavg()[0]
    with threads_of(s):
        theirs = _program(start, s)
        times = time_rounds({"child": _program(child, s), "start": theirs}, s.runs, s.warmup, "cpu")
    median, _, spread = percentiles(times["child"])
    noise = saving_noise(times["start"], times["child"])
    return Measured(median, spread, load, 0.0, percentiles(times["start"])[0], noise)


def saving_noise(parent: list[float], child: list[float]) -> float:
    """What a saving measured in alternating rounds must exceed to be more than noise: twice the
    standard error of the median of the per-round differences (1.25 σ / √n, that of a normal
    sample's median, with σ from their interquartile range, σ ≈ IQR / 1.35). Differences of
    the same round cancel a load that drifts over the rounds, as the two medians alone do
    not: on a busy machine a network's own spread can be many times the saving."""
    from ..latency.measure import percentiles

    diffs = [p - c for p, c in zip(parent, child, strict=True)]
    sigma = percentiles(diffs)[2] / 1.35
    return 2 * 1.25 * sigma / math.sqrt(len(diffs))


def on_scale(m: Measured, reference_ms: float) -> Measured:
    """A network timed beside another (its parent, or the start), on the scale of that one's
    recorded latency: its ratio to it in the same rounds times ``reference_ms``. The start is
    timed alone; a chosen network's latency is its ratio to the start, timed again in rounds of
    its own — not a product of the steps' ratios, whose errors would compound, each biased
    towards savings since the step took the proposal that measured best — so a load that drifts
    between steps (it slows both networks of a round alike) moves neither the path nor the
    target check."""
    scale = reference_ms / m.parent_ms
    return dataclasses.replace(
        m,
        median_ms=m.median_ms * scale,
        spread_ms=m.spread_ms * scale,
        parent_ms=reference_ms,
        noise_ms=m.noise_ms * scale,
    )


def key(spec: Spec, s: LatencySettings, parent: Spec | None = None, what: str = "") -> str:
    """The cache key: the resolved document (and its parent's, when timed beside it), the
    settings, and ``what`` was timed when not the whole networks once ("rows": only the rows
    that differ; "confirmed": a chosen network timed again beside the start; "apart": a taken
    one timed for the path, in a process of its own), hashed."""
    parent_doc = parent.document if parent is not None else None
    found = {"spec": spec.document, "parent": parent_doc, "settings": asdict(s)}
    text = json.dumps({**found, **({"what": what} if what else {})}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Cache:
    """``latency.json`` of an adapt folder: measured latencies by :func:`key`."""

    FIX = "delete it, and the latencies are measured again"

    def __init__(self, folder: Path) -> None:
        self.path = folder / CACHE
        self.entries: dict[str, Measured] = {}
        self.writable = False  # written as it grows once the folder is the search's

    def read(self) -> Cache:
        """The entries on disk, every one checked (a damaged file refused, naming it)."""
        if not self.path.exists():
            return self
        raw = read_regular(self.path, MAX_CACHE_BYTES, what="adapt's latencies (latency.json)")
        try:
            found = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise UserError(f"damaged: not JSON ({e}); {self.FIX}", file=str(self.path)) from None
        if not isinstance(found, dict) or not all(_entry(v) for v in found.values()):
            raise UserError(
                f"damaged: not latencies as adapt writes them (finite, positive milliseconds); "
                f"{self.FIX}",
                file=str(self.path),
            )
        self.entries = {k: Measured(**v) for k, v in found.items()}
        return self

    def write(self) -> None:
        with writing(self.path) as tmp:
            tmp.write_text(json.dumps({k: asdict(v) for k, v in self.entries.items()}, indent=1))


def _entry(value: Any) -> bool:
    names = [f.name for f in dataclasses.fields(Measured)]
    if not isinstance(value, dict) or set(value) != set(names):
        return False
    numbers = [value[k] for k in names]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        return False
    return all(math.isfinite(v) and 0 <= v < 1e9 for v in numbers) and numbers[0] > 0
