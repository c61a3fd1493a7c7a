"""The NetAdapt loop over spec edits, with its services handed in — the latency a child saves
predicted from its rows, the whole child's latency measured beside its parent, and the
fine-tune that scores proposals — so the search itself is tested with fakes.

Each step: for every move (:mod:`.moves`), the smallest shrink, in multiples of the divisor,
that the row look-up (:mod:`.rows`) says lowers the latency by ``delta`` (or, at the last step,
by what is left to the target but at least ``delta / 2``, so the result lands under it by a
saving the timing can tell from its noise): the deepest the row allows, then between no cut
and that (:func:`smallest_step`). Every such proposal is fine-tuned from the parent and scored
on held-out training images, against the parent itself fine-tuned alike (the same steps, seed
and learning rate: the fine-tune's own gain is not the edit's); in order of ΔTop-1 /
|ΔLatency|, the proposals are then measured whole, timed in the same rounds as the parent, and
the first whose measured saving clears the timing's noise and half the step's need, and still
does timed again beside the start, is chosen — or, when it saved well over what the step
needs, a shallower shrink of the same move that still saves it, measured whole and fine-tuned
too (:func:`trim`) — and becomes the parent. Until its latency — timed beside the start, on the
start's scale (:func:`on_scale`) — is at most the target.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import SearchError
from ..spec.resolve import Spec
from .moves import Edits, Move, same_layers, shrunk
from .timing import Measured
from .trace import TraceRow

MEASURED_AT_MOST = 5  # proposals measured whole in a step before it gives up
TRIM_ABOVE = 1.5  # a chosen shrink measured to save more than this × what the step needs: trimmed
TRIM_AIM = 1.25  # a trimmed shrink is sized to save this × what the step needs
TRIMS = 2  # shallower shrinks of a chosen move measured whole, at most
LOOKUPS = 5  # row look-ups that size one move, at most (:func:`smallest_step`)
REFERENCE = "parent, fine-tuned alike"  # the trace's row of a step's reference


@dataclass(frozen=True)
class Proposal:
    move: Move | None  # None: the step's parent itself, fine-tuned alike (:func:`alike`)
    edit: str  # what changes, in words
    edits: Edits  # every edit so far, this one included
    saved_ms: float  # the saving its rows predict (:mod:`.rows`); a trimmed one's, measured
    multiples: int = 1  # how many divisors deep it shrinks


class Tuned(NamedTuple):
    """A fine-tune's held-out top-1 (None: its training failed), its run folder and its
    held-out loss."""

    top1: float | None
    run: str
    loss: float | None = None


SCORES = ("loss", "top1")  # what ranks the proposals: held-out loss (default) or top-1


@dataclass(frozen=True)
class Search:
    """What a search needs: the target and step in ms, the spec (as trained) of a set of edits,
    the moves of a spec, the ms a set of edits saves beside its parent's as predicted from the
    rows that differ, the latency of a set of edits measured whole beside its parent's (the
    parent's median in those rounds in ``parent_ms``, the noise of its saving in ``noise_ms``),
    the fine-tune, which gives each proposal's held-out top-1 (None: its training failed) and
    run folder (the step's proposals numbered from its last argument; one of no move is the
    parent, :func:`alike`), the latency of a chosen set of edits timed again beside the start
    (whose recorded latency is ``start_ms``), and whether the reference of the proposals'
    ΔTop-1 is the parent fine-tuned as they are, in the same batch of trainings (else the
    parent's recorded figures), and the figure that ranks them (:data:`SCORES`); with
    ``at_most``, how many proposals a step fine-tunes, chosen by ``screen``: each proposal's
    held-out figures with the parent's weights narrowed into it, before any fine-tune (the
    parent itself, as a proposal of no move, among them) (:func:`screened`)."""

    target_ms: float
    delta_ms: float
    spec_of: Callable[[Edits], Spec]
    moves_of: Callable[[Spec], list[Move]]
    saving_of: Callable[[Edits, Edits], float]
    latency_of: Callable[[Edits, Edits], Measured]
    finetune: Callable[[int, list[Proposal], TraceRow, int], list[Tuned]]
    confirm: Callable[[Edits], Measured]
    start_ms: float
    reference: bool = False
    score: str = "loss"
    screen: Callable[[list[Proposal], TraceRow], list[Tuned]] | None = None
    at_most: int | None = None

    def figure(self, t: Tuned) -> float | None:
        """What ranks a fine-tune, the higher the better: its held-out loss negated, or its
        top-1; None where its training failed. On the bench's 1,000 held-out images top-1
        moves in steps of 0.1 point and its binomial error is some 1.3 points: 10 of a step's
        11 proposals lay within 0.9 points of their parent fine-tuned alike, 5 above it, and the
        step took a cut whose loss rose 30 times as much as the best's
        (docs/measurements.md#adapt)."""
        if t.top1 is None:
            return None
        if self.score == "top1":
            return t.top1
        return None if t.loss is None else -t.loss

    def needed(self, parent: TraceRow) -> float:
        """What a step must save: δ, or only what is left to the target when that is less, but
        at least half of δ: a last step sized to the few hundredths of a ms left was lost in the
        timing's noise (a bench stopped 1.6 % above its target: 0.042 ms were left, the best
        proposal measured whole saved 0.047 ms, under the noise), while half a step lands the
        result under the target by at most half of δ."""
        return min(self.delta_ms, max(parent.latency_ms - self.target_ms, self.delta_ms / 2))


def smallest_step(s: Search, spec: Spec, parent: TraceRow, move: Move) -> Proposal | None:
    """The smallest shrink of ``move`` that its rows say lowers the latency by what the step
    needs (δ, or what is left to the target), in a few look-ups: first the deepest the row
    allows (a move that cannot save what is needed is dropped after that one), then the depth
    that a straight line through the bracket of the need says saves it — at first between no
    cut (no saving) and the deepest, a row's time being about linear in its channels — each
    look-up narrowing the bracket, at most :data:`LOOKUPS` in all. Sized by doubling (1, 2,
    4… divisors, then the deepest), the bench's first step took 65 look-ups for 16 moves (36
    this way), each a row exported to the runtime (seconds apiece), and cut up to twice as
    deep as it needed (``bench/adapt_sizing.py``)."""
    need, looked = s.needed(parent), 0

    def look(multiples: int, deeper: bool) -> Proposal | None:
        nonlocal looked
        found = _valid(s, spec, parent, move, multiples, deeper)
        if found is None:
            return None
        looked += 1
        edits, words, multiples = found
        return Proposal(move, words, edits, s.saving_of(edits, parent.edits), multiples)

    enough = look(_deepest(spec, parent, move), deeper=False)
    if enough is None or enough.saved_ms < need:
        return None
    short_multiples, short_saved = 0, 0.0
    while enough.multiples - short_multiples > 1 and looked < LOOKUPS:
        part = (need - short_saved) / (enough.saved_ms - short_saved)
        aim = short_multiples + math.ceil(part * (enough.multiples - short_multiples))
        found = look(min(max(aim, short_multiples + 1), enough.multiples - 1), deeper=True)
        if found is None or found.multiples >= enough.multiples:
            break
        if found.saved_ms >= need:
            enough = found
        else:
            short_multiples, short_saved = found.multiples, found.saved_ms
    return enough


def _valid(
    s: Search, spec: Spec, parent: TraceRow, move: Move, multiples: int, deeper: bool
) -> tuple[Edits, str, int] | None:
    """``move`` ``multiples`` divisors deep, or the nearest depth beyond it (``deeper``) or
    short of it that keeps the parent's layers (an expansion appears or goes where a row's
    ``exp`` meets its input width): its edits, words and depth; None where none does."""
    step = 1 if deeper else -1
    while multiples >= 1:
        found = shrunk(spec, parent.edits, move, multiples)
        if found is None:
            return None
        if same_layers(spec, s.spec_of(found[0])):
            return (*found, multiples)
        multiples += step
    return None


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


def _deepest(spec: Spec, parent: TraceRow, move: Move) -> int:
    """The most divisors ``move`` can shrink its row (0: not one)."""
    multiples = 0
    while shrunk(spec, parent.edits, move, multiples + 1) is not None:
        multiples += 1
    return multiples


def propose(s: Search, parent: TraceRow, progress: Callable[[], None]) -> list[Proposal]:
    spec = s.spec_of(parent.edits)
    found = []
    for move in s.moves_of(spec):
        proposal = smallest_step(s, spec, parent, move)
        if proposal is not None:
            found.append(proposal)
        progress()
    return found


def ranked(reference: float, proposals: list[Proposal], scores: list[float | None]) -> list[int]:
    """The proposals whose fine-tune finished, best Δscore / |ΔLatency| first (a score the
    higher the better: :meth:`Search.figure`), Δ against ``reference``. A gain counts as no
    loss (ties: the one that saves more): divided by the saving, a gain would rank the smallest
    cut first, and a cut that loses nothing and saves more is the better one."""
    done = [i for i, score in enumerate(scores) if score is not None]
    gains = {i: min(scores[i] - reference, 0.0) / proposals[i].saved_ms for i in done}
    return sorted(done, key=lambda i: (-gains[i], -proposals[i].saved_ms))


def screened(
    s: Search, parent: TraceRow, proposals: list[Proposal]
) -> tuple[list[Proposal], list[TraceRow]]:
    """The proposals a step fine-tunes: every one, or with ``s.at_most`` the best that many by
    :func:`ranked` of their held-out figures before any fine-tune (``s.screen``: the parent's
    weights narrowed into each, beside the parent's own), in the order proposed; the others as
    trace rows of those figures, not fine-tuned (no run). A fine-tune is most of a step's time
    on a CPU (about 80 s each on the bench's), an evaluation of inherited weights a second or
    so, and on the bench's run 13 the order of the one foretold the other's: at steps 1 and 3
    (13 and 11 proposals) the best fine-tuned ranked first by inherited loss per ms, and the
    step's choice second (``bench/adapt_proxy.py``)."""
    if s.at_most is None or s.screen is None or len(proposals) <= s.at_most:
        return proposals, []
    own, *figures = s.screen([alike(parent), *proposals], parent)
    order = ranked(s.figure(own), proposals, [s.figure(f) for f in figures])
    kept = sorted(order[: s.at_most])
    rows = []
    for i, (p, f) in enumerate(zip(proposals, figures, strict=True)):
        if i in kept:
            continue
        figure, top1, loss = s.figure(f), f.top1 or 0.0, f.loss or 0.0
        gain = 0.0 if figure is None else (figure - s.figure(own)) / p.saved_ms
        rows.append(TraceRow(parent.step + 1, p.edit, False, parent.latency_ms - p.saved_ms, 0.0,
                             0.0, top1, top1 - (own.top1 or 0.0), p.saved_ms, gain, "", p.edits,
                             False, loss, loss - (own.loss or 0.0), tuned=False))  # fmt: skip
    return [proposals[i] for i in kept], rows


def _measured(s: Search, parent: TraceRow, p: Proposal) -> Measured:
    return on_scale(s.latency_of(p.edits, parent.edits), parent.latency_ms)


@dataclass
class Timings:
    """A step's proposals measured whole, by index: beside the parent (``pair``), and those that
    saved enough there timed again beside the start (``again``, on its scale)."""

    pair: dict[int, Measured] = dataclasses.field(default_factory=dict)
    again: dict[int, Measured] = dataclasses.field(default_factory=dict)

    def shown(self) -> dict[int, Measured]:
        """Each proposal's last measurement: the trace's figure (beside the start where taken)."""
        return {**self.pair, **self.again}


def _holds(s: Search, parent: TraceRow, p: Proposal, i: int, t: Timings) -> bool:
    """Whether ``p`` (proposal ``i``), timed again beside the start, still lies half of what the
    step needs below its parent's recorded latency (itself timed beside the start); that
    measurement kept in ``t.again``. The pair beside the parent decides the first cut, but its
    rounds are the step's luckiest (the step takes the proposal that measured best): a bench
    took three steps that saved 0.013, 0.024 and 0.006 ms of the 0.074 needed, timed again,
    each a fine-tune's loss for a step of no use (docs/measurements.md#adapt)."""
    m = t.again[i] = on_scale(s.confirm(p.edits), s.start_ms)
    return parent.latency_ms - m.median_ms >= s.needed(parent) / 2


def accept(
    s: Search, parent: TraceRow, proposals: list[Proposal], order: list[int], t: Timings
) -> int | None:
    """The first of ``order`` (at most :data:`MEASURED_AT_MOST`) whose whole network, measured
    beside the parent, saves more than the noise of that saving
    (:func:`~.timing.saving_noise`) and at least half of what the step needs
    (:meth:`Search.needed`, whose last step asks half of δ alike), and timed again beside the
    start still does (:func:`_holds`); every measurement kept in ``t``. Rows timed alone size a
    proposal, and measured whole it may save much less: a bench took one that saved 0.033 ms of
    the 0.077 needed, 0.001 above the noise; timed again beside the start it was slower than its
    parent, a loss of held-out accuracy for no saving. Whole savings of 0.057 of 0.074 ms, the
    best a later step had, are taken."""
    need = s.needed(parent)
    for i in order[:MEASURED_AT_MOST]:
        m = t.pair[i] = _measured(s, parent, proposals[i])
        if _enough(parent.latency_ms - m.median_ms, m, need) and _holds(
            s, parent, proposals[i], i, t
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
    that measured; None where the row cannot go that deep or the network's layers would change."""
    found = shrunk(spec, parent.edits, p.move, multiples)
    if found is None:
        return None
    edits, words = found
    if not same_layers(spec, s.spec_of(edits)):
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


def _added(
    s: Search,
    parent: TraceRow,
    proposals: list[Proposal],
    results: list[Tuned],
    t: Timings,
    found: tuple[Proposal, Measured],
) -> int | None:
    """``found`` (a proposal resized after its step's fine-tunes, measured beside the parent),
    when timed again beside the start it still saves what a step takes (:func:`_holds`),
    fine-tuned like them and added to ``proposals``, ``results`` and ``t``: its index, or None
    when it does not hold or its training failed."""
    p, m = found
    i = len(proposals)
    if not _holds(s, parent, p, i, t):
        del t.again[i]
        return None
    (tuned,) = s.finetune(parent.step + 1, [p], parent, i)
    if s.figure(tuned) is None:
        del t.again[i]
        return None
    proposals.append(p)
    results.append(tuned)
    t.pair[i] = m
    return i


def _trimmed(
    s: Search,
    parent: TraceRow,
    proposals: list[Proposal],
    results: list[Tuned],
    t: Timings,
    chosen: int,
) -> int:
    """``chosen``, or its :func:`trim`, fine-tuned like the step's proposals and added to them
    (and to ``results`` and ``t``): the index of the one the step takes (a trim that does not
    hold beside the start or whose training failed: the deeper shrink stands)."""
    found = trim(s, s.spec_of(parent.edits), parent, proposals[chosen], t.pair[chosen])
    if found is None:
        return chosen
    added = _added(s, parent, proposals, results, t, found)
    return chosen if added is None else added


def _deepened(
    s: Search,
    parent: TraceRow,
    proposals: list[Proposal],
    results: list[Tuned],
    t: Timings,
) -> int | None:
    """When no proposal measured whole saved half what the step needs: the first of those measured
    (best by score first) whose :func:`deepen` does, and holds beside the start, fine-tuned and
    added; None when none."""
    spec = s.spec_of(parent.edits)
    for i in list(t.pair):
        found = deepen(s, spec, parent, proposals[i], t.pair[i])
        if found is not None:
            added = _added(s, parent, proposals, results, t, found)
            if added is not None:
                return added
    return None


def alike(parent: TraceRow) -> Proposal:
    """The step's parent as a proposal of no move: fine-tuned in the batch of its proposals, the
    reference of their ΔTop-1. Fine-tuned alone before them, it held a whole round of the
    trainings (one worker of two on the bench's CPU busy, the other idle)."""
    return Proposal(None, REFERENCE, parent.edits, 0.0, 0)


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


def step_rows(
    s: Search,
    parent: TraceRow,
    proposals: list[Proposal],
    results: list[Tuned],
    measured: dict[int, Measured],
    chosen: int | None,
    reference: Tuned,
) -> list[TraceRow]:
    """The trace's rows of one step: every proposal (a failed fine-tune scores 0 %), its latency
    measured whole where it was, predicted from its rows where not, its ΔTop-1, ΔLoss and score
    (Δ :meth:`Search.figure` / the ms saved) against ``reference`` (:func:`_reference`);
    ``chosen`` marked."""
    rows, step, ref_loss = [], parent.step + 1, reference.loss or 0.0
    for i, (p, r) in enumerate(zip(proposals, results, strict=True)):
        m, figure = measured.get(i), s.figure(r)
        ms, spread, load = (m.median_ms, m.spread_ms, m.load) if m else (
            parent.latency_ms - p.saved_ms, 0.0, 0.0)  # fmt: skip
        top1, loss, saved = r.top1 or 0.0, r.loss or 0.0, parent.latency_ms - ms
        gain = 0.0 if figure is None or not saved else (figure - s.figure(reference)) / saved
        figures = (ms, spread, load, top1, top1 - reference.top1, saved, gain)
        rows.append(TraceRow(step, p.edit, i == chosen, *figures, r.run, p.edits, m is not None,
                             loss, loss - ref_loss if r.loss is not None else 0.0))  # fmt: skip
    return rows


def run_step(s: Search, parent: TraceRow, progress: Callable[[], None]) -> list[TraceRow]:
    """One step after ``parent``: its rows, or SearchError when no move saves what is needed."""
    proposals = propose(s, parent, progress)
    where = (
        f"the search stopped at {parent.latency_ms:.3g} ms, above the target {s.target_ms:.3g} ms"
    )
    if not proposals:
        raise SearchError(
            f"no proposal lowers the latency by {s.needed(parent):.3g} ms any more: {where} (a "
            "smaller step, or the moves kernel and se, may reach further); the best reached is "
            "kept"
        )
    proposals, passed_over = screened(s, parent, proposals)
    batch = [alike(parent), *proposals] if s.reference else proposals
    results = list(s.finetune(parent.step + 1, batch, parent, 0))
    tuned = results.pop(0) if s.reference else None
    reference, reference_row = _reference(s, parent, tuned)
    order = ranked(s.figure(reference), proposals, [s.figure(r) for r in results])
    if not order:
        raise SearchError(f"every proposal's fine-tune failed (see logs/): {where}")
    t = Timings()
    chosen = accept(s, parent, proposals, order, t)
    if chosen is not None:
        chosen = _trimmed(s, parent, proposals, results, t, chosen)
    else:
        chosen = _deepened(s, parent, proposals, results, t)
    if chosen is None:
        best = max(parent.latency_ms - m.median_ms for m in t.shown().values())
        raise SearchError(
            f"no proposal measured whole saved half of the {s.needed(parent):.3g} ms the step "
            f"needs above the timing's noise, beside its parent and again beside the start (the "
            f"best {len(t.pair)} by score were measured, and those above the noise cut deeper; "
            f"the most any saved was {best:.3g} ms; more latency runs, a quieter machine or a "
            f"larger step may help): {where}; the best reached is kept"
        )
    rows = step_rows(s, parent, proposals, results, t.shown(), chosen, reference) + passed_over
    return rows if reference_row is None else [reference_row, *rows]


def reached(path: list[TraceRow], target_ms: float) -> TraceRow | None:
    """The first network on a searched ``path`` (after the start) that meets ``target_ms``:
    the result of a search to that target, whose steps a search to a lower target took on its
    way (the target only says where to stop; a last step, sized to what was left to its own
    target, may be shorter than δ). None where the path has not reached it."""
    return next((r for r in path[1:] if r.latency_ms <= target_ms), None)


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
