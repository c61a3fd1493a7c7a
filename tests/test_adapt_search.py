"""The search's loop with its services faked (:mod:`tests.fake_search`): proposals ranked by
Δscore / |ΔLatency| against the parent fine-tuned alike, screened by inherited figures, steps
until the target, and where it stops."""

from __future__ import annotations

import dataclasses

import pytest

from mnv3spec.adapt import moves as mv
from mnv3spec.adapt.proposal import REFERENCE, Proposal, Tuned, ranked
from mnv3spec.adapt.search import NoProposal, finer_step, reached, run_step, search
from mnv3spec.adapt.timing import Measured
from mnv3spec.adapt.trace import TraceRow
from mnv3spec.errors import SearchError

from . import fake_search
from .fake_search import COST, finetune, inherited, latency_of, searcher, start


def test_choice_is_the_best_gain_per_ms():
    m = mv.Move("exp", ("bneck1",))
    props = [Proposal(m, "a", {}, d) for d in (1.0, 4.0)]
    assert ranked(50.0, props, [49.0, 47.0]) == [1, 0]  # -1/1 < -3/4
    assert ranked(50.0, props, [49.5, 47.0]) == [0, 1]  # -0.5/1 > -3/4
    assert ranked(50.0, props, [None, 10.0]) == [1]  # a failed fine-tune is never chosen
    assert ranked(52.0, props, [51.0, 49.0]) == [1, 0]  # against the reference: -1/1 < -3/4


def test_a_gain_counts_as_no_loss_so_the_cut_that_saves_more_ranks_first():
    m = mv.Move("exp", ("bneck1",))
    props = [Proposal(m, "a", {}, d) for d in (1.0, 4.0)]
    assert ranked(50.0, props, [51.0, 51.0]) == [1, 0]  # +1/1 would have ranked the smaller cut
    assert ranked(50.0, props, [53.0, 50.5]) == [1, 0]  # a larger gain is noise, not a reason
    assert ranked(50.0, props, [49.9, 50.0]) == [1, 0]  # any loss ranks below no loss


def test_proposals_are_compared_with_their_parent_fine_tuned_alike():
    """The fine-tune itself lifts a parent's top-1 (a bench's by 4.5 points at a tenth of the
    learning rate): against the parent's recorded top-1 every proposal gained, and the ratio
    ranked the smallest cut first; against the parent fine-tuned alike each loses its cost."""
    lift, batches = 4.5, []

    def tune(step, proposals, parent, first=0):
        batches.append(proposals)
        return [t._replace(top1=t.top1 + lift) for t in finetune(step, proposals, parent, first)]

    first = start()
    s = dataclasses.replace(searcher(0.0, first.latency_ms * 0.01, tune=tune), reference=True)
    rows = run_step(s, [first], lambda: None)
    ref, *proposals = rows
    (batch,) = batches  # the parent in the batch of its proposals: no round of its own
    assert batch[0].move is None and batch[0].edits == {} and len(batch) == 1 + len(proposals)
    assert (ref.edit, ref.chosen, ref.step, ref.run) == (REFERENCE, False, 1, "runs/1-0")
    assert ref.holdout_top1 == 50.0 + lift and ref.latency_ms == first.latency_ms
    assert {r.d_top1 for r in proposals} == {-COST[k] for k in ("exp", "out")}
    chosen = next(r for r in proposals if r.chosen)
    assert chosen.edit.startswith("exp")  # the cheaper kind, as without the lift

    def parent_fails(step, proposals, parent, first=0):
        return [t._replace(top1=None) if p.move is None else t for p, t in
                zip(proposals, finetune(step, proposals, parent, first), strict=True)]  # fmt: skip

    failed = dataclasses.replace(s, finetune=parent_fails)
    with pytest.raises(SearchError, match=r"the parent.s own fine-tune.*failed"):
        run_step(failed, [first], lambda: None)


def test_the_held_out_loss_ranks_the_proposals_where_top1_is_noise():
    """On a small held-out set top-1 moves by chance: here the out cuts read a tenth of a point
    above their parent while their loss rose 0.2, the exp cuts' 0.01. The loss (the default)
    takes an exp cut; top-1 (the paper's) an out cut. Each row keeps both figures."""
    loss_of = {"exp": 0.01, "out": 0.2}

    def tune(step, proposals, parent, first=0):
        return [Tuned(parent.holdout_top1 + (0.1 if p.move.kind == "out" else -0.1), f"runs/{i}",
                      parent.holdout_loss + loss_of[p.move.kind]) for i, p in
                enumerate(proposals, first)]  # fmt: skip

    first = dataclasses.replace(start(), holdout_loss=0.5)
    by_loss = dataclasses.replace(searcher(0.0, first.latency_ms * 0.01, tune=tune), score="loss")
    rows = run_step(by_loss, [first], lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert chosen.edit.startswith("exp")
    assert chosen.holdout_loss == pytest.approx(0.51) and chosen.d_loss == pytest.approx(0.01)
    assert chosen.score == pytest.approx(-0.01 / chosen.d_ms)
    assert {round(r.d_top1, 6) for r in rows} == {0.1, -0.1}
    by_top1 = dataclasses.replace(by_loss, score="top1")
    chosen = next(r for r in run_step(by_top1, [first], lambda: None) if r.chosen)
    assert chosen.edit.startswith("out") and chosen.score == pytest.approx(0.1 / chosen.d_ms)


def test_a_failed_fine_tune_is_passed_over_and_the_search_goes_on():
    def tune(step, proposals, parent, first=0):
        scored = finetune(step, proposals, parent, first)
        cheapest = max(range(len(proposals)), key=lambda i: scored[i].top1)
        return [t._replace(top1=None) if i == cheapest else t for i, t in enumerate(scored)]

    first = start()
    rows = run_step(searcher(0.0, first.latency_ms * 0.01, tune=tune), [first], lambda: None)
    failed = [r for r in rows if r.holdout_top1 == 0.0]
    assert len(failed) == 1 and not failed[0].chosen
    assert sum(r.chosen for r in rows) == 1

    def everyone_fails(step, props, parent, first=0):
        return [Tuned(None, "runs/x") for _ in props]

    with pytest.raises(SearchError, match="every proposal's fine-tune failed"):
        run_step(searcher(0.0, first.latency_ms * 0.01, tune=everyone_fails), [first], lambda: None)


def test_search_stops_at_the_target_and_prefers_cheap_edits():
    first = start()
    target = first.latency_ms * 0.85
    steps = []
    last = search(searcher(target, first.latency_ms * 0.01), [first], steps.append)
    assert last.latency_ms <= target < first.latency_ms
    assert all(sum(r.chosen for r in rows) == 1 for rows in steps)
    assert [r.step for r in steps[-1]] == [len(steps)] * len(steps[-1])
    assert all(r.edit.startswith("exp") for rows in steps for r in rows if r.chosen)


def test_an_unreachable_target_stops_with_exit_3():
    with pytest.raises(SearchError) as e:
        search(searcher(0.001, 1e-6), [start()], lambda rows: None)
    assert e.value.exit_code == 3
    assert "stopped at" in str(e.value)


def test_no_proposal_saves_delta_stops_at_once():
    with pytest.raises(SearchError):
        run_step(searcher(0.0, 1e6), [start()], lambda: None)


def _most_one_move_saves() -> float:
    """The most any single move saves from the start, cut as deep as its row allows."""
    spec, most = fake_search.spec_of({}), 0.0
    for move in mv.moves(spec, ()):
        k = 1
        while (found := mv.shrunk(spec, {}, move, k)) is not None:
            most, k = max(most, fake_search.macs({}) - fake_search.macs(found[0])), k + 1
    return most


def _most_short_of_the_floor() -> float:
    """The most any single move saves from the start, cut short of leaving its row one
    divisor."""
    spec, most = fake_search.spec_of({}), 0.0
    for move in mv.moves(spec, ()):
        k = 1
        while mv.shrunk(spec, {}, move, k + 1) is not None:  # k is not the deepest
            found = mv.shrunk(spec, {}, move, k)
            most, k = max(most, fake_search.macs({}) - fake_search.macs(found[0])), k + 1
    return most


def _floor(spec, row: TraceRow) -> bool:
    """Whether ``row``'s edit left its row one divisor (as "exp bneck3 72→8" says)."""
    return int(row.edit.split("→")[-1]) == spec.divisor


def test_with_floors_last_a_step_halves_delta_before_it_cuts_a_row_to_one_divisor():
    first, most, short = start(), _most_one_move_saves(), _most_short_of_the_floor()
    spec = fake_search.spec_of({})
    assert short < most  # the fake's deepest cuts save the most
    s = searcher(0.0, most)  # δ: only the deepest cut of the best move saves it
    chosen = next(r for r in finer_step(s, [first], lambda: None) if r.chosen)
    assert _floor(spec, chosen)  # the paper's rule: the smallest cut that saves δ
    said = []
    s = dataclasses.replace(s, floors_last=True, say=said.append)
    chosen = next(r for r in finer_step(s, [first], lambda: None) if r.chosen)
    assert not _floor(spec, chosen) and first.latency_ms - chosen.latency_ms >= most / 4
    assert said[0] == (
        f"step 1: no move's rows save {most:.3g} ms without cutting a row to one divisor; "
        f"proposing again for {most / 2:.3g} ms (δ halved to {most / 2:.3g} ms)"
    )
    middle = (short + most) / 2  # at δ / 4 only cuts to one divisor save it: those, then
    said.clear()
    s = dataclasses.replace(s, delta_ms=4 * middle)
    chosen = next(r for r in finer_step(s, [first], lambda: None) if r.chosen)
    assert _floor(spec, chosen) and first.latency_ms - chosen.latency_ms >= middle
    assert len(said) == 3 and said[-1] == (
        f"step 1: only cuts of a row to one divisor save {middle:.3g} ms; proposing those"
    )


def test_where_no_move_saves_delta_a_step_halves_it_down_to_a_quarter():
    first, most = start(), _most_one_move_saves()  # target 0: a step needs δ itself
    for delta, halved in ((1.5 * most, 1), (3.5 * most, 2)):  # 0.75×, 0.875×: saved
        said = []
        s = dataclasses.replace(searcher(0.0, delta), say=said.append)
        rows = finer_step(s, [first], lambda: None)
        chosen = next(r for r in rows if r.chosen)
        assert delta / 8 <= first.latency_ms - chosen.latency_ms <= most
        assert said == [
            f"step 1: no move's rows save {delta / 2**k:.3g} ms; proposing again for "
            f"{delta / 2 ** (k + 1):.3g} ms (δ halved to {delta / 2 ** (k + 1):.3g} ms)"
            for k in range(halved)
        ]
    with pytest.raises(NoProposal, match="no proposal lowers the latency by") as e:
        finer_step(searcher(0.0, 5 * most), [first], lambda: None)  # a quarter: 1.25×
    assert e.value.exit_code == 3
    assert f"by {1.25 * most:.3g} ms" in str(e.value)  # the finest δ it tried


def test_at_most_k_a_step_fine_tunes_the_k_best_by_their_inherited_figures():
    first, tuned, screens = start(), [], []

    def tune(step, props, parent, first=0):
        tuned.extend(props)
        return finetune(step, props, parent, first)

    def screen(props, parent):
        screens.append(props)
        return inherited(props, parent)

    s = searcher(0.0, first.latency_ms * 0.01, tune=tune)
    s = dataclasses.replace(s, screen=screen, reference=True)
    everyone = run_step(s, [first], lambda: None)  # no at_most: every proposal, no screen
    assert not screens and all(r.tuned for r in everyone)
    proposed = len(tuned) - 1
    tuned.clear()
    rows = run_step(dataclasses.replace(s, at_most=2), [first], lambda: None)
    assert len(screens) == 1 and screens[0][0].move is None  # the parent itself screened first
    assert len(screens[0]) == proposed + 1 and len(tuned) == 3  # the parent and two
    kept = [r for r in rows if r.tuned and r.edit != REFERENCE]
    passed = [r for r in rows if not r.tuned]
    assert len(kept) == 2 and len(passed) == proposed - 2
    assert all(r.run == "" and not r.measured and not r.chosen for r in passed)
    assert min(r.score for r in kept) >= max(r.score for r in passed)  # the best two kept
    assert all(r.d_top1 == -2 * COST[r.edit.split()[0]] for r in passed)  # inherited figures
    assert next(r for r in rows if r.chosen) in kept
    screens.clear()
    wide = run_step(dataclasses.replace(s, at_most=proposed), [first], lambda: None)
    assert not screens and all(r.tuned for r in wide)  # as many as proposed: nothing screened


def test_screened_out_proposals_are_fine_tuned_before_any_is_cut_deeper():
    """With at_most, when none of those fine-tuned saves what the step needs measured whole, the
    next at_most screened out (best first by their inherited figures) are fine-tuned and
    measured before any is cut deeper: a deeper cut, sized from a small whole saving, tends to
    the deepest its row allows (the bench's run 16 took exp bneck6 240→8 while five proposals
    sized by their rows were never fine-tuned)."""
    first, batches, screens = start(), [], []
    delta = first.latency_ms * 0.01

    def measure(edits, parent):  # every expansion cut saves 40 % of the need measured whole
        m = latency_of(edits, parent)
        short = any("exp" in row and "out" not in row for row in edits.values())
        saved = 0.4 * delta if short else m.parent_ms - m.median_ms
        return Measured(m.parent_ms - saved, 0.0, 0, 0, m.parent_ms)

    def tune(step, props, parent, first=0):
        batches.append(props)
        return finetune(step, props, parent, first)

    def screen(props, parent):  # before any fine-tune, a width cut looks far the worse
        screens.append(props[1:])
        cost = {None: 0.0, "exp": 0.1, "out": 50.0}
        return [Tuned(parent.holdout_top1 - cost[p.move and p.move.kind], "") for p in props]

    s = searcher(0.0, delta, tune=tune, measure=measure, again=lambda e: measure(e, {}))
    s = dataclasses.replace(s, screen=screen, reference=True, at_most=2)
    rows = run_step(s, [first], lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert chosen.edit.startswith("out")  # a width cut, fine-tuned in a later batch
    assert len(batches) >= 2 and all(p.move.kind == "exp" for p in batches[0][1:])
    proposed = [p.edits for p in screens[0]]
    assert all(p.edits in proposed for b in batches for p in b[1 if b is batches[0] else 0 :])
    assert all(r.tuned == (r.run != "") for r in rows)  # those never fine-tuned: no run


def test_a_continued_search_numbers_its_steps_on(capsys):
    """A search continued after step 2 shows "step 3" (it showed "step 1" while training s03-*),
    and a line said during a step stands on its own (it ran on after the bar's text)."""
    from mnv3spec.adapt.steps import StepBar

    bar = StepBar(2)
    bar()
    bar.write("[1/2] training s03-parent")  # a line while the bar is open: above it, on its own
    bar.close()
    bar()
    bar.close()
    err = capsys.readouterr().err
    assert "step 3: moves timed" in err and "step 4: moves timed" in err
    assert "step 1:" not in err
    lines = [line.split("\r")[-1].strip() for line in err.split("\n")]
    assert "[1/2] training s03-parent" in lines


def test_a_path_gives_each_target_it_reached_its_first_network_that_meets_it():
    path = [
        dataclasses.replace(start(), step=i, latency_ms=ms) for i, ms in enumerate([10, 9, 8, 7])
    ]
    assert reached(path, 8.5).step == 2 and reached(path, 9).step == 1  # at the target meets it
    assert reached(path, 6.9) is None  # not reached: the search goes on from the last
    assert reached(path[:1], 10) is None  # the start is no result, even at the target
