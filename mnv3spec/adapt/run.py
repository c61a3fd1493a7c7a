"""``adapt`` from settings to folder, read top to bottom in :func:`adapt`: everything checked and
the start timed before the folder is touched; then, under the folder's lock, the start trained,
the search stepped (each step's rows in trace.csv and the result so far in the variant file),
the result and the baselines retrained from scratch, and the table and plot written. The same
folder searched to a lower target continues its path; to a higher one, its result is the first
network on the path that meets it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import SearchError, UserError
from ..explore.launch import cluster_session
from ..explore.training import ClusterSettings
from ..files import check_ours, check_path, claim_folder, locked_folder
from ..spec.load import load_spec
from ..spec.read import resolve_path
from ..spec.variant import trusted_bases, trusted_folders
from . import folder as files
from . import trace
from .moves import moves
from .proposal import Search
from .rows import RowTimer
from .search import reached, search
from .steps import (
    Context,
    StepBar,
    finetune,
    finetune_lr,
    retrain,
    screen,
    train_start,
    write_result,
)
from .timing import Cache, LatencySettings, check_settings, keep_start

Say = Callable[[str], None]


@dataclass(frozen=True)
class Outcome:
    folder: Path
    result: Path
    table: str


def adapt(
    s: files.AdaptSettings, say: Say = print, cluster: ClusterSettings | None = None
) -> Outcome:
    """Run (or continue) the search ``s`` into ``s.out``, its trainings on this machine or as
    tasks of ``cluster``; SearchError (exit 3) when it stops short of the target, with the best
    reached kept. Its variant files name the input spec as their base, so the input's folder is
    trusted for bases (as ``--allow-base`` trusts one) in every training it starts; the user
    gave that spec."""
    with trusted_bases([*trusted_folders(), Path(s.spec).parent]):
        return _search(s, say, cluster)


def _search(s: files.AdaptSettings, say: Say, cluster: ClusterSettings | None) -> Outcome:
    ctx = _context(s, say, cluster)
    start = ctx.latency({})
    target = _target(s, start.median_ms)
    with cluster_session(cluster, ctx.folder), _claimed(ctx):  # the cluster checked first
        ctx.cache.writable = True
        ctx.cache.write()
        delta = s.step * start.median_ms
        say(_start_line(ctx, start.median_ms, start.spread_ms, target, delta))
        rows = trace.read(ctx.folder)
        first = trace.path(rows)[0] if rows else train_start(ctx, start)
        rows = rows or [first]
        trace.write(ctx.folder, rows)
        path = trace.path(rows)
        bar = StepBar(path[-1].step)
        found = Search(
            target, delta, ctx.trained, ctx.moves_of, ctx.saving, ctx.paired, finetune(ctx, bar),
            ctx.confirmed, path[0].latency_ms, reference=True, score=s.score, screen=screen(ctx),
            at_most=s.finetune_at_most, record=ctx.recorded, floors_last=True, say=bar.write,
        )  # fmt: skip
        last = reached(path, target)
        if last is None:
            keep_start(ctx.deployed({}), ctx.timing)
            try:
                last = search(found, path, _on_step(ctx, rows, bar), bar)
            except SearchError:
                write_result(ctx, trace.path(rows)[-1], target)
                raise
            path = trace.path(rows)  # with the steps just taken
        result = write_result(ctx, last, target)
        table = retrain(ctx, path[: path.index(last) + 1], result, target)
    return Outcome(ctx.folder, result, table)


def _context(s: files.AdaptSettings, say: Say, cluster: ClusterSettings | None) -> Context:
    """The settings checked (runtime installed, spec that can shrink, a folder of ours holding
    this very search, its trace and cache intact); nothing written."""
    timing = LatencySettings(s.backend, s.int8, s.runs, s.warmup, s.threads)
    check_settings(timing)
    base = load_spec(s.spec)
    folder = check_path(s.out, field="out")
    ctx = Context(s, folder, timing, Cache(folder), base, say, RowTimer(timing), cluster)
    if not moves(base, s.moves, ctx.deployed({})):
        raise UserError(
            "no row can shrink: adapt shrinks the exp of bneck rows and the out of their "
            "residual groups, and this spec has no named bneck row with an exp",
            file=s.spec,
        )
    _check_init(s.training.get("init"))
    if {"width", "resolution"} & set(s.overrides):
        raise UserError(
            "sets the width or resolution of the deployed network only, which would then differ "
            "from the one trained; give the resolution as its own setting, and a narrower start "
            "as a variant with params.width",
            field="overrides",
        )
    if folder.exists():
        check_ours(folder, files.SETTINGS, "adapt folder", field="out")
        files.check_same(folder, s)
        trace.read(folder)
        ctx.cache.read()
    return ctx


def _check_init(init: str | None) -> None:
    """A starting checkpoint given as a file, read now: a damaged or foreign one is refused
    before the folder is touched."""
    if init is None or init == "torchvision" or init.startswith("timm:"):
        return
    from ..weights.init import read_state_dict

    read_state_dict(Path(init))


def _target(s: files.AdaptSettings, start_ms: float) -> float:
    target = s.target_ms if s.target_ms is not None else s.target_ratio * start_ms
    if target >= start_ms:
        raise UserError(
            f"nothing to do: the start already runs in {start_ms:.3g} ms on this runtime, "
            f"at or below the target {target:.3g} ms",
            field="target_ms" if s.target_ms is not None else "target_ratio",
        )
    return target


@contextlib.contextmanager
def _claimed(ctx: Context) -> Iterator[None]:
    """The folder, ours and locked for the block; a new one removed if refused before use."""
    created = claim_folder(ctx.folder, files.SETTINGS, "adapt folder", field="out")
    try:
        with locked_folder(ctx.folder, "adapt"):
            files.write_settings(ctx.folder, ctx.s)
            created = False
            yield
    finally:
        if created:
            with contextlib.suppress(OSError):
                ctx.folder.rmdir()


def _on_step(ctx: Context, rows: list[trace.TraceRow], bar: StepBar):
    def on_step(step_rows: list[trace.TraceRow]) -> None:
        bar.close()
        rows.extend(step_rows)
        trace.write(ctx.folder, rows)
        chosen = next(r for r in step_rows if r.chosen)
        write_result(ctx, chosen, None)
        ctx.say(
            f"step {chosen.step}: {chosen.edit}: {chosen.latency_ms:.3f} ± {chosen.spread_ms:.3f} "
            f"ms, held-out top-1 {chosen.holdout_top1:.2f}%, loss {chosen.holdout_loss:.4f} "
            f"({len(step_rows)} proposals)"
        )

    return on_step


def _start_line(ctx: Context, ms: float, spread: float, target: float, delta: float) -> str:
    spec, threads = ctx.deployed({}), ctx.timing.threads
    return (
        f"adapt {ctx.base.name}: {ms:.3f} ± {spread:.3f} ms on {ctx.timing.runtime} at "
        f"{spec.resolution}px, {threads} thread{'s' * (threads > 1)} → target {target:.3f} ms, "
        f"step ≥ {delta:.3g} ms | "
        f"{ctx.s.finetune_steps} fine-tune steps at lr {finetune_lr(ctx.s):g}, {ctx.s.holdout} "
        f"held-out images | {ctx.folder}"
    )


def spec_path(spec: str) -> str:
    """A spec's file, absolute (a shipped name too), as adapt.json and the variant files hold it."""
    return str(resolve_path(spec).resolve())
