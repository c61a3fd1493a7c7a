"""What a search is made of: a proposal (a set of edits, and the saving its rows predict), a
fine-tune's figures, how proposals rank by them (:func:`ranked`), and the services a search calls
(:class:`Search`) — the latency a child saves predicted from its rows, the whole child measured
beside its parent and again beside the start, and the fine-tune that scores proposals — handed
in, so the search is tested with fakes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ..spec.resolve import Spec
from .moves import Edits, Move
from .timing import Measured
from .trace import TraceRow

REFERENCE = "parent, fine-tuned alike"  # the trace's row of a step's reference
# A search aims this fraction under its target, the middle of the band [0.95 T, T] a result is
# to measure in again afterwards: timed three times, each time exported and loaded anew, a bench
# path's networks spread by up to 5 % (bench/adapt_retime.py, docs/measurements.md#adapt).
LAND = 0.025


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
    """What a search needs: the target and step in ms, the spec (as trained) of a set of edits, the
    moves of a spec, the ms a set of edits saves beside its parent's as predicted from the rows that
    differ, the latency of a set of edits measured whole beside its parent's (the parent's median in
    those rounds in ``parent_ms``, the noise of its saving in ``noise_ms``), the fine-tune, which
    gives each proposal's held-out top-1 (None: its training failed) and run folder (the step's
    proposals numbered from its last argument; one of no move is the parent, :func:`alike`), the
    latency of a chosen set of edits timed again beside the start (whose recorded latency is
    ``start_ms``), and whether the reference of the proposals' ΔTop-1 is the parent fine-tuned as
    they are, in the same batch of trainings (else the parent's recorded figures), and the figure
    that ranks them (:data:`SCORES`); with ``at_most``, how many proposals a step fine-tunes, chosen
    by ``screen``: each proposal's held-out figures with the parent's weights narrowed into it,
    before any fine-tune (the parent itself, as a proposal of no move, among them)
    (:func:`~.search.screened`); with ``record``, the chosen network's latency on the path: timed
    once more beside the start, in a process of its own as ``latency`` times them, a figure that
    chose nothing (else the one beside the start that passed it, :func:`~.choice.accept`); with
    ``floors_last``, a step proposes a cut of a row to one divisor only once δ is as fine as it goes
    (:func:`~.search.finer_step`); ``say``, a line for the user (a step that halves δ says so)."""

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
    record: Callable[[Edits], Measured] | None = None
    floors_last: bool = False
    floors: bool = True  # whether a cut may leave a row one divisor (:attr:`floors_last`)
    say: Callable[[str], None] = lambda line: None

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
        """What a step must save: δ, or only what is left to :data:`LAND` under the target when
        that is less, but at least half of δ: a last step sized to the few hundredths of a ms
        left was lost in the timing's noise (a bench stopped 1.6 % above its target: 0.042 ms
        were left, the best proposal measured whole saved 0.047 ms, under the noise). Aimed at
        the target itself, a bench's result landed at 0.998 of it and measured again afterwards
        at 1.019 (docs/measurements.md#adapt)."""
        left = parent.latency_ms - self.target_ms * (1 - LAND)
        return min(self.delta_ms, max(left, self.delta_ms / 2))


def ranked(reference: float, proposals: list[Proposal], scores: list[float | None]) -> list[int]:
    """The proposals whose fine-tune finished, best Δscore / |ΔLatency| first (a score the
    higher the better: :meth:`Search.figure`), Δ against ``reference``. A gain counts as no
    loss (ties: the one that saves more): divided by the saving, a gain would rank the smallest
    cut first, and a cut that loses nothing and saves more is the better one."""
    done = [i for i, score in enumerate(scores) if score is not None]
    gains = {i: min(scores[i] - reference, 0.0) / proposals[i].saved_ms for i in done}
    return sorted(done, key=lambda i: (-gains[i], -proposals[i].saved_ms))


def alike(parent: TraceRow) -> Proposal:
    """The step's parent as a proposal of no move: fine-tuned in the batch of its proposals, the
    reference of their ΔTop-1. Fine-tuned alone before them, it held a whole round of the
    trainings (one worker of two on the bench's CPU busy, the other idle)."""
    return Proposal(None, REFERENCE, parent.edits, 0.0, 0)
