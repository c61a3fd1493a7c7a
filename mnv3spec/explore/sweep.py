"""``sweep``: the cartesian product of ``--grid`` values over specs, each variant compiled,
counted, timed and (unless ``--no-train``) trained, then one table and one Pareto plot.

Each variant's training IS an ordinary ``train`` command, run as a subprocess into
``OUT/NAME/runs/<variant>``, so a sweep resumes the way a run does: a finished run folder (every
epoch in metrics.csv) is read, not redone; an interrupted one is continued with ``--resume``.
Latencies are kept in ``measured.json`` and reused while the latency settings are the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any

import torch

import mnv3spec

from ..deploy import latency, predict
from ..errors import UserError
from ..files import (
    check_ours,
    check_output,
    check_output_folder,
    claim_folder,
    locked_folder,
)
from ..model.builder import build
from ..model.summary import summarize
from ..spec.load import Spec, load_spec, resolve_path
from ..train.run_folder import CONFIG_FILE, check_run_name, read_metrics
from . import MAX_VARIANTS, state, sweep_report
from .grid import (
    Variant,
    check_count,
    check_grids,
    parse_grid,
    spec_names,
    text,
    variants,
)

# --- one result per variant --------------------------------------------------------------------


@dataclass
class Result:
    variant: Variant
    params: int | None = None
    macs: int | None = None
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # "cpu eager" → median
    iqr_ms: dict[str, float | None] = field(default_factory=dict)  # and its spread
    top1: float | None = None
    top5: float | None = None
    train_seconds: float | None = None
    run_folder: str = ""
    error: str = ""
    train_exit: int = 0  # the exit status of its train command (3: diverged)

    def fail(self, what: str, e: Exception) -> None:
        self.error = "; ".join(filter(None, [self.error, f"{what}: {e}"]))


@dataclass(frozen=True)
class LatencySettings:
    devices: tuple[str, ...]
    backends: tuple[str, ...]
    batch: int
    runs: int
    warmup: int
    threads: int
    predict: str | None  # a look-up table, or None: measured

    def columns(self) -> list[str]:
        return [f"{d} {b}" for d in self.devices for b in self.backends]

    def method(self) -> str:
        if self.predict:
            return f"{predict.METHOD}; table {self.predict}"
        return (
            f"measured as latency does: median of {self.runs} runs after {self.warmup} warm-up, "
            f"batch {self.batch}, {self.threads} CPU threads"
        )


def _analyse(result: Result) -> Spec | None:
    v = result.variant
    try:
        spec = load_spec(v.spec, **v.overrides)
        summary = summarize(build(spec, device="meta"))
    except UserError as e:
        result.fail("does not compile", e)
        return None
    result.params, result.macs = summary.params, summary.macs
    return spec


def _time(spec: Spec, s: LatencySettings, table: predict.Table | None) -> state.Measured:
    """Latency (median and IQR per column) of one variant: measured, or predicted from the
    table (which is only read)."""
    key = json.dumps(asdict(s), sort_keys=True)
    if table is not None:
        model = build(spec, device="meta")
        medians, spreads = {}, {}
        for device in s.devices:
            for backend in s.backends:
                column = f"{device} {backend}"
                medians[column], spreads[column] = predict.predict(
                    model, table, device=device, backend=backend, batch=s.batch
                )
        return state.Measured(key, medians, spreads)
    rows = latency.measure(
        [spec.document],
        widths=(spec.width,),
        devices=list(s.devices),
        backends=s.backends,
        batch=s.batch,
        runs=s.runs,
        warmup=s.warmup,
    )
    return state.Measured(
        key,
        {f"{r.device} {r.backend}": r.median_ms for r in rows},
        {f"{r.device} {r.backend}": r.iqr_ms for r in rows},
    )


# --- training: one ordinary train command per variant ------------------------------------------


def train_command(v: Variant, runs: Path, train_flags: list[str]) -> list[str]:
    """The ``train`` arguments of ``v``: a new run, or ``--resume`` of an interrupted one."""
    run_dir = runs / v.id
    if (run_dir / CONFIG_FILE).is_file():
        return ["train", "--resume", str(run_dir)]
    sets = [f for k, value in v.overrides.items() for f in ("--set", f"{k}={text(value)}")]
    return ["train", v.spec, *sets, *train_flags, "--out", str(runs), "--name", v.id]


def finished(run_dir: Path) -> bool:
    """Every epoch the run was started with is in its metrics.csv."""
    try:
        epochs = int(json.loads((run_dir / CONFIG_FILE).read_text())["epochs"])
        return len(read_metrics(run_dir / "metrics.csv")) >= epochs
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return False  # train --resume says what is wrong with it


def read_run(result: Result, run_dir: Path) -> None:
    """Best val top-1, the top-5 of that epoch, and the seconds of all epochs."""
    rows = read_metrics(run_dir / "metrics.csv")
    if rows:
        best = max(rows, key=lambda r: r["val_top1"])
        result.top1, result.top5 = best["val_top1"], best["val_top5"]
        result.train_seconds = sum(r["seconds"] for r in rows)


def _environment(gpu: int | None, parallel: int) -> dict[str, str]:
    env = dict(os.environ)
    package_root = str(Path(mnv3spec.__file__).resolve().parent.parent)  # this very package
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if "OMP_NUM_THREADS" not in env:  # one run alone uses every core; parallel runs share them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


DIVERGED = 3  # train's exit status when the loss became NaN or infinite (TrainingError)
INTERRUPTED = (130, -signal.SIGINT)  # train stopped by Ctrl-C (its own handler, or the signal)


def run_trainings(
    jobs: list[tuple[Variant, list[str]]], logs: Path, gpus: int, say: Callable[[str], None]
) -> dict[str, tuple[int, str]]:
    """Run the train commands, one at a time, or one per GPU in parallel when ``gpus`` > 1;
    each logs to ``logs/<variant>.log``. Returns (exit status, error) by variant id. Ctrl-C (in
    this process or in a train command) stops them all, each run left resumable, and raises
    KeyboardInterrupt: no further variant starts."""
    logs.mkdir(parents=True, exist_ok=True)
    parallel = max(1, min(gpus, len(jobs)))
    free: Queue[int | None] = Queue()
    for gpu in range(parallel) if gpus > 1 else [None]:
        free.put(gpu)
    errors: dict[str, tuple[int, str]] = {}
    stop = threading.Event()
    running: set[subprocess.Popen] = set()

    def one(i: int, v: Variant, args: list[str]) -> None:
        gpu = free.get()
        try:
            if stop.is_set():
                return
            on = f" on GPU {gpu}" if gpu is not None else ""
            say(f"[{i}/{len(jobs)}] {'resuming' if '--resume' in args else 'training'} {v.id}{on}")
            code, error = _train_one(
                args, logs / f"{v.id}.log", _environment(gpu, parallel), running
            )
        finally:
            free.put(gpu)
        if code in INTERRUPTED:
            stop.set()
        elif code:
            errors[v.id] = (code, error)
            say(f"[{i}/{len(jobs)}] {v.id} failed: {error}")

    pool = ThreadPoolExecutor(parallel)
    try:
        for fut in [pool.submit(one, i, v, a) for i, (v, a) in enumerate(jobs, 1)]:
            fut.result()
    except KeyboardInterrupt:
        stop.set()
        for proc in list(running):  # Ctrl-C reached us alone (kill -INT): pass it on
            proc.send_signal(signal.SIGINT)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if stop.is_set():
        raise KeyboardInterrupt
    return errors


def _train_one(args: list[str], log: Path, env: dict, running: set) -> tuple[int, str]:
    """Run one train command appending to ``log``; its exit status and, when it failed, the
    error it printed (this run's own last ``error:`` line, else its last line)."""
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(['python', '-m', 'mnv3spec.cli', *args])}\n")
        f.flush()
        start = f.tell()
        cmd = [sys.executable, "-m", "mnv3spec.cli", *args]
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        running.add(proc)
        try:
            code = proc.wait()
        finally:
            running.discard(proc)
    if code == 0:
        return 0, ""
    with open(log, "rb") as f:
        f.seek(start)
        lines = f.read().decode(errors="replace").strip().splitlines()
    said = [line for line in lines if line.startswith("error: ")] or lines[-1:]
    last = said[-1].removeprefix("error: ") if said else "(no output)"
    return code, f"train exited with {code}: {last} (log {log})"


# --- the sweep ---------------------------------------------------------------------------------


@dataclass
class Sweep:
    folder: Path
    results: list[Result]
    keys: list[str]
    settings: LatencySettings
    trained: bool

    def method(self) -> str:
        return self.settings.method()

    def exit_code(self) -> int:
        """0 when some variant succeeded and none diverged; 3 (as train) when one diverged;
        2 when none succeeded for another reason (bad data, bad settings)."""
        if any(r.train_exit == DIVERGED for r in self.results):
            return DIVERGED
        return 0 if any(not r.error for r in self.results) else 2


def sweep(
    specs: list[str],
    grid_texts: list[str],
    *,
    fixed: dict[str, Any],
    out: str = "sweeps",
    name: str | None = None,
    train: bool = True,
    train_flags: list[str] | None = None,
    print_commands: bool = False,
    devices: list[str] | None = None,
    backends: tuple[str, ...] = ("eager",),
    batch: int = 1,
    runs: int = 50,
    warmup: int = 10,
    table: str | None = None,
    max_variants: int = MAX_VARIANTS,
    say: Callable[[str], None] = print,
) -> Sweep | None:
    """Run (or continue) the sweep in ``out/name``, writing its table and plot; None with
    ``print_commands`` (printed, nothing written). Everything the command line decides is
    checked before the folder is touched."""
    grids = [parse_grid(t) for t in grid_texts]
    check_count(specs, grids, max_variants)
    loaded = [load_spec(s, **fixed) for s in specs]
    check_grids(loaded, grids)
    chosen = variants(specs, fixed, grids)
    folder = check_output_folder(Path(out), field="out") / check_run_name(
        name or "-".join(spec_names(specs))
    )
    train_flags = train_flags or []
    settings = LatencySettings(
        tuple(devices or latency.default_devices()),
        tuple(backends),
        batch,
        runs,
        warmup,
        torch.get_num_threads(),
        str(Path(table).resolve()) if table else None,
    )
    _check_latency(settings)
    lookup = predict.read_table(table, field="predict", must_exist=True) if table else None
    if lookup is not None and not lookup.rows:
        raise UserError("holds no rows; time rows into it first (latency --table)", file=table)
    paths = [str(resolve_path(s).resolve()) for s in specs]
    mine = state.settings(paths, grid_texts, fixed, train_flags if train else None)
    if folder.is_dir():  # refused before any work if it is not this sweep's folder
        _check_folder(folder, mine)

    results = [Result(v) for v in chosen]
    compiled = [(r, _analyse(r)) for r in results]
    if print_commands:
        _print_commands(compiled, folder / "runs", train_flags, say)
        return None
    created = claim_folder(folder, state.SETTINGS, "sweep folder", field="name")
    try:
        with locked_folder(folder, "sweep"):
            state.write_settings(folder, _check_folder(folder, mine))
            created = False  # the folder is a sweep's now: kept whatever happens next
            _measure_all(compiled, folder, settings, lookup, say)
            if train:
                _train_all(compiled, folder, train_flags, say)
            result = Sweep(folder, results, [g.key for g in grids], settings, train)
            sweep_report.write(result)
    finally:
        if created:  # refused before anything was written: leave no folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
    return result


def _check_latency(s: LatencySettings) -> None:
    """The devices and backends, refused before any work if this machine cannot time them."""
    latency.check_settings(list(s.devices), s.backends, (), s.batch, s.runs, s.warmup)
    if s.predict:
        bad = [b for b in s.backends if b not in predict.BACKENDS]
        if bad:
            raise UserError(
                f"a look-up table holds rows timed one by one, so only "
                f"{', '.join(predict.BACKENDS)}; {', '.join(bad)} optimises across rows",
                field="backends",
            )


def _check_folder(folder: Path, mine: dict[str, Any]) -> dict[str, Any]:
    """The settings to keep in ``folder``: it must be a sweep folder (or empty) holding this
    very sweep, and the files the sweep writes there, if present, must be its own."""
    check_ours(folder, state.SETTINGS, "sweep folder", field="name")
    agreed = state.check_same(folder, mine)
    for file, kind in (("sweep.csv", "csv"), ("pareto.png", "png")):
        check_output(folder / file, kind, field="name")
    table = folder / "sweep.csv"
    if table.is_file() and table.stat().st_size:
        with open(table, "rb") as f:
            head = f.read(len(sweep_report.CSV_START))
        if head != sweep_report.CSV_START:
            raise UserError(
                "exists and is not a sweep's table; it is not replaced: move it away",
                file=str(table),
            )
    state.read_measured(folder)
    return agreed


def _print_commands(compiled, runs: Path, train_flags: list[str], say) -> None:
    for r, spec in compiled:
        if spec is None:
            say(f"# {r.variant.id}: {r.error}")
        elif finished(runs / r.variant.id):
            say(f"# {r.variant.id}: finished")
        else:
            args = train_command(r.variant, runs, train_flags)
            say(shlex.join(["python", "-m", "mnv3spec.cli", *args]))


def _measure_all(compiled, folder: Path, s: LatencySettings, lookup, say) -> None:
    """Latency of each variant that compiles, reused from measured.json when the settings match;
    then the warnings about the timings (a busy machine, a wide spread), once."""
    cache = state.read_measured(folder)
    key = json.dumps(asdict(s), sort_keys=True)
    todo = [(r, spec) for r, spec in compiled if spec is not None]
    timed = False
    for i, (r, spec) in enumerate(todo, 1):
        kept = cache.get(r.variant.id)
        if kept and kept.settings == key:
            r.latency_ms, r.iqr_ms = kept.latency_ms, kept.iqr_ms
            continue
        say(f"[{i}/{len(todo)}] {'predicting' if lookup else 'timing'} {r.variant.id}")
        try:
            measured = _time(spec, s, lookup)
        except UserError as e:
            r.fail("latency", e)
            continue
        r.latency_ms, r.iqr_ms = measured.latency_ms, measured.iqr_ms
        cache[r.variant.id] = measured
        state.write_measured(folder, cache)
        timed = True
    if timed and lookup is None:
        pairs = [(r.latency_ms[c], r.iqr_ms.get(c)) for r, _ in todo for c in r.latency_ms]
        for line in latency.timing_warnings(pairs):
            say(line)


def _train_all(compiled, folder: Path, train_flags: list[str], say) -> None:
    runs = folder / "runs"
    jobs = [
        (r.variant, train_command(r.variant, runs, train_flags))
        for r, spec in compiled
        if spec is not None and not finished(runs / r.variant.id)
    ]
    done = sum(spec is not None for _, spec in compiled) - len(jobs)
    if done:
        say(f"{done} variants already trained (kept)")
    cuda_run = "--device" not in train_flags or train_flags[train_flags.index("--device") + 1] in (
        "auto",
        "cuda",
    )
    gpus = torch.cuda.device_count() if cuda_run else 0
    errors = run_trainings(jobs, folder / "logs", gpus, say)
    for r, spec in compiled:
        if spec is None:
            continue
        run_dir = runs / r.variant.id
        r.run_folder = str(run_dir)
        try:
            read_run(r, run_dir)
        except UserError as e:
            r.fail("run folder", e)
        if r.variant.id in errors:
            r.train_exit, r.error = errors[r.variant.id]
