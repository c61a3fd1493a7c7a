"""A step's choice measured whole: taken only when it saves what the step needs beside its parent
and again beside the start, trimmed or cut deeper where its saving says so (faked services:
:mod:`tests.fake_search`)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from mnv3spec.adapt.choice import trim
from mnv3spec.adapt.proposal import Tuned
from mnv3spec.adapt.search import run_step, search
from mnv3spec.adapt.timing import Measured
from mnv3spec.errors import SearchError

from .fake_search import (
    COST,
    confirm,
    deep_exp_cut,
    finetune,
    latency_of,
    macs,
    searcher,
    spec_of,
    start,
)


def test_a_proposal_that_saves_nothing_measured_whole_is_not_taken():
    first = start()
    best = {}

    def measure(edits, parent):
        m = latency_of(edits, parent)
        if not best:  # the first measured (the best by score) turns out to save nothing
            best["edits"] = edits
            return Measured(m.parent_ms, 0.5, 0.0, 0.0, m.parent_ms, 0.01)
        return m

    rows = run_step(searcher(0.0, first.latency_ms * 0.01, measure=measure), [first], lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert chosen.edits != best["edits"] and chosen.measured
    refused = next(r for r in rows if r.edits == best["edits"])
    assert refused.measured and refused.d_ms == 0.0  # on the record, measured
    assert sum(r.measured for r in rows) == 2  # the rest only predicted
    noisy = lambda edits, parent: Measured(macs(edits), 0.5, 0, 0, macs(parent), 1e6)  # noqa: E731
    with pytest.raises(SearchError, match="noise"):
        run_step(searcher(0.0, first.latency_ms * 0.01, measure=noisy), [first], lambda: None)


def test_a_proposal_that_saves_well_short_of_the_step_measured_whole_is_not_taken():
    """Above its noise but at 40 % of what the step needs, under the half it must save (a bench
    took such a one: timed again, it was slower than its parent): the next by score is measured
    and taken."""
    first, delta = start(), start().latency_ms * 0.01
    short = {}

    def measure(edits, parent):
        m = latency_of(edits, parent)
        if not short:
            short["edits"] = edits
            return Measured(m.parent_ms - 0.4 * delta, 0.1, 0, 0, m.parent_ms, 0.1 * delta)
        return m

    rows = run_step(searcher(0.0, delta, measure=measure), [first], lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert chosen.edits != short["edits"] and first.latency_ms - chosen.latency_ms >= delta
    within = lambda e, p: Measured(macs(p) - 0.95 * delta, 0.1, 0, 0, macs(p), 0.1 * delta)  # noqa: E731
    rows = run_step(searcher(0.0, delta, measure=within), [first], lambda: None)
    assert sum(r.measured for r in rows) == 1  # 5 % short: the first is taken
    few = lambda e, p: Measured(macs(p) - 0.4 * delta, 0.1, 0, 0, macs(p), 0.1 * delta)  # noqa: E731
    with pytest.raises(SearchError, match=r"saved half of the .* ms the step needs") as e:
        run_step(searcher(0.0, delta, measure=few), [first], lambda: None)
    assert e.value.exit_code == 3 and "the best 5 by score were measured" in str(e.value)


def test_when_whole_networks_save_less_than_their_rows_say_the_best_is_cut_deeper():
    """Whole networks save 60 % of what their rows predict, and no proposal sized by its rows
    saves half the step's need (those saved at most 40 % of it): the best by score is cut deeper,
    sized from its measured saving, fine-tuned like the proposals and taken; where no depth
    saves the need, the search stops."""
    first, delta = start(), start().latency_ms * 0.01
    scale, tuned, batches = {}, [], []

    def measure(edits, parent):
        saved = scale.get("k", 0.6) * (macs(parent) - macs(edits))
        if any(edits == p.edits for p in tuned):  # sized by its rows: short of the need
            saved = min(saved, 0.4 * delta)
        return Measured(macs(parent) - saved, 0.1, 0, 0, macs(parent), 1e-4)

    def tune(step, props, parent, first=0):
        tuned.extend(props)
        batches.append(props)
        return finetune(step, props, parent, first)

    s = searcher(0.0, delta, tune=tune, measure=measure)
    rows = run_step(s, [first], lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert first.latency_ms - chosen.latency_ms >= delta  # confirmed: the exact saving
    step, after = batches[:2]  # the step's proposals, then the deeper cuts fine-tuned together
    deeper = next(p for p in after if p.edits == chosen.edits)
    same_move = [p for p in step if p.move == deeper.move]
    assert same_move and same_move[0].multiples < deeper.multiples
    scale["k"] = 0.01  # a cut saves almost nothing measured whole: no depth reaches the need
    with pytest.raises(SearchError, match="cut deeper"):
        run_step(searcher(0.0, delta, tune=tune, measure=measure), [first], lambda: None)


def test_of_the_deeper_cuts_the_step_takes_the_best_by_score_not_the_first():
    """A deeper cut is a new proposal whose cost only its fine-tune tells (a bench's step took
    exp bneck9 288→8, the first deeper cut that saved enough, at +0.18 held-out loss where its
    proposals had cost at most +0.03): every proposal measured is cut deeper, the cuts
    fine-tuned together, and the best per ms saved is taken — here the output widths, cut
    deeper, lose less than expansions."""
    first, delta = start(), start().latency_ms * 0.01
    row_sized, tuned = [], []

    def measure(edits, parent):  # sized by its rows, a proposal saves 40 % of the need
        saved = macs(parent) - macs(edits)
        if any(edits == p.edits for p in row_sized):
            saved = min(saved, 0.4 * delta)
        return Measured(macs(parent) - saved, 0.1, 0, 0, macs(parent), 1e-4)

    def tune(step, props, parent, first=0):
        if not row_sized:
            row_sized.extend(props)
            return finetune(step, props, parent, first)
        tuned.extend(props)  # cut deeper: expansions now lose 10 points, widths their 2
        cost = {"exp": 10.0, "out": COST["out"]}
        return [Tuned(parent.holdout_top1 - cost[p.move.kind], f"runs/{step}-{i}")
                for i, p in enumerate(props, first)]  # fmt: skip

    rows = run_step(searcher(0.0, delta, tune=tune, measure=measure), [first], lambda: None)
    kinds = {p.move.kind for p in tuned}
    assert kinds == {"exp", "out"} and len(tuned) >= 3  # every deeper cut that saves, together
    chosen = next(r for r in rows if r.chosen)
    assert chosen.edit.startswith("out") and chosen.edits in [p.edits for p in tuned]
    deeper = [r for r in rows if r.edits in [p.edits for p in tuned]]
    assert chosen.score == max(r.score for r in deeper)


def test_a_cut_that_saves_far_more_than_the_step_needs_is_trimmed_to_about_what_it_needs():
    deep, s = deep_exp_cut()
    parent, measured = start(), []

    def measure(edits, parent_edits):
        measured.append(edits)
        return latency_of(edits, parent_edits)

    s = dataclasses.replace(s, latency_of=measure)
    trimmed, m = trim(s, spec_of({}), parent, deep, latency_of(deep.edits, {}))
    assert 1 < trimmed.multiples < deep.multiples and trimmed.move == deep.move
    assert trimmed.edits == {"bneck3": {"exp": 72 - 8 * trimmed.multiples}}
    cut = parent.latency_ms - m.median_ms
    assert s.delta_ms <= cut < 2 * s.delta_ms and trimmed.saved_ms == cut
    assert 1 <= len(measured) <= 2  # each trim measured whole, at most TRIMS


def test_a_trim_that_falls_short_keeps_the_deep_cut():
    deep, s = deep_exp_cut()
    short = lambda edits, parent: Measured(macs(parent), 0.1, 0, 0, macs(parent), 0.01)  # noqa: E731
    s = dataclasses.replace(s, latency_of=short)  # every shallower cut measures no saving
    assert trim(s, spec_of({}), start(), deep, latency_of(deep.edits, {})) is None
    close = Measured(macs({}) - 1.4 * s.delta_ms, 0.1, 0, 0, macs({}), 0.01)
    assert trim(s, spec_of({}), start(), deep, close) is None  # within 1.5 × the need: kept


def test_a_step_takes_the_trim_fine_tuned_after_its_proposals_and_keeps_the_deep_cut_on_record():
    """Rows predicted to save a fifth of what they do: the step's cut, sized by them, is deep."""
    first = start()
    low = lambda edits, parent: (macs(parent) - macs(edits)) / 5  # noqa: E731
    s = dataclasses.replace(searcher(0.0, first.latency_ms * 0.01), saving_of=low)
    rows = run_step(s, [first], lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert chosen is rows[-1] and chosen.measured and chosen.run == f"runs/1-{len(rows) - 1}"
    deep = next(
        r for r in rows[:-1] if r.measured and r.edit.split()[:2] == chosen.edit.split()[:2]
    )
    assert not deep.chosen and deep.d_ms > chosen.d_ms >= s.delta_ms


def test_a_trim_that_does_not_hold_beside_the_start_is_not_fine_tuned_and_the_deep_cut_stands():
    first, again, tuned = start(), [], []
    low = lambda edits, parent: (macs(parent) - macs(edits)) / 5  # noqa: E731

    def second_look(edits):  # the deep cut holds; its trim, timed again, saves nothing
        again.append(edits)
        return latency_of({}, {}) if len(again) > 1 else confirm(edits)

    def tune(step, props, parent, first=0):
        tuned.extend(props)
        return finetune(step, props, parent, first)

    s = searcher(0.0, first.latency_ms * 0.01, tune=tune, again=second_look)
    rows = run_step(dataclasses.replace(s, saving_of=low), [first], lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert len(again) == 2 and chosen.edits == again[0] != again[1]
    assert again[1] not in [p.edits for p in tuned]  # the trim was not fine-tuned
    assert chosen.latency_ms == pytest.approx(macs(chosen.edits))


def test_a_chosen_network_keeps_its_latency_timed_again_beside_the_start():
    """The measurement that took a proposal is biased towards savings (the step took the one
    that measured best); the path keeps a second one, beside the start, not a chain of ratios."""
    first = start()

    def lucky(edits, parent):  # every measurement beside a parent claims twice the saving
        m = latency_of(edits, parent)
        return Measured(m.parent_ms - 2 * (m.parent_ms - m.median_ms), 0.0, 0, 0, m.parent_ms)

    again = []

    def honest(edits):
        again.append(edits)
        return confirm(edits)

    s = searcher(0.0, first.latency_ms * 0.01, measure=lucky, again=honest)
    rows = run_step(s, [first], lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert again == [chosen.edits]
    assert chosen.latency_ms == pytest.approx(macs(chosen.edits))  # the honest figure


def test_the_path_keeps_a_third_timing_of_the_taken_network_that_chose_nothing():
    """The figure beside the start that passed a proposal was the luckiest of those measured
    (each a few % off: a load's luck); with ``record``, the taken network is timed once more and
    that figure goes on the path: the trace's chosen row, the next step's parent, the target
    check. The proposals passed over keep the figures that refused them."""
    first, recorded = start(), []

    def lucky(edits):  # beside the start, every proposal seems to save a tenth more
        m = confirm(edits)
        return dataclasses.replace(m, median_ms=m.median_ms - 0.1 * (m.parent_ms - m.median_ms))

    def record(edits):  # the honest figure: 0.3 % above the cost
        recorded.append(edits)
        return dataclasses.replace(confirm(edits), median_ms=macs(edits) * 1.003)

    s = dataclasses.replace(
        searcher(first.latency_ms * 0.8, first.latency_ms * 0.01, again=lucky), record=record
    )
    steps = []
    last = search(s, [first], steps.append)
    chosen = [next(r for r in rows if r.chosen) for rows in steps]
    assert len(chosen) > 2
    assert recorded == [r.edits for r in chosen]  # once a step, the taken network only
    assert all(r.latency_ms == pytest.approx(macs(r.edits) * 1.003) for r in chosen)
    assert last.latency_ms <= s.target_ms < chosen[-2].latency_ms  # the check on the record
    for before, rows in zip(chosen, steps[1:], strict=False):  # each parent its record
        assert all(r.d_ms == pytest.approx(before.latency_ms - r.latency_ms) for r in rows)


def test_a_proposal_whose_saving_does_not_hold_beside_the_start_is_passed_over():
    """The pair beside the parent says the best proposal saves enough; timed again beside the
    start it saves nothing (its rounds were lucky): the next is measured and taken, and the trace
    shows the first one's second figure. When none holds, the search stops, naming both."""
    first, again = start(), []

    def second_look(edits):  # the first proposal timed again: as slow as its parent
        again.append(edits)
        return latency_of({}, {}) if len(again) == 1 else confirm(edits)

    s = searcher(0.0, first.latency_ms * 0.01, again=second_look)
    rows = run_step(s, [first], lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert len(again) == 2 and chosen.edits == again[1] != again[0]
    passed = next(r for r in rows if r.edits == again[0])
    assert passed.measured and not passed.chosen and passed.d_ms == pytest.approx(0.0)
    assert chosen.latency_ms == pytest.approx(macs(chosen.edits))
    never = searcher(0.0, first.latency_ms * 0.01, again=lambda edits: latency_of({}, {}))
    with pytest.raises(SearchError, match="beside its parent and again beside the start") as e:
        run_step(never, [first], lambda: None)
    assert e.value.exit_code == 3


def test_a_proposal_holds_against_its_parent_timed_in_this_process_not_against_its_record():
    """The path's figure is timed in a process of its own, where networks ran faster than in
    the search's: here each record is 6 % under the search's own timing. A proposal timed again
    beside the start is held against its parent timed the same way; against the parent's record
    none of these, each sized to save 1 %, would ever hold after the first step."""
    first = start()

    def record(edits):  # a new process: 6 % faster than the search's own
        return dataclasses.replace(confirm(edits), median_ms=macs(edits) * 0.94)

    s = dataclasses.replace(
        searcher(first.latency_ms * 0.6, first.latency_ms * 0.01), record=record
    )
    steps = []
    last = search(s, [first], steps.append)
    chosen = [next(r for r in rows if r.chosen) for rows in steps]
    assert len(chosen) > 2 and last.latency_ms <= s.target_ms
    assert all(r.latency_ms == pytest.approx(macs(r.edits) * 0.94) for r in chosen)
    saved = [macs(a.edits) - macs(b.edits) for a, b in itertools.pairwise(chosen)]
    assert all(ms >= s.delta_ms / 2 for ms in saved)
    # against the record, a step had to save 6 % of its parent more than that: these did not
    took = [ms for a, ms in zip(chosen, saved, strict=False) if ms < 0.06 * macs(a.edits)]
    assert len(took) >= 2
