"""The NetAdapt loop over spec edits, with its services handed in (:class:`~.proposal.Search`):
the latency a child saves predicted from its rows, the whole child's latency measured beside its
parent, and the fine-tune that scores proposals — so the search itself is tested with fakes.

Each step: for every move (:mod:`.moves`), the smallest shrink, in multiples of the divisor,
that the row look-up (:mod:`.rows`) says lowers the latency by ``delta`` (or, at the last step,
by what is left to the target but at least ``delta / 2``, so the result lands under it by a
saving the timing can tell from its noise) (:mod:`.sizing`). Every such proposal (or, with
``at_most``, the best by their inherited weights: :func:`screened`) is fine-tuned from the
parent and scored on held-out training images, against the parent itself fine-tuned alike (the
same steps, seed and learning rate: the fine-tune's own gain is not the edit's); in order of
Δscore / |ΔLatency|, the proposals are then measured whole and the first that saves what the
step needs, beside its parent and again beside the start, is chosen, trimmed or cut deeper
where its saving says so (:mod:`.choice`), and becomes the parent. Until its latency — timed
beside the start, on the start's scale (:func:`~.timing.on_scale`) — is at most the target.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

from ..errors import SearchError
from .choice import Step, accept, deepened, trimmed
from .proposal import REFERENCE, Proposal, Search, Tuned, alike, ranked
from .sizing import propose
from .trace import TraceRow

FINEST = 4  # where no move saves δ, a step halves it, down to δ / FINEST (:func:`finer_step`)


class NoProposal(SearchError):
    """No move's rows say it lowers the latency by what the step needs."""


class Screened(NamedTuple):
    """A step's proposals as screened (:func:`screened`): those fine-tuned first, in the order
    proposed; the rest, best first by their figures before any fine-tune, each with them; and
    the parent's own such figures (None: nothing was screened)."""

    kept: list[Proposal]
    rest: list[tuple[Proposal, Tuned]]
    own: Tuned | None = None


def screened(s: Search, parent: TraceRow, proposals: list[Proposal]) -> Screened:
    """The proposals a step fine-tunes first: every one, or with ``s.at_most`` the best that many
    by :func:`ranked` of their held-out figures before any fine-tune (``s.screen``: the parent's
    weights narrowed into each, beside the parent's own). A fine-tune is most of a step's time
    on a CPU (about 80 s each on the bench's), an evaluation of inherited weights a second or
    so, and on the bench's run 13 the order of the one foretold the other's: at steps 1 and 3
    (13 and 11 proposals) the best fine-tuned ranked first by inherited loss per ms, and the
    step's choice second (``bench/adapt_proxy.py``)."""
    if s.at_most is None or s.screen is None or len(proposals) <= s.at_most:
        return Screened(proposals, [])
    own, *figures = s.screen([alike(parent), *proposals], parent)
    order = ranked(s.figure(own), proposals, [s.figure(f) for f in figures])
    unranked = [i for i in range(len(proposals)) if i not in order]  # its evaluation failed
    rest = [(proposals[i], figures[i]) for i in order[s.at_most :] + unranked]
    return Screened([proposals[i] for i in sorted(order[: s.at_most])], rest, own)


def _passed_over(
    s: Search, parent: TraceRow, own: Tuned | None, rest: list[tuple[Proposal, Tuned]]
) -> list[TraceRow]:
    """The trace rows of a step's proposals never fine-tuned: their figures before any
    fine-tune against the parent's ``own``, no run."""
    rows, reference = [], None if own is None else s.figure(own)
    for p, f in rest:
        figure, top1, loss = s.figure(f), f.top1 or 0.0, f.loss or 0.0
        gain = 0.0 if figure is None or reference is None else (figure - reference) / p.saved_ms
        rows.append(TraceRow(parent.step + 1, p.edit, False, parent.latency_ms - p.saved_ms, 0.0,
                             0.0, top1, top1 - (own.top1 or 0.0), p.saved_ms, gain, "", p.edits,
                             False, loss, loss - (own.loss or 0.0), tuned=False))  # fmt: skip
    return rows


def _chosen(
    s: Search, step: Step, reference: float, rest: list[tuple[Proposal, Tuned]]
) -> tuple[int | None, list[tuple[Proposal, Tuned]]]:
    """The index of the proposal a step takes (:mod:`.choice`: the first by score that saves
    what the step needs measured whole, or its trim), and those still never fine-tuned: while
    none of those fine-tuned saves it, the next ``s.at_most`` screened out (``rest``, best
    first) are fine-tuned and measured, before the measured are cut deeper (a deeper cut, sized
    from a whole network's small saving, tends to the deepest the row allows: the bench's run
    16 took exp bneck6 240→8 at +0.064 held-out loss while five proposals sized by their rows
    were never fine-tuned)."""
    while True:
        figures = [s.figure(r) for r in step.results]
        order = [i for i in ranked(reference, step.proposals, figures) if i not in step.pair]
        chosen = accept(s, step, order)
        if chosen is not None:
            return trimmed(s, step, chosen), rest
        if not rest:
            return deepened(s, step, reference), rest
        more, rest = [p for p, _ in rest[: s.at_most]], rest[s.at_most :]
        first = len(step.proposals)
        step.results.extend(s.finetune(step.parent.step + 1, more, step.parent, first))
        step.proposals.extend(more)


def _reference(s: Search, parent: TraceRow, tuned: Tuned | None) -> tuple[Tuned, TraceRow | None]:
    """The figures a step's proposals are compared with: the parent fine-tuned alike (``tuned``,
    and its trace row), or without ``s.reference`` the parent's recorded ones."""
    if tuned is None:
        return Tuned(parent.holdout_top1, parent.run, parent.holdout_loss), None
    if s.figure(tuned) is None:
        raise SearchError(
            f"the parent's own fine-tune, which step {parent.step + 1}'s proposals are compared "
            f"with, failed (see logs/); repeat the command to try it again"
        )
    row = dataclasses.replace(parent, step=parent.step + 1, edit=REFERENCE, chosen=False,
                              holdout_top1=tuned.top1, holdout_loss=tuned.loss or 0.0, d_top1=0.0,
                              d_loss=0.0, d_ms=0.0, score=0.0, run=tuned.run,
                              measured=True)  # fmt: skip
    return tuned, row


def step_rows(s: Search, step: Step, chosen: int | None, reference: Tuned) -> list[TraceRow]:
    """The trace's rows of one step: every proposal (a failed fine-tune scores 0 %), its latency
    measured whole where it was, predicted from its rows where not, its ΔTop-1, ΔLoss and score
    (Δ :meth:`~.proposal.Search.figure` / the ms saved) against ``reference`` (:func:`_reference`);
    ``chosen`` marked."""
    parent, measured, ref_loss = step.parent, step.shown(), reference.loss or 0.0
    rows = []
    for i, (p, r) in enumerate(zip(step.proposals, step.results, strict=True)):
        m, figure = measured.get(i), s.figure(r)
        ms, spread, load = (m.median_ms, m.spread_ms, m.load) if m else (
            parent.latency_ms - p.saved_ms, 0.0, 0.0)  # fmt: skip
        top1, loss, saved = r.top1 or 0.0, r.loss or 0.0, parent.latency_ms - ms
        gain = 0.0 if figure is None or not saved else (figure - s.figure(reference)) / saved
        figures = (ms, spread, load, top1, top1 - reference.top1, saved, gain)
        rows.append(TraceRow(parent.step + 1, p.edit, i == chosen, *figures, r.run, p.edits,
                             m is not None, loss,
                             loss - ref_loss if r.loss is not None else 0.0))  # fmt: skip
    return rows


def run_step(s: Search, path: list[TraceRow], progress: Callable[[], None]) -> list[TraceRow]:
    """One step after the last of ``path``: its rows, or SearchError when no move saves what is
    needed."""
    parent, proposals = path[-1], propose(s, path, progress)
    where = (
        f"the search stopped at {parent.latency_ms:.3g} ms, above the target {s.target_ms:.3g} ms"
    )
    if not proposals:
        raise NoProposal(
            f"no proposal lowers the latency by {s.needed(parent):.3g} ms any more: {where} (a "
            "smaller step, or the moves kernel and se, may reach further); the best reached is "
            "kept"
        )
    screen = screened(s, parent, proposals)
    batch = [alike(parent), *screen.kept] if s.reference else screen.kept
    results = list(s.finetune(parent.step + 1, batch, parent, 0))
    tuned = results.pop(0) if s.reference else None
    reference, reference_row = _reference(s, parent, tuned)
    step = Step(parent, list(screen.kept), results)
    chosen, rest = _chosen(s, step, s.figure(reference), screen.rest)
    if all(s.figure(r) is None for r in step.results):
        raise SearchError(f"every proposal's fine-tune failed (see logs/): {where}")
    if chosen is not None:
        step.record(s, chosen)
    if chosen is None:
        best = max(parent.latency_ms - m.median_ms for m in step.shown().values())
        raise SearchError(
            f"no proposal measured whole saved half of the {s.needed(parent):.3g} ms the step "
            f"needs above the timing's noise, beside its parent and again beside the start (the "
            f"best {len(step.pair)} by score were measured, and those above the noise cut deeper; "
            f"the most any saved was {best:.3g} ms; more latency runs, a quieter machine or a "
            f"larger step may help): {where}; the best reached is kept"
        )
    rows = step_rows(s, step, chosen, reference) + _passed_over(s, parent, screen.own, rest)
    return rows if reference_row is None else [reference_row, *rows]


def finer_step(s: Search, path: list[TraceRow], progress: Callable[[], None]) -> list[TraceRow]:
    """:func:`run_step`, and where no move's rows say it saves what the step needs, again with δ
    halved, down to δ / :data:`FINEST` (the next step starts from δ again). Where a network has
    shrunk, a single row's cut saves less: the bench's run 21 stopped at 1.068 × its target when
    no row saved δ (5 % of the start) any more, and the two steps before it had each cut a row to
    8 channels, the deepest that saved δ, for 0.07–0.1 held-out loss (the paper's δ is 1 %).
    With ``s.floors_last``, a cut that leaves a row one divisor is proposed only at the finest δ:
    until then a step halves δ instead (run 22's last four steps each cut a row to 8 channels,
    the only cuts that saved δ there, for 0.08–0.16 held-out loss apiece against their parents
    fine-tuned alike)."""
    finer = dataclasses.replace(s, floors=not s.floors_last)
    while True:
        try:
            return run_step(finer, path, progress)
        except NoProposal:
            if finer.delta_ms / 2 < s.delta_ms / FINEST * (1 - 1e-9):
                if finer.floors:
                    raise
                finer = dataclasses.replace(finer, floors=True)
                s.say(
                    f"step {path[-1].step + 1}: only cuts of a row to one divisor save "
                    f"{finer.needed(path[-1]):.3g} ms; proposing those"
                )
                continue
            before = finer.needed(path[-1])
            without = "" if finer.floors else " without cutting a row to one divisor"
            finer = dataclasses.replace(finer, delta_ms=finer.delta_ms / 2)
            s.say(
                f"step {path[-1].step + 1}: no move's rows save {before:.3g} ms{without}; "
                f"proposing again for {finer.needed(path[-1]):.3g} ms (δ halved to "
                f"{finer.delta_ms:.3g} ms)"
            )


def reached(path: list[TraceRow], target_ms: float) -> TraceRow | None:
    """The first network on a searched ``path`` (after the start) that meets ``target_ms``:
    the result of a search to that target, whose steps a search to a lower target took on its
    way (the target only says where to stop; a last step, sized to what was left to its own
    target, may be shorter than δ). None where the path has not reached it."""
    return next((r for r in path[1:] if r.latency_ms <= target_ms), None)


def search(
    s: Search,
    path: list[TraceRow],
    on_step: Callable[[list[TraceRow]], None],
    progress: Callable[[], None] = lambda: None,
) -> TraceRow:
    """Steps from the last of ``path`` (the chosen rows so far, from the start) until the
    latency is at most the target; each step's rows handed to ``on_step`` (the trace) before
    the next begins. Returns the last chosen row."""
    path = list(path)
    while path[-1].latency_ms > s.target_ms:
        rows = finer_step(s, path, progress)
        on_step(rows)
        path.append(next(r for r in rows if r.chosen))
    return path[-1]
