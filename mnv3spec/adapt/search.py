"""The NetAdapt loop over spec edits, with its two services handed in — the latency of a set of
edits, and the fine-tune that scores proposals — so the search itself is tested with fakes.

Each step: for every move (:mod:`.moves`), the smallest shrink, in multiples of the divisor,
whose latency, timed in the same rounds as the parent's, is at least ``delta`` below it (1, 2,
4… divisors, then the deepest the row allows); every such proposal fine-tuned from the parent
and scored on held-out training images; the one with the best ΔTop-1 / |ΔLatency| becomes the
parent. Until its latency — the start's, times the ratios measured beside each parent — is at
most the target.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SearchError
from ..spec.load import Spec
from .moves import Edits, Move, same_layers, shrunk
from .timing import Measured
from .trace import TraceRow


@dataclass(frozen=True)
class Proposal:
    move: Move
    edit: str  # what changes, in words
    edits: Edits  # every edit so far, this one included
    latency: Measured  # timed beside its parent, on the parent's scale (:func:`on_parents_scale`)
    saved_ms: float  # the parent's latency less its own


@dataclass(frozen=True)
class Search:
    """What a search needs: the target and step in ms, the spec (as trained) of a set of edits,
    the moves of a spec, the latency of a set of edits timed beside its parent's (the parent's
    median in those rounds in ``parent_ms``), and the fine-tune, which gives each proposal's
    held-out top-1 and run folder."""

    target_ms: float
    delta_ms: float
    spec_of: Callable[[Edits], Spec]
    moves_of: Callable[[Spec], list[Move]]
    latency_of: Callable[[Edits, Edits], Measured]
    finetune: Callable[[int, list[Proposal], TraceRow], list[tuple[float, str]]]


def smallest_step(s: Search, spec: Spec, parent: TraceRow, move: Move) -> Proposal | None:
    """The smallest shrink of ``move`` that lowers the measured latency by ``delta`` at least."""
    multiples, tried = 1, set()
    while True:
        found = shrunk(spec, parent.edits, move, multiples)
        if found is None:
            deepest = _deepest(spec, parent, move, multiples)
            if deepest is None or deepest in tried:
                return None
            multiples, found = deepest, shrunk(spec, parent.edits, move, deepest)
        tried.add(multiples)
        edits, words = found
        if not same_layers(spec, s.spec_of(edits)):
            multiples += 1
            continue
        measured = on_parents_scale(s.latency_of(edits, parent.edits), parent)
        saved = parent.latency_ms - measured.median_ms
        if saved >= s.delta_ms:
            return Proposal(move, words, edits, measured, saved)
        multiples *= 2


def on_parents_scale(m: Measured, parent: TraceRow) -> Measured:
    """A child timed beside its parent, on the scale of the parent's recorded latency: its ratio
    to the parent in the same rounds times that latency. The start is timed alone, and every
    latency after it is chained by such ratios, so a load that drifts between steps (it slows
    both networks of a round alike) does not move the path or the target check."""
    scale = parent.latency_ms / m.parent_ms
    return dataclasses.replace(
        m, median_ms=m.median_ms * scale, spread_ms=m.spread_ms * scale, parent_ms=parent.latency_ms
    )


def _deepest(spec: Spec, parent: TraceRow, move: Move, above: int) -> int | None:
    """The most multiples below ``above`` the row still allows (None: not one)."""
    for multiples in range(above - 1, 0, -1):
        if shrunk(spec, parent.edits, move, multiples) is not None:
            return multiples
    return None


def propose(s: Search, parent: TraceRow, progress: Callable[[], None]) -> list[Proposal]:
    spec = s.spec_of(parent.edits)
    found = []
    for move in s.moves_of(spec):
        proposal = smallest_step(s, spec, parent, move)
        if proposal is not None:
            found.append(proposal)
        progress()
    return found


def choose(parent: TraceRow, proposals: list[Proposal], scores: list[float]) -> int:
    """The proposal with the best ΔTop-1 / |ΔLatency| (ties: the one that saves more)."""
    gains = [_score(parent, p, top1) for p, top1 in zip(proposals, scores, strict=True)]
    saved = [p.saved_ms for p in proposals]
    return max(range(len(proposals)), key=lambda i: (gains[i], saved[i]))


def _score(parent: TraceRow, p: Proposal, top1: float) -> float:
    return (top1 - parent.holdout_top1) / p.saved_ms


def step_rows(step: int, parent: TraceRow, proposals, results, chosen: int) -> list[TraceRow]:
    """The trace's rows of one step: every proposal, ``chosen`` marked."""
    rows = []
    for i, (p, (top1, run)) in enumerate(zip(proposals, results, strict=True)):
        m, saved = p.latency, p.saved_ms
        d_top1 = top1 - parent.holdout_top1
        figures = (m.median_ms, m.spread_ms, m.load, top1, d_top1, saved, d_top1 / saved)
        rows.append(TraceRow(step, p.edit, i == chosen, *figures, run, p.edits))
    return rows


def run_step(s: Search, parent: TraceRow, progress: Callable[[], None]) -> list[TraceRow]:
    """One step after ``parent``: its rows, or SearchError when no move saves ``delta``."""
    proposals = propose(s, parent, progress)
    if not proposals:
        raise SearchError(
            f"no proposal lowers the latency by {s.delta_ms:.3g} ms any more: the search stopped "
            f"at {parent.latency_ms:.3g} ms, above the target {s.target_ms:.3g} ms (a smaller "
            "step, or the moves kernel and se, may reach further); the best reached is kept"
        )
    results = s.finetune(parent.step + 1, proposals, parent)
    chosen = choose(parent, proposals, [top1 for top1, _ in results])
    return step_rows(parent.step + 1, parent, proposals, results, chosen)


def search(
    s: Search,
    parent: TraceRow,
    on_step: Callable[[list[TraceRow]], None],
    progress: Callable[[], None] = lambda: None,
) -> TraceRow:
    """Steps from ``parent`` until the latency is at most the target; each step's rows handed
    to ``on_step`` (the trace) before the next begins. Returns the last chosen row."""
    while parent.latency_ms > s.target_ms:
        rows = run_step(s, parent, progress)
        on_step(rows)
        parent = next(r for r in rows if r.chosen)
    return parent
