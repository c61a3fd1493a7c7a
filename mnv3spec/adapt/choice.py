"""A step's choice, measured whole: in order of score, the first proposal whose whole network,
timed in the same rounds as its parent, saves more than the noise of that saving and half of what
the step needs, and still does timed again beside the start (:func:`accept`); one that saved well
over the need is trimmed to a shallower shrink (:func:`trim`), and when none saved enough, the
best above the noise is cut deeper (:func:`deepen`) — each measured whole and fine-tuned too."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..spec.resolve import Spec
from .moves import can_inherit, shrunk
from .proposal import Proposal, Search, Tuned, ranked
from .timing import Measured, on_scale
from .trace import TraceRow

MEASURED_AT_MOST = 5  # proposals measured whole in a step before it gives up
TRIM_ABOVE = 1.5  # a chosen shrink measured to save more than this × what the step needs: trimmed
TRIM_AIM = 1.25  # a trimmed shrink is sized to save this × what the step needs
TRIMS = 2  # shallower shrinks of a chosen move measured whole, at most


def _measured(s: Search, parent: TraceRow, p: Proposal) -> Measured:
    return on_scale(s.latency_of(p.edits, parent.edits), parent.latency_ms)


@dataclass
class Step:
    """A step in the making: its parent; the proposals fine-tuned so far and their fine-tunes'
    figures, by index (each batch added to both); and those measured whole: beside the parent
    (``pair``), those that saved enough there timed again beside the start (``again``, on its
    scale), and the one taken timed once more for the path (``recorded``,
    :meth:`~.proposal.Search.record`)."""

    parent: TraceRow
    proposals: list[Proposal]
    results: list[Tuned]
    pair: dict[int, Measured] = dataclasses.field(default_factory=dict)
    again: dict[int, Measured] = dataclasses.field(default_factory=dict)
    recorded: dict[int, Measured] = dataclasses.field(default_factory=dict)

    def shown(self) -> dict[int, Measured]:
        """Each proposal's last measurement: the trace's figure (beside the start where taken)."""
        return {**self.pair, **self.again, **self.recorded}

    def record(self, s: Search, chosen: int) -> None:
        """The taken proposal's figure on the path: timed once more beside the start, in a process
        of its own (:attr:`~.proposal.Search.record`), where the search does. The figure that passed
        it was the best of up to :data:`MEASURED_AT_MOST` noisy ones, low by its luck, and the next
        step's proposals, measured against it, then seemed to save too little: a bench's path
        networks, timed again beside its start (``bench/adapt_retime.py``), lay up to 4 % above
        their recorded latency, and its step 5, where none of six held, cut exp bneck6 240→8, the
        deepest its row allowed (docs/measurements.md#adapt)."""
        if s.record is not None:
            self.recorded[chosen] = on_scale(s.record(self.proposals[chosen].edits), s.start_ms)


def _holds(s: Search, step: Step, p: Proposal, i: int) -> bool:
    """Whether ``p`` (proposal ``i``), timed again beside the start, still lies half of what the
    step needs below its parent timed alike (the start's own figure for the start); that
    measurement kept in ``step.again``. The pair beside the parent decides the first cut, but its
    rounds are the step's luckiest (the step takes the proposal that measured best): a bench
    took three steps that saved 0.013, 0.024 and 0.006 ms of the 0.074 needed, timed again,
    each a fine-tune's loss for a step of no use (docs/measurements.md#adapt). Both are timed in
    this process, not against the parent's figure on the path, which is timed in a process of its
    own (:attr:`~.proposal.Search.record`): beside the start, networks exported late in the search's
    process ran some 3 % slower than in a new one."""
    m = step.again[i] = on_scale(s.confirm(p.edits), s.start_ms)
    return _again(s, step.parent) - m.median_ms >= s.needed(step.parent) / 2


def _again(s: Search, parent: TraceRow) -> float:
    """``parent``'s latency timed beside the start in this process (it passed :func:`_holds` so,
    and is measured once), on the start's scale: the start's own figure for the start."""
    if not parent.edits:
        return s.start_ms
    return on_scale(s.confirm(parent.edits), s.start_ms).median_ms


def accept(s: Search, step: Step, order: list[int]) -> int | None:
    """The first of ``order`` (at most :data:`MEASURED_AT_MOST`) whose whole network, measured
    beside the parent, saves more than the noise of that saving (:func:`~.timing.saving_noise`)
    and at least half of what the step needs (:meth:`~.proposal.Search.needed`, whose last step
    asks half of δ alike), and timed again beside the start still does (:func:`_holds`); every
    measurement kept in ``step``. Rows timed alone size a proposal, and measured whole it may save
    much less: a bench took one that saved 0.033 ms of the 0.077 needed, 0.001 above the noise;
    timed again beside the start it was slower than its parent, a loss of held-out accuracy for
    no saving. Whole savings of 0.057 of 0.074 ms, the best a later step had, are taken."""
    parent, need = step.parent, s.needed(step.parent)
    for i in order[:MEASURED_AT_MOST]:
        m = step.pair[i] = _measured(s, parent, step.proposals[i])
        if _enough(parent.latency_ms - m.median_ms, m, need) and _holds(
            s, step, step.proposals[i], i
        ):
            return i
    return None


def _enough(saved: float, m: Measured, need: float) -> bool:
    """Whether ``saved``, measured whole beside the parent (``m``), is more than the noise of
    that saving and at least half of ``need``: what a step takes (:func:`accept`)."""
    return saved > m.noise_ms and saved >= need / 2


def trim(
    s: Search, spec: Spec, parent: TraceRow, p: Proposal, m: Measured
) -> tuple[Proposal, Measured] | None:
    """A shallower shrink of the chosen move ``p`` (measured ``m`` beside the parent), when that
    saved over :data:`TRIM_ABOVE` × what the step needs. The row look-up sizes a move from rows
    timed alone, and whole networks saved up to twice what it said
    (a bench's exp bneck10 576→64 saved 0.34 ms where 0.16 were needed): a cut deeper than the
    step needs costs accuracy for nothing. Sized from the measured saving per divisor (then
    halfway, once one fell short), each is measured whole beside the parent and kept while it
    still saves what is needed above the noise; None when none does."""
    need, short, best, best_m = s.needed(parent), 0, p, m
    for _ in range(TRIMS):
        saved = parent.latency_ms - best_m.median_ms
        if saved <= TRIM_ABOVE * need:
            break
        sized = math.ceil(best.multiples * TRIM_AIM * need / saved)
        multiples = (short + best.multiples + 1) // 2 if short else sized
        if multiples >= best.multiples:
            break
        resized = _resized(s, spec, parent, p, multiples)
        if resized is None:
            break
        if resized[0].saved_ms >= need and resized[0].saved_ms > resized[1].noise_ms:
            best, best_m = resized
        else:
            short = multiples
    return None if best is p else (best, best_m)


def _resized(
    s: Search, spec: Spec, parent: TraceRow, p: Proposal, multiples: int
) -> tuple[Proposal, Measured] | None:
    """``p``'s move ``multiples`` divisors deep, measured whole beside the parent, its saving
    that measured; None where the row cannot go that deep or the child could not inherit."""
    found = shrunk(spec, parent.edits, p.move, multiples)
    if found is None:
        return None
    edits, words = found
    if not can_inherit(spec, s.spec_of(edits)):
        return None
    m = _measured(s, parent, Proposal(p.move, words, edits, 0.0, multiples))
    return Proposal(p.move, words, edits, parent.latency_ms - m.median_ms, multiples), m


def deepen(
    s: Search, spec: Spec, parent: TraceRow, p: Proposal, m: Measured
) -> tuple[Proposal, Measured] | None:
    """A deeper shrink of ``p``, which measured whole (``m``, beside the parent) saved more than
    its noise but under half of what the step needs (:func:`accept`): rows timed alone size a
    proposal, and whole networks may save less. Sized from the measured saving per divisor to
    save :data:`TRIM_AIM` × the need (at most as deep as the row goes), measured whole beside the
    parent; None when it cannot go deeper or still falls short."""
    need, saved = s.needed(parent), parent.latency_ms - m.median_ms
    if saved <= m.noise_ms or p.move is None:
        return None
    wanted = math.ceil(p.multiples * TRIM_AIM * need / saved)
    deepest = next(
        (k for k in range(wanted, p.multiples, -1) if shrunk(spec, parent.edits, p.move, k)),
        None,
    )
    resized = _resized(s, spec, parent, p, deepest) if deepest else None
    if resized is None:
        return None
    return resized if _enough(resized[0].saved_ms, resized[1], need) else None


def _added(s: Search, step: Step, found: list[tuple[Proposal, Measured]]) -> list[int]:
    """Those of ``found`` (proposals resized after the step's fine-tunes, each measured beside the
    parent) that, timed again beside the start, still save what a step takes (:func:`_holds`),
    fine-tuned together like the step's proposals and added to ``step``: the indices of those
    whose training finished (a failed one stays, as a failed proposal of the step does)."""
    held, first = [], len(step.proposals)
    for p, m in found:
        i = first + len(held)
        if _holds(s, step, p, i):
            held.append((p, m))
        else:
            del step.again[i]
    if not held:
        return []
    tuned = s.finetune(step.parent.step + 1, [p for p, _ in held], step.parent, first)
    for i, ((p, m), r) in enumerate(zip(held, tuned, strict=True), first):
        step.proposals.append(p)
        step.results.append(r)
        step.pair[i] = m
    return [i for i in range(first, len(step.proposals)) if s.figure(step.results[i]) is not None]


def trimmed(s: Search, step: Step, chosen: int) -> int:
    """``chosen``, or its :func:`trim`, fine-tuned like the step's proposals and added to
    ``step``: the index of the one the step takes (a trim that does not hold beside the start
    or whose training failed: the deeper shrink stands)."""
    parent = step.parent
    found = trim(s, s.spec_of(parent.edits), parent, step.proposals[chosen], step.pair[chosen])
    if found is None:
        return chosen
    added = _added(s, step, [found])
    return added[0] if added else chosen


def deepened(s: Search, step: Step, reference: float) -> int | None:
    """When no proposal measured whole saved half what the step needs: each of those measured
    (the best :data:`MEASURED_AT_MOST` by score) cut deeper (:func:`deepen`) where that saves
    it, and holds beside the start, fine-tuned together and added, the best of them by score per
    ms saved against ``reference`` (:func:`~.proposal.ranked`); None when none. A deeper cut is
    a new proposal, whose cost only its fine-tune tells: taking the first deeper cut that saved
    enough, a bench's step cut exp bneck9 288→8 at +0.18 held-out loss, where the step's
    proposals had cost +0.003 to +0.03 (docs/measurements.md#adapt)."""
    spec, figures = s.spec_of(step.parent.edits), [s.figure(r) for r in step.results]
    measured = [i for i in ranked(reference, step.proposals, figures) if i in step.pair]
    found = [
        deepen(s, spec, step.parent, step.proposals[i], step.pair[i])
        for i in measured[:MEASURED_AT_MOST]
    ]
    added = _added(s, step, [f for f in found if f is not None])
    order = ranked(
        reference, [step.proposals[i] for i in added], [s.figure(step.results[i]) for i in added]
    )
    return added[order[0]] if order else None
