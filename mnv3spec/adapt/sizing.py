"""A step's proposals sized: for every move (:mod:`.moves`), the smallest shrink, in multiples of
the divisor, that the row look-up (:mod:`.rows`) says lowers the latency by what the step needs
(:meth:`~.proposal.Search.needed`): the deepest the row allows, then between no cut and that."""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

from ..spec.resolve import Spec
from .moves import Edits, Move, can_inherit, shrunk
from .proposal import Proposal, Search
from .trace import TraceRow

LOOKUPS = 5  # row look-ups that size one move, at most (:func:`smallest_step`)
CALIBRATION = (0.5, 2.0)  # the bounds of what the rows' predictions are scaled by
CHANNELS = ("exp", "out")  # the moves that cut channels, down to one divisor at most
PRIOR_STEPS = 3  # steps of δ, predicted and saved alike, counted into the calibration


def smallest_step(
    s: Search, spec: Spec, parent: TraceRow, move: Move, ratio: float = 1.0
) -> Proposal | None:
    """The smallest shrink of ``move`` that its rows say lowers the latency by what the step
    needs (δ, or what is left to the target), in a few look-ups: first the deepest the row
    allows (a move that cannot save what is needed is dropped after that one), then the depth
    that a straight line through the bracket of the need says saves it — at first between no
    cut (no saving) and the deepest, a row's time being about linear in its channels — each
    look-up narrowing the bracket, at most :data:`LOOKUPS` in all. Sized by doubling (1, 2,
    4… divisors, then the deepest), the bench's first step took 65 look-ups for 16 moves (36
    this way), each a row exported to the runtime (seconds apiece), and cut up to twice as
    deep as it needed (``bench/adapt_sizing.py``). ``ratio``: what the path's steps saved
    measured whole per ms their rows predicted (:func:`calibration`); the rows then aim at the
    need divided by it, at most as deep as the row allows, and a move is still dropped only where
    its rows cannot save the need itself — or, where ``s.floors`` is off, where only a cut of its
    row to one divisor saves it (:func:`~.search.finer_step`)."""
    need, looked = s.needed(parent), 0

    def look(multiples: int, deeper: bool) -> Proposal | None:
        nonlocal looked
        found = _valid(s, spec, parent, move, multiples, deeper)
        if found is None:
            return None
        looked += 1
        edits, words, multiples = found
        return Proposal(move, words, edits, s.saving_of(edits, parent.edits), multiples)

    deepest = _deepest(spec, parent, move)
    enough = look(deepest, deeper=False)
    if enough is None or enough.saved_ms < need:
        return None
    need = min(need / ratio, enough.saved_ms)
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
    floor = move.kind in CHANNELS and enough.multiples >= deepest
    return None if floor and not s.floors else enough


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
        if can_inherit(spec, s.spec_of(found[0])):
            return (*found, multiples)
        multiples += step
    return None


def _deepest(spec: Spec, parent: TraceRow, move: Move) -> int:
    """The most divisors ``move`` can shrink its row (0: not one)."""
    multiples = 0
    while shrunk(spec, parent.edits, move, multiples + 1) is not None:
        multiples += 1
    return multiples


def calibration(s: Search, path: list[TraceRow]) -> float:
    """What the steps of ``path`` saved, measured whole (the start's latency less the last's),
    per ms their rows predicted, with :data:`PRIOR_STEPS` steps of δ predicted and saved alike
    counted in, within [:data:`CALIBRATION`]. On a bench's run the rows over-predicted whole
    savings more as the network shrank (0.75 of them over eight steps, as little as 0.31 for one
    proposal), and proposals sized by them saved too little measured whole. But one step's
    saving is a few times its timing's noise: counting in one step of δ, a bench's first step,
    recorded at 0.031 ms of the 0.100 its rows said (0.111 and 0.063 in the two timings that
    took it, on a machine whose spread was a fifth of the median), scaled its second step's
    rows by 0.65, and every proposal cut to a fraction of its row (exp bneck10 576→24)
    (docs/measurements.md#adapt)."""
    predicted = sum(s.saving_of(b.edits, a.edits) for a, b in pairwise(path))
    saved, prior = path[0].latency_ms - path[-1].latency_ms, PRIOR_STEPS * s.delta_ms
    low, high = CALIBRATION
    return min(max((saved + prior) / (predicted + prior), low), high)


def propose(s: Search, path: list[TraceRow], progress: Callable[[], None]) -> list[Proposal]:
    """The step after the last of ``path``: every move's smallest step (:func:`smallest_step`),
    its rows calibrated by the path's (:func:`calibration`)."""
    parent, ratio = path[-1], calibration(s, path)
    spec = s.spec_of(parent.edits)
    found = []
    for move in s.moves_of(spec):
        proposal = smallest_step(s, spec, parent, move, ratio)
        if proposal is not None:
            found.append(proposal)
        progress()
    return found
