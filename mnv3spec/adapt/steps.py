"""The services the search and its runner call, bound to one adapt folder (:class:`Context`):
specs of a set of edits, latency through the cache, the start's training, the proposals'
fine-tunes, the result's variant file, and the retraining of the result beside the baselines."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.datasets import native_resolution
from ..explore.training import ClusterSettings
from ..services.run_folder import RunFolder
from ..spec.edits import from_rows
from ..spec.load import load_spec
from ..spec.resolve import Spec
from ..train.config import TrainConfig
from . import baselines, report
from . import folder as files
from .moves import Edits, Move, moves
from .proposal import Proposal, Tuned
from .rows import RowTimer
from .timing import (
    Cache,
    LatencySettings,
    Measured,
    key,
    measure_apart,
    measure_pair,
    measure_spec,
    on_scale,
)
from .trace import TraceRow
from .trainings import Job, finetune_changes, held_out, run_jobs, slug, top1, try_jobs

SEARCH_ONLY = ("init", "holdout")  # train flags a retrain from scratch drops
FINETUNE_LR = 0.1  # a fine-tune's learning rate, as a fraction of the training's
# A record's key in the cache: a record is timed in a process of its own, which an earlier
# version's ("recorded", timed in the search's process) was not; that one is timed anew.
RECORDED = "apart"


@dataclass(frozen=True)
class Context:
    s: files.AdaptSettings
    folder: Path
    timing: LatencySettings
    cache: Cache
    base: Spec  # the input spec as trained (no --set, no --resolution)
    say: Callable[[str], None]
    rows: RowTimer
    cluster: ClusterSettings | None = None

    @property
    def resolution(self) -> int:
        return self.s.resolution or self.base.resolution

    def trained(self, edits: Edits) -> Spec:
        return load_spec(self.s.spec, from_rows(edits))

    def deployed(self, edits: Edits, **knobs: Any) -> Spec:
        """The network as timed: the edits, then --set, then --resolution (or a baseline's)."""
        settings = {**self.s.overrides, "resolution": self.resolution, **knobs}
        return load_spec(self.s.spec, from_rows(edits), **settings)

    def moves_of(self, spec: Spec) -> list[Move]:
        deployed = spec.derive(**self.s.overrides, resolution=self.resolution)
        return moves(spec, self.s.moves, deployed)

    def latency(self, edits: Edits) -> Measured:
        return self.measured(self.deployed(edits))

    def saving(self, edits: Edits, parent: Edits) -> float:
        """The ms ``edits`` save beside ``parent``, predicted from the rows that differ (kept in
        the cache, so a resumed step proposes what it proposed before)."""
        child, theirs = self.deployed(edits), self.deployed(parent)
        k = key(child, self.timing, theirs, what="rows")
        if k not in self.cache.entries:
            self._keep(k, self.rows.saving(child, theirs))
        m = self.cache.entries[k]
        return m.parent_ms - m.median_ms

    def confirmed(self, edits: Edits, **knobs: Any) -> Measured:
        """The latency of ``edits`` (a baseline's ``knobs``) timed beside the start, in rounds of
        their own, in this process: the second figure a proposal must pass to be taken (beside
        its parent's own, :func:`~.choice.accept`), and a baseline's while its knob is sought,
        so all are ratios to the same start."""
        return self._beside_start("confirmed", measure_pair, edits, knobs)

    def recorded(self, edits: Edits, **knobs: Any) -> Measured:
        """The latency of a taken network on the path (or a found baseline, ``knobs``): timed
        once more beside the start, the two exported anew in a process of their own, as
        ``latency`` times them (:func:`~.timing.measure_apart`,
        :attr:`~.proposal.Search.record`)."""
        return self._beside_start(RECORDED, measure_apart, edits, knobs)

    def _beside_start(
        self, what: str, measure: Callable[[Spec, Spec, LatencySettings], Measured],
        edits: Edits, knobs: dict[str, Any],
    ) -> Measured:  # fmt: skip
        """``edits`` (``knobs``) timed beside the start by ``measure``, kept as ``what``."""
        child, start = self.deployed(edits, **knobs), self.deployed({})
        k = key(child, self.timing, start, what=what)
        if k not in self.cache.entries:
            self._keep(k, measure(child, start, self.timing))
        return self.cache.entries[k]

    def paired(self, edits: Edits, parent: Edits) -> Measured:
        """The latency of ``edits`` timed beside its ``parent`` (in the same rounds)."""
        return self.measured(self.deployed(edits), self.deployed(parent))

    def measured(self, spec: Spec, parent: Spec | None = None) -> Measured:
        """``spec``'s latency (beside ``parent``'s) from the cache, or measured now (and kept)."""
        k = key(spec, self.timing, parent)
        if k not in self.cache.entries:
            pair = parent is not None
            self._keep(
                k,
                measure_pair(spec, parent, self.timing)
                if pair
                else measure_spec(spec, self.timing),
            )
        return self.cache.entries[k]

    def _keep(self, k: str, m: Measured) -> None:
        self.cache.entries[k] = m
        if self.cache.writable:
            self.cache.write()

    def flags(self, *dropped: str) -> dict[str, Any]:
        return {k: v for k, v in self.s.training.items() if k not in dropped}


class StepBar:
    """A progress bar per step, over the moves timed; opened by the first move, closed by the
    step's end. Numbered on from ``done``, the steps a continued search had taken."""

    def __init__(self, done: int = 0) -> None:
        self.bar = None
        self.step = done

    def __call__(self) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.step += 1
            self.bar = tqdm(desc=f"step {self.step}: moves timed", unit="move", file=sys.stderr)
        self.bar.update(1)

    def write(self, line: str) -> None:
        """``line`` on a line of its own, above the step's bar where one is open."""
        if self.bar is None:
            print(line, file=sys.stderr, flush=True)
        else:
            self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def train_start(ctx: Context, latency: Measured) -> TraceRow:
    """Step 0: the input spec trained with the train flags, scored on the held-out images."""
    job = Job("start", ctx.s.spec, {}, {"holdout": ctx.s.holdout})
    (run,) = run_jobs([job], ctx.folder, ctx.flags("holdout"), ctx.say, ctx.cluster)
    m, (top1_, loss) = latency, held_out(run)
    return TraceRow(0, "start", True, m.median_ms, m.spread_ms, m.load, top1_, 0.0, 0.0, 0.0,
                    "runs/start", {}, holdout_loss=loss)  # fmt: skip


def finetune_lr(s: files.AdaptSettings) -> float:
    """A fine-tune's learning rate: ``--finetune-lr``, or :data:`FINETUNE_LR` × the training's.
    At the seed recipe's 0.1, 15 steps of the bench's parent scored 77.0-80.0 % over 4 seeds
    (the parent itself 77.7 %); at 0.01, 82.0-82.5 %: the edits' costs drowned in the former."""
    if s.finetune_lr is not None:
        return s.finetune_lr
    return FINETUNE_LR * TrainConfig(s.spec, **s.training).resolved_recipe().lr


def _finetunes(ctx: Context, parent: TraceRow) -> dict[str, Any]:
    weights = ctx.folder / parent.run / RunFolder.BEST
    seed = ctx.s.training.get("seed") or 0
    return finetune_changes(weights, ctx.s.finetune_steps, ctx.s.holdout, seed, finetune_lr(ctx.s))


def _scored(ctx: Context, jobs: list[Job], say: Callable[[str], None]) -> list[Tuned]:
    failed = try_jobs(jobs, ctx.folder, ctx.flags(*SEARCH_ONLY), say, ctx.cluster)
    return [_tuned(ctx, j.id, failed) for j in jobs]


def _tuned(ctx: Context, job: str, failed) -> Tuned:
    run = f"runs/{job}"
    if job in failed:
        return Tuned(None, run)
    top1_, loss = held_out(RunFolder(ctx.folder / run))
    return Tuned(top1_, run, loss)


def _variant(ctx: Context, name: str, edits: Edits, words: str) -> Path:
    path = ctx.folder / "specs" / f"{name}.yaml"
    return files.write_variant(path, ctx.s.spec, f"{ctx.base.name}_{name}", edits, words)


def finetune(ctx: Context, bar: StepBar):
    """The fine-tune of a step's proposals, from the parent's weights, numbered from ``first``,
    as one batch of trainings; a proposal of no move is the parent itself (``sNN-parent``, the
    reference of their ΔTop-1). A proposal whose training failed scores None (the search
    passes it over and goes on)."""

    def run(step: int, proposals: list[Proposal], parent: TraceRow, first: int = 0) -> list[Tuned]:
        changes, jobs, number = _finetunes(ctx, parent), [], first
        for p in proposals:
            if p.move is None:
                name, words = f"s{step:02d}-parent", "the parent, fine-tuned"
            else:
                name, words = f"s{step:02d}-{number:02d}-{slug(p.edit)}", p.edit
                number += 1
            spec = _variant(ctx, name, p.edits, f"adapt step {step}: {words}")
            jobs.append(Job(name, str(spec), {}, changes))
        return _scored(ctx, jobs, bar.write)

    return run


def inherited(spec: Spec, data: Any, cfg: TrainConfig, parent: str | Path) -> Any:
    """The held-out figures (:class:`~mnv3spec.services.evaluate.EvalResult`) of ``spec`` with
    the weights of the checkpoint ``parent`` narrowed into it, before any fine-tune: on ``data``'s
    held-out images, as ``cfg`` fits the network to them."""
    import torch

    from ..data.batches import batches
    from ..model.builder import build
    from ..services.evaluate import evaluate
    from ..train.plan import fit_to_data
    from ..weights.init import init_from

    model = build(fit_to_data(spec, data, cfg))
    init_from(model, str(parent))
    held = batches(data.val_images, data.val_labels, 250, shuffle=False)
    return evaluate(model, held, mean=data.mean, std=data.std, device=torch.device("cpu"))


def screen(ctx: Context):
    """Each proposal's held-out top-1 and loss with its parent's weights narrowed into it
    (:func:`inherited`; a proposal of no move is the parent itself), on the held-out images its
    fine-tune is scored on, evaluated in this process: a second or so each, where a fine-tune
    takes about 80 s on the bench's CPU (:func:`~.search.screened`)."""
    loaded: dict[str, Any] = {}

    def run(proposals: list[Proposal], parent: TraceRow) -> list[Tuned]:
        from ..train.plan import load_data

        changes = _finetunes(ctx, parent)
        cfg = TrainConfig(ctx.s.spec, {}, **{**ctx.flags(*SEARCH_ONLY), **changes})
        if "data" not in loaded:  # the same draw and held-out split as every fine-tune's
            loaded["data"] = load_data(cfg, ctx.base)
        figures = []
        for p in proposals:
            r = inherited(ctx.trained(p.edits), loaded["data"], cfg, changes["init"])
            figures.append(Tuned(r.top1, "", r.loss))
        return figures

    return run


def result_path(ctx: Context) -> Path:
    return ctx.folder / f"{Path(ctx.s.spec).stem}-adapted.yaml"


def write_result(ctx: Context, row: TraceRow, target: float | None) -> Path:
    """The variant file of the edits so far (``base:`` the input spec, ``rows:`` by name)."""
    words = f"{row.latency_ms:.3f} ms on {ctx.timing.runtime} at {ctx.resolution}px"
    aim = f", target {target:.3f} ms" if target is not None else ""
    return files.write_variant(
        result_path(ctx), ctx.s.spec, f"{ctx.base.name}_adapted", row.edits,
        f"adapt: {words} after {row.step} steps{aim}",
    )  # fmt: skip


def retrain(ctx: Context, path: list[TraceRow], result: Path, target: float) -> str:
    """The result and each baseline trained from scratch with the same flags and epochs, once
    per seed, and the start beside them (what the speed-up gave away in accuracy); the table
    (also summary.csv) and the plot. A run is named by what it trains (the result by its step on
    the path, a baseline by its value) and its epochs, so the same folder searched to another
    target, or retrained longer, trains anew what differs."""

    def figure(row: TraceRow) -> Measured:
        return Measured(row.latency_ms, row.spread_ms, row.load)

    entries = [("adapt", f"adapt-s{path[-1].step:02d}", str(result), {}, figure(path[-1]))]
    if ctx.s.baselines:
        entries += _baselines(ctx, path, target)
        entries.append(("start", "start", ctx.s.spec, {}, figure(path[0])))
    changes = [
        {"epochs": ctx.s.retrain_epochs, "seed": seed} for seed in range(ctx.s.retrain_seeds)
    ]
    jobs = [  # seed by seed, so an interrupted comparison has every network of the first seed
        Job(f"final-{stem}-{c['epochs']}ep-seed{c['seed']}", spec, overrides, c)
        for c in changes
        for _, stem, spec, overrides, _ in entries
    ]
    runs = run_jobs(jobs, ctx.folder, ctx.flags(*SEARCH_ONLY), ctx.say, ctx.cluster)
    top1s = [top1(r) for r in runs]
    retrained = [
        report.Retrained(name, m, top1s[i :: len(entries)])
        for i, (name, _, _, _, m) in enumerate(entries)
    ]
    table = report.table(retrained, target)
    report.write_summary(ctx.folder / files.SUMMARY, retrained)
    report.plot(ctx.folder / files.PLOT, path, retrained, target)
    return table


def _baselines(
    ctx: Context, path: list[TraceRow], target: float
) -> list[tuple[str, str, str, dict, Measured]]:
    """Width and resolution, each at the largest value that meets ``target`` (name, run stem,
    spec, overrides, latency): as trained, the resolution scaled from the data's as the deployed
    one is from the spec's."""
    start = path[0].latency_ms
    found = baselines.find(
        ctx.base.width, ctx.resolution,
        lambda k, v: on_scale(ctx.confirmed({}, **{k: v}), start), target,
        lambda k, v: on_scale(ctx.recorded({}, **{k: v}), start),
    )  # fmt: skip
    data = ctx.s.training.get("data", TrainConfig.data)
    native = native_resolution(data) or ctx.base.resolution
    out = []
    for b in found:
        if b.knob == "width":
            name = f"width {b.value:g}"
            out.append((name, slug(name), ctx.s.spec, {"width": b.value}, b.latency))
        else:
            trained = max(8, round(native * b.value / ctx.resolution))
            name = f"resolution {b.value} (trained at {trained})"
            out.append((name, slug(name), ctx.s.spec, {"resolution": trained}, b.latency))
    return out
