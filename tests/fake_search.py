"""The search's services faked: latency is the multiply-adds (in millions) of the deployed
network, predicted and measured alike unless a test says otherwise, and the fine-tune's held-out
top-1 a fixed cost per kind of edit. Shared by the adapt tests that need no training."""

from __future__ import annotations

from mnv3spec.adapt import moves as mv
from mnv3spec.adapt.proposal import Proposal, Search, Tuned
from mnv3spec.adapt.timing import Measured
from mnv3spec.adapt.trace import TraceRow
from mnv3spec.model.builder import build
from mnv3spec.model.summary import summarize
from mnv3spec.spec.edits import from_rows
from mnv3spec.spec.load import load_spec

from .conftest import ROOT

TINY = str(ROOT / "tests" / "data" / "tiny_phone.yaml")

COST = {"exp": 0.5, "out": 2.0, "kernel": 1.0, "se": 1.0}  # held-out points an edit loses


def spec_of(edits):
    return load_spec(TINY, from_rows(edits))


def macs(edits) -> float:
    return summarize(build(spec_of(edits), device="meta")).macs / 1e6


def latency_of(edits, parent) -> Measured:
    return Measured(macs(edits), 0.0, 0.0, 0.0, macs(parent))


def saving_of(edits, parent) -> float:
    return macs(parent) - macs(edits)


def finetune(step, proposals, parent, first=0):
    """Each proposal loses its kind's cost; the parent itself (no move) loses nothing."""
    return [Tuned(parent.holdout_top1 - (COST[p.move.kind] if p.move else 0.0), f"runs/{step}-{i}")
            for i, p in enumerate(proposals, first)]  # fmt: skip


def start() -> TraceRow:
    ms = macs({})
    return TraceRow(0, "start", True, ms, 0, 0, 50.0, 0, 0, 0, "runs/start", {})


def confirm(edits) -> Measured:
    return latency_of(edits, {})


def searcher(target, delta, extra=(), tune=finetune, measure=latency_of, again=confirm):
    moves = lambda s: mv.moves(s, extra)  # noqa: E731
    return Search(
        target, delta, spec_of, moves, saving_of, measure, tune, again, macs({}), score="top1"
    )


def counted(saving):
    """``saving`` (a search's saving_of), and the list of the edits it was asked about."""
    asked = []

    def saving_of(edits, parent):
        asked.append(edits)
        return saving(edits, parent)

    return saving_of, asked


def deep_exp_cut(multiples=6):
    """bneck3's expansion cut ``multiples`` divisors deep, and a search whose step needs a third
    of what that saves."""
    move = mv.Move("exp", ("bneck3",))
    edits, words = mv.shrunk(spec_of({}), {}, move, multiples)
    saved = macs({}) - macs(edits)
    return Proposal(move, words, edits, saved / 3, multiples), searcher(0.0, saved / 3)


def inherited(props, parent):
    """A screen: each proposal's held-out figures before any fine-tune, twice its kind's cost."""
    return [Tuned(parent.holdout_top1 - (2 * COST[p.move.kind] if p.move else 0.0), "")
            for p in props]  # fmt: skip
