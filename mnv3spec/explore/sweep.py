"""``sweep``: the cartesian product of ``--grid`` values over specs, each variant compiled,
counted, timed and (unless ``--no-train``) trained, then one table and one Pareto plot.

Each variant's training is an ordinary training run, configured by its
:class:`~mnv3spec.train.config.TrainConfig` and run in a process of its own (:mod:`.launch`)
into ``OUT/NAME/runs/<variant>``, so a sweep resumes the way a run does: a finished run folder
(every epoch in metrics.csv) is read, not redone; an interrupted one is resumed. Latencies are
kept in ``measured.json`` and reused while the latency settings are the same.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..files import check_ours, check_output, check_output_folder, claim_folder, locked_folder
from ..latency import measure, predict
from ..model.builder import build
from ..model.summary import summarize
from ..services.run_folder import RunFolder, check_run_name
from ..spec.load import load_spec
from ..spec.read import resolve_path
from ..spec.resolve import Spec
from ..train.config import TrainConfig
from . import sweep_folder, sweep_report
from .grid import check_count, check_grids, parse_grid, spec_names, variants
from .launch import cluster_session, local_gpus, run_trainings
from .results import LatencySettings, Result, Sweep, SweepSettings
from .training import Training

Compiled = list[tuple[Result, Spec | None]]  # each variant's result, and its spec if it compiles


def sweep(s: SweepSettings, say: Callable[[str], None] = print, *, dry_run: bool = False) -> Sweep:
    """Run (or continue) the sweep ``s`` in ``s.out/s.name``, writing its table and plot. With
    ``dry_run`` nothing runs and nothing is written: the result holds the trainings it would
    start. Everything the settings decide is checked before the folder is touched."""
    grids = [parse_grid(t) for t in s.grids]
    check_count(list(s.specs), grids, s.max_variants)
    check_grids([load_spec(spec, **s.fixed) for spec in s.specs], grids)
    chosen = variants(list(s.specs), s.fixed, grids)
    name = s.name or "-".join(spec_names(list(s.specs)))
    folder = check_output_folder(Path(s.out), field="out") / check_run_name(name)
    timing = _latency_settings(s)
    lookup = _lookup(s.predict)
    paths = [str(resolve_path(spec).resolve()) for spec in s.specs]
    mine = sweep_folder.settings(paths, list(s.grids), s.fixed, s.training)
    if folder.is_dir():  # refused before any work if it is not this sweep's folder
        _check_folder(folder, mine)
    results = [Result(v) for v in chosen]
    compiled = [(r, _analyse(r)) for r in results]
    trained = s.training is not None
    jobs = _trainings(compiled, folder / "runs", s.training) if trained else []
    result = Sweep(folder, results, [g.key for g in grids], timing, trained, jobs)
    if dry_run:
        return result
    with cluster_session(s.cluster if jobs else None, Path(s.out)):  # checked before any work
        _run(result, mine, compiled, lookup, s, say)
    return result


def _run(result: Sweep, mine: dict, compiled: Compiled, lookup, s: SweepSettings, say) -> None:
    """Claim the sweep's folder, time and train the variants, and write the table and plot."""
    folder = result.folder
    created = claim_folder(folder, sweep_folder.SETTINGS, "sweep folder", field="name")
    try:
        with locked_folder(folder, "sweep"):
            sweep_folder.write_settings(folder, _check_folder(folder, mine))
            created = False  # the folder is a sweep's now: kept whatever happens next
            _measure_all(compiled, folder, result.settings, lookup, say)
            if result.trained:
                gpus = local_gpus(s.training.get("device", "auto"))
                _train_all(compiled, folder, result.trainings, gpus, s.cluster, say)
            sweep_report.write(result)
    finally:
        if created:  # refused before anything was written: leave no folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def _latency_settings(s: SweepSettings) -> LatencySettings:
    """How the variants are timed, refused before any work if this machine cannot."""
    settings = LatencySettings(
        tuple(s.devices or measure.default_devices()),
        tuple(s.backends),
        s.latency_batch,
        s.latency_runs,
        s.latency_warmup,
        torch.get_num_threads(),
        str(Path(s.predict).resolve()) if s.predict else None,
    )
    _check_latency(settings)
    return settings


def _lookup(table: str | None) -> predict.Table | None:
    """The look-up table latency is predicted from (only read), if one is given."""
    if not table:
        return None
    lookup = predict.read_table(table, field="predict", must_exist=True)
    if not lookup.rows:
        raise UserError("holds no rows; time rows into it first (latency --table)", file=table)
    return lookup


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


def _time(spec: Spec, s: LatencySettings, table: predict.Table | None) -> sweep_folder.Measured:
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
        return sweep_folder.Measured(key, medians, spreads)
    rows = measure.measure(
        [spec.document],
        widths=(spec.width,),
        devices=list(s.devices),
        backends=s.backends,
        batch=s.batch,
        runs=s.runs,
        warmup=s.warmup,
    )
    return sweep_folder.Measured(
        key,
        {f"{r.device} {r.backend}": r.median_ms for r in rows},
        {f"{r.device} {r.backend}": r.iqr_ms for r in rows},
    )


def _check_latency(s: LatencySettings) -> None:
    """The devices and backends, refused before any work if this machine cannot time them."""
    measure.check_settings(list(s.devices), s.backends, (), s.batch, s.runs, s.warmup)
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
    check_ours(folder, sweep_folder.SETTINGS, "sweep folder", field="name")
    agreed = sweep_folder.check_same(folder, mine)
    for file, kind in (("sweep.csv", "csv"), ("pareto.png", "image")):
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
    sweep_folder.read_measured(folder)
    return agreed


def _measure_all(compiled, folder: Path, s: LatencySettings, lookup, say) -> None:
    """Latency of each variant that compiles, reused from measured.json when the settings match;
    then the warnings about the timings (a busy machine, a wide spread), once."""
    cache = sweep_folder.read_measured(folder)
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
        sweep_folder.write_measured(folder, cache)
        timed = True
    if timed and lookup is None:
        pairs = [(r.latency_ms[c], r.iqr_ms.get(c)) for r, _ in todo for c in r.latency_ms]
        for line in measure.timing_warnings(pairs):
            say(line)


def _trainings(compiled: Compiled, runs: Path, training: dict) -> list[Training]:
    """The trainings to run: each variant that compiles and has not finished, as a new run of
    its configuration, or the continuation of its interrupted run."""
    jobs = []
    for r, spec in compiled:
        folder = RunFolder(runs / r.variant.id)
        if spec is None or folder.finished():
            continue
        config = None
        if not folder.holds_run():
            v = r.variant
            config = TrainConfig(v.spec, v.overrides, **training, out=str(runs), name=v.id)
            config = config.with_batch()
        jobs.append(Training(r.variant, folder, config))
    return jobs


def _train_all(
    compiled: Compiled, folder: Path, jobs: list[Training], gpus: int, cluster, say
) -> None:
    done = sum(spec is not None for _, spec in compiled) - len(jobs)
    if done:
        say(f"{done} variants already trained (kept)")
    errors = run_trainings(jobs, folder / "logs", gpus, say, cluster)
    for r, spec in compiled:
        if spec is None:
            continue
        try:
            r.read_best_epoch(RunFolder(folder / "runs" / r.variant.id))
        except UserError as e:
            r.fail("run folder", e)
        if r.variant.id in errors:
            r.train_exit, r.error = errors[r.variant.id]
