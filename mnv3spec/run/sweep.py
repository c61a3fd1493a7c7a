"""``sweep``: the cartesian product of ``--grid`` values over specs, each variant compiled,
counted, timed and (unless ``--no-train``) trained, then one table and one Pareto plot.

Each variant's training IS an ordinary ``train`` command, run as a subprocess into
``OUT/NAME/runs/<variant>``, so a sweep resumes the way a run does: a finished run folder (every
epoch in metrics.csv) is read, not redone; an interrupted one is continued with ``--resume``.
Latencies are kept in ``measured.json`` and reused while the latency settings are the same.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any

import torch

import mnv3spec

from ..errors import SpecError, UserError
from ..files import check_output_folder, writing
from ..model.builder import build
from ..model.summary import summarize
from ..spec.load import Spec, load_spec, parse_assignment, resolve_path
from ..text import text_table
from . import latency, predict
from .run_folder import CONFIG_FILE, read_metrics
from .sweep_plot import plot

MEASURED = "measured.json"
SETTINGS = "sweep.json"


# --- grids and variants ------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    key: str
    values: tuple[Any, ...]


def parse_grid(text: str) -> Grid:
    """``"width=0.5,1.0"`` → ``Grid("width", (0.5, 1.0))``, each value read as --set reads it."""
    key, sep, values = text.partition("=")
    where = f"grid {text}"
    if not sep or not key.strip():
        raise UserError("not KEY=V1,V2,...; for example width=0.5,1.0", field=where)
    parts = [v.strip() for v in values.split(",")]
    if not any(parts):
        raise UserError(f"no values for {key.strip()}; give KEY=V1,V2,...", field=where)
    if not all(parts):
        raise UserError("an empty value between commas", field=where)
    try:
        parsed = tuple(parse_assignment(f"{key}={v}")[1] for v in parts)
    except SpecError as e:
        raise UserError(e.message, field=where) from None
    if len(set(map(repr, parsed))) < len(parsed):
        raise UserError("a value appears twice", field=where)
    return Grid(key.strip(), parsed)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    return "a number" if isinstance(value, (int, float)) else "a word"


def _current(spec: Spec, key: str) -> Any:
    """The value ``key`` has in ``spec`` (a ``$parameter`` resolved); KeyError if it has none."""
    if "." not in key:
        return spec.params[key]
    target: Any = spec.document
    for part in key.split("."):
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, str) and target.startswith("$"):
        return spec.params.get(target[1:], target)
    return target


def check_grids(specs: list[Spec], grids: list[Grid]) -> None:
    """Before any work: every key names a value of every spec, and every value is of its kind
    (a value that is of the right kind but breaks the network makes an error row instead)."""
    keys = [g.key for g in grids]
    for key in {k for k in keys if keys.count(k) > 1}:
        raise UserError(f"{key} has two grids; give its values in one", field=f"grid {key}")
    for spec in specs:
        for g in grids:
            where = f"grid {g.key}={','.join(map(_text, g.values))}"
            try:
                current = _current(spec, g.key)
            except (KeyError, IndexError, TypeError, ValueError):
                try:
                    spec.derive(**{g.key: g.values[0]})
                except SpecError as e:
                    raise UserError(f"{spec.source}: {e.message}", field=where) from None
                continue  # a field the row may take but does not set: the schema judges it
            for v in g.values:
                if _kind(v) != _kind(current):
                    raise UserError(
                        f"'{_text(v)}' is not {_kind(current)}, as {g.key} is in "
                        f"{spec.source} ({_text(current)})",
                        field=where,
                    )


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Variant:
    id: str  # also its run folder's name
    spec: str  # absolute path
    label: str  # the grid values in a few characters, for tables and plots
    overrides: dict[str, Any]  # --set first, then the grid values

    def set_flags(self) -> list[str]:
        return [f for k, v in self.overrides.items() for f in ("--set", f"{k}={_text(v)}")]


def _short(key: str, value: Any) -> str:
    name = "w" if key == "width" else re.sub(r"^layers\.(\d+)\.", r"L\1.", key) + "="
    return f"{name}{_text(value)}"


def variants(specs: list[str], fixed: dict[str, Any], grids: list[Grid]) -> list[Variant]:
    """Every spec × every combination of grid values, in order."""
    out = []
    for source in specs:
        path = str(resolve_path(source).resolve())
        for combo in itertools.product(*(g.values for g in grids)):
            chosen = {g.key: v for g, v in zip(grids, combo, strict=True)}
            parts = [_short(k, v) for k, v in chosen.items()]
            name = "-".join([Path(path).stem, *parts])
            out.append(
                Variant(re.sub(r"[^\w.=+-]", "_", name), path, " ".join(parts), fixed | chosen)
            )
    return out


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
        summary = summarize(build(spec))
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
    return ["train", v.spec, *v.set_flags(), *train_flags, "--out", str(runs), "--name", v.id]


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


# --- outputs -----------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def csv_rows(s: Sweep) -> tuple[list[str], list[dict[str, Any]]]:
    lat = [f"latency_ms {c}" for c in s.settings.columns()]
    header = ["variant", "spec", *s.keys, "params", "macs", *lat, "latency_method"]
    header += ["val_top1", "val_top5", "train_seconds", "run_folder", "error"]
    rows = []
    for r in s.results:
        v = r.variant
        row = {"variant": v.id, "spec": v.spec, **{k: _text(v.overrides[k]) for k in s.keys}}
        row |= {"params": r.params, "macs": r.macs, "latency_method": s.method()}
        row |= {f"latency_ms {c}": r.latency_ms.get(c) for c in s.settings.columns()}
        row |= {"val_top1": r.top1, "val_top5": r.top5, "train_seconds": r.train_seconds}
        rows.append(row | {"run_folder": r.run_folder, "error": r.error})
    return header, rows


def write_csv(s: Sweep, path: Path) -> None:
    header, rows = csv_rows(s)
    with writing(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)


def format_table(s: Sweep) -> str:
    """One line per variant, then how latency was obtained and the errors in full."""
    cols = s.settings.columns()
    header = ("spec", *s.keys, "params M", "MAdds M", *(f"{c} ms" for c in cols))
    if s.trained:
        header += ("top-1 %", "top-5 %", "train s")
    failed = any(r.error for r in s.results)
    header += ("",) if failed else ()
    lines = []
    for r in s.results:
        line = (Path(r.variant.spec).stem, *(_text(r.variant.overrides[k]) for k in s.keys))
        line += (
            _fmt(r.params and r.params / 1e6, 3),
            _fmt(r.macs and r.macs / 1e6, 1),
            *(_fmt(r.latency_ms.get(c)) for c in cols),
        )
        if s.trained:
            line += (_fmt(r.top1), _fmt(r.top5), _fmt(r.train_seconds, 0))
        lines.append((*line, "error: see below" if r.error else "") if failed else line)
    notes = [f"latency: {s.method()}"]
    notes += [f"error: {r.variant.id}: {r.error}" for r in s.results if r.error]
    table = text_table(header, lines, None, set(range(1 + len(s.keys))))
    return "\n".join([*table, *notes])


def finish(s: Sweep, started: float) -> str:
    """Write sweep.csv and pareto.png; the table and where they are, to print."""
    write_csv(s, s.folder / "sweep.csv")
    plot(s, s.folder / "pareto.png")
    seconds = time.perf_counter() - started
    return (
        f"{format_table(s)}\n"
        f"{len(s.results)} variants in {seconds:.0f} s: wrote {s.folder / 'sweep.csv'} and "
        f"{s.folder / 'pareto.png'}"
    )
