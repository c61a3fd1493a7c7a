"""``sweep``: the cartesian product of ``--grid`` values over specs, each variant compiled,
counted, timed and (unless ``--no-train``) trained, then one table and one Pareto plot.

Each variant's training IS an ordinary ``train`` command, run as a subprocess into
``OUT/NAME/runs/<variant>``, so a sweep resumes the way a run does: a finished run folder (every
epoch in metrics.csv) is read, not redone; an interrupted one is continued with ``--resume``.
Latencies are kept in ``measured.json`` and reused while the latency settings are the same.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
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
from ..files import check_output_folder, writing
from ..model.builder import build
from ..model.summary import summarize
from ..spec.load import Spec, load_spec, resolve_path
from ..train.run_folder import CONFIG_FILE, read_metrics
from .grid import Variant, check_grids, parse_grid, text, variants

MEASURED = "measured.json"
SETTINGS = "sweep.json"


# --- one result per variant --------------------------------------------------------------------


@dataclass
class Result:
    variant: Variant
    params: int | None = None
    macs: int | None = None
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # "cpu eager" → median
    top1: float | None = None
    top5: float | None = None
    train_seconds: float | None = None
    run_folder: str = ""
    error: str = ""

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


def _time(spec: Spec, s: LatencySettings, table: predict.Table | None) -> dict[str, float | None]:
    if table is not None:
        model = build(spec)
        out = {}
        for device in s.devices:
            for backend in s.backends:
                common = {"device": device, "backend": backend, "batch": s.batch}
                predict.time_rows(model, table, runs=s.runs, warmup=s.warmup, whole=False, **common)
                out[f"{device} {backend}"] = predict.predict(model, table, **common)
        return out
    rows = latency.measure(
        [spec.document],
        widths=(spec.width,),
        devices=list(s.devices),
        backends=s.backends,
        batch=s.batch,
        runs=s.runs,
        warmup=s.warmup,
    )
    return {f"{r.device} {r.backend}": r.median_ms for r in rows}


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
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return len(read_metrics(run_dir / "metrics.csv")) >= epochs


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


def run_trainings(
    jobs: list[tuple[Variant, list[str]]], logs: Path, gpus: int, say: Callable[[str], None]
) -> dict[str, str]:
    """Run the train commands, one at a time, or one per GPU in parallel when ``gpus`` > 1;
    each logs to ``logs/<variant>.log``. Returns the errors by variant id."""
    logs.mkdir(parents=True, exist_ok=True)
    parallel = max(1, min(gpus, len(jobs)))
    free: Queue[int | None] = Queue()
    for gpu in range(parallel) if gpus > 1 else [None]:
        free.put(gpu)
    errors: dict[str, str] = {}

    def one(i: int, v: Variant, args: list[str]) -> None:
        gpu = free.get()
        log = logs / f"{v.id}.log"
        on = f" on GPU {gpu}" if gpu is not None else ""
        say(f"[{i}/{len(jobs)}] {'resuming' if '--resume' in args else 'training'} {v.id}{on}")
        try:
            with open(log, "a") as f:
                f.write(f"$ {shlex.join(['python', '-m', 'mnv3spec.cli', *args])}\n")
                f.flush()
                cmd = [sys.executable, "-m", "mnv3spec.cli", *args]
                code = subprocess.run(
                    cmd, stdout=f, stderr=subprocess.STDOUT, env=_environment(gpu, parallel)
                ).returncode
        finally:
            free.put(gpu)
        if code:
            lines = log.read_text(errors="replace").strip().splitlines()
            errors[v.id] = f"train exited with {code}: {lines[-1] if lines else ''} (log {log})"
            say(f"[{i}/{len(jobs)}] {v.id} failed: {errors[v.id]}")

    with ThreadPoolExecutor(parallel) as pool:
        for fut in [pool.submit(one, i, v, a) for i, (v, a) in enumerate(jobs, 1)]:
            fut.result()
    return errors


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
    say: Callable[[str], None] = print,
) -> Sweep | None:
    """Run (or continue) the sweep in ``out/name``; None with ``print_commands`` (printed)."""
    grids = [parse_grid(t) for t in grid_texts]
    loaded = [load_spec(s, **fixed) for s in specs]
    check_grids(loaded, grids)
    folder = check_output_folder(Path(out), field="out") / (
        name or "-".join(Path(s.source).stem for s in loaded)
    )
    chosen = variants(specs, fixed, grids)
    train_flags = train_flags or []
    paths = [str(resolve_path(s).resolve()) for s in specs]
    _check_same_sweep(folder, paths, grid_texts, fixed, train_flags if train else None)
    settings = LatencySettings(
        tuple(devices or latency.default_devices()),
        tuple(backends),
        batch,
        runs,
        warmup,
        torch.get_num_threads(),
        str(Path(table).resolve()) if table else None,
    )
    lookup = predict.read_table(table, field="predict") if table else None
    if lookup is not None and not lookup.rows:
        raise UserError("no such latency table; time rows into one first", file=table)

    results = [Result(v) for v in chosen]
    compiled = [(r, _analyse(r)) for r in results]
    if print_commands:
        _print_commands(compiled, folder / "runs", train_flags, say)
        return None
    _measure_all(compiled, folder, settings, lookup, say)
    if train:
        _train_all(compiled, folder, train_flags, say)
    return Sweep(folder, results, [g.key for g in grids], settings, train)


def _check_same_sweep(
    folder: Path, specs: list[str], grids: list[str], fixed: dict, train_flags: list[str] | None
) -> None:
    """A sweep folder holds one sweep: running it again continues it, anything else is refused."""
    mine = {"specs": specs, "grids": grids, "set": fixed, "train": train_flags}
    path = folder / SETTINGS
    if path.is_file():
        theirs = json.loads(path.read_text())
        # a --no-train rerun of a trained sweep only redraws it
        if train_flags is None and theirs.get("train") is not None:
            mine["train"] = theirs["train"]
        if theirs != mine:
            raise UserError(
                f"{folder} holds another sweep ({SETTINGS} differs: specs, grids, overrides or "
                "train settings); choose another name, or repeat its command to continue it",
                field="name",
            )
    with writing(path) as tmp:
        tmp.write_text(json.dumps(mine, indent=2))


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
    """Latency of each variant that compiles, reused from measured.json when the settings match."""
    path = folder / MEASURED
    cache = json.loads(path.read_text()) if path.is_file() else {}
    key = json.dumps(asdict(s), sort_keys=True)
    todo = [(r, spec) for r, spec in compiled if spec is not None]
    for i, (r, spec) in enumerate(todo, 1):
        kept = cache.get(r.variant.id)
        if kept and kept["settings"] == key:
            r.latency_ms = kept["latency_ms"]
            continue
        say(f"[{i}/{len(todo)}] {'predicting' if lookup else 'timing'} {r.variant.id}")
        try:
            r.latency_ms = _time(spec, s, lookup)
        except UserError as e:
            r.fail("latency", e)
            continue
        cache[r.variant.id] = {"settings": key, "latency_ms": r.latency_ms}
        with writing(path) as tmp:
            tmp.write_text(json.dumps(cache, indent=1))
    if lookup is not None:
        predict.write_table(lookup)  # with the rows timed for these variants


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
        read_run(r, run_dir)
        if r.variant.id in errors:
            r.error = errors[r.variant.id]
