"""The search's logic with its services faked: latency is the multiply-adds (in millions) of the
deployed network, predicted and measured alike unless a test says otherwise, and the
fine-tune's held-out top-1 a fixed cost per kind of edit."""

from __future__ import annotations

import dataclasses

import pytest

from mnv3spec.adapt import moves as mv
from mnv3spec.adapt.search import (
    LOOKUPS,
    REFERENCE,
    Proposal,
    Search,
    Tuned,
    ranked,
    reached,
    run_step,
    search,
    smallest_step,
    trim,
)
from mnv3spec.adapt.timing import Measured
from mnv3spec.adapt.trace import TraceRow
from mnv3spec.errors import SearchError, UserError
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


def test_moves_are_exp_per_bneck_row_and_out_per_residual_group():
    spec = load_spec(TINY)
    assert mv.groups(spec) == [("stem", "bneck1"), ("bneck2", "bneck3")]
    labels = [m.label for m in mv.moves(spec)]
    assert labels == ["out stem+1", "out bneck2+1", "exp bneck1", "exp bneck2", "exp bneck3"]
    extra = [m.label for m in mv.moves(spec, ("kernel", "se"))]
    assert {"kernel bneck2", "kernel bneck3", "se bneck1", "se bneck3"} <= set(extra)


def test_a_group_shrinks_together_in_multiples_of_the_divisor():
    spec = load_spec(TINY)
    edits, words = mv.shrunk(spec, {}, mv.Move("out", ("bneck2", "bneck3")), 1)
    assert edits == {"bneck2": {"out": 16}, "bneck3": {"out": 16}}
    assert words == "out bneck2+1 24→16"
    assert mv.shrunk(spec, {}, mv.Move("out", ("bneck2", "bneck3")), 3) is None  # below 8
    child = spec_of(edits)
    assert mv.same_layers(spec, child)  # the residual of bneck3 is kept
    plans = {r.name: r for r in summarize(build(child, device="meta")).rows}
    assert plans["last_conv"].in_shape[0] == 16  # the consumer follows


def test_groups_of_the_deployed_network_merge_with_the_trained_ones():
    small = load_spec("small")
    assert ("stem", "bneck1") in mv.groups(small)
    assert ("stem", "bneck1") in mv.groups(load_spec("small", si=2), small)


def counted(saving):
    """``saving`` (a search's saving_of), and the list of the edits it was asked about."""
    asked = []

    def saving_of(edits, parent):
        asked.append(edits)
        return saving(edits, parent)

    return saving_of, asked


def test_the_step_is_the_smallest_that_saves_delta():
    s, parent = searcher(0, 0.0), start()
    spec = spec_of({})
    move = mv.Move("exp", ("bneck3",))
    one = smallest_step(s, spec, parent, move)
    assert one.edits == {"bneck3": {"exp": 64}}
    saved = one.saved_ms
    assert saved == parent.latency_ms - macs(one.edits)
    saving, asked = counted(saving_of)
    s = dataclasses.replace(searcher(0, saved * 2.5), saving_of=saving)
    three = smallest_step(s, spec, parent, move)
    assert three.edits == {"bneck3": {"exp": 48}} and three.multiples == 3  # doubling: 4
    # the deepest (exp 8), the line from no cut to it (48), then 56, which falls short
    assert [e["bneck3"]["exp"] for e in asked] == [8, 48, 56]


def test_a_move_that_cannot_save_what_is_needed_is_dropped_after_one_lookup():
    saving, asked = counted(saving_of)
    s = dataclasses.replace(searcher(0, 1e6), saving_of=saving)
    assert smallest_step(s, spec_of({}), start(), mv.Move("exp", ("bneck3",))) is None
    assert asked == [{"bneck3": {"exp": 8}}]  # the deepest


def test_savings_that_grow_faster_than_the_cut_are_bracketed_to_the_smallest_that_saves():
    """A saving that grows with the square of the cut (the line between the bracket's ends
    aims short, then the bracket narrows): 0.245 needed of 0.01, 0.04 ... 0.64 → five divisors."""
    depth = lambda edits: (72 - edits.get("bneck3", {}).get("exp", 72)) // 8  # noqa: E731
    saving, asked = counted(lambda edits, parent: depth(edits) ** 2 / 100)
    s = dataclasses.replace(searcher(0, 0.245), saving_of=saving)
    found = smallest_step(s, spec_of({}), start(), mv.Move("exp", ("bneck3",)))
    assert found.multiples == 5 and found.saved_ms == 0.25
    assert [depth(e) for e in asked] == [8, 4, 5]
    assert len(asked) <= LOOKUPS


def test_an_expansion_never_appears_or_goes():
    s, spec = searcher(0, 0.0), spec_of({})
    found = smallest_step(s, spec, start(), mv.Move("exp", ("bneck2",)))
    assert found.edits["bneck2"]["exp"] != 16  # bneck2's input width: its expansion would go


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
    rows = run_step(s, first, lambda: None)
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
        run_step(failed, first, lambda: None)


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
    rows = run_step(by_loss, first, lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert chosen.edit.startswith("exp")
    assert chosen.holdout_loss == pytest.approx(0.51) and chosen.d_loss == pytest.approx(0.01)
    assert chosen.score == pytest.approx(-0.01 / chosen.d_ms)
    assert {round(r.d_top1, 6) for r in rows} == {0.1, -0.1}
    by_top1 = dataclasses.replace(by_loss, score="top1")
    chosen = next(r for r in run_step(by_top1, first, lambda: None) if r.chosen)
    assert chosen.edit.startswith("out") and chosen.score == pytest.approx(0.1 / chosen.d_ms)


def test_a_failed_fine_tune_is_passed_over_and_the_search_goes_on():
    def tune(step, proposals, parent, first=0):
        scored = finetune(step, proposals, parent, first)
        cheapest = max(range(len(proposals)), key=lambda i: scored[i].top1)
        return [t._replace(top1=None) if i == cheapest else t for i, t in enumerate(scored)]

    first = start()
    rows = run_step(searcher(0.0, first.latency_ms * 0.01, tune=tune), first, lambda: None)
    failed = [r for r in rows if r.holdout_top1 == 0.0]
    assert len(failed) == 1 and not failed[0].chosen
    assert sum(r.chosen for r in rows) == 1

    def everyone_fails(step, props, parent, first=0):
        return [Tuned(None, "runs/x") for _ in props]

    with pytest.raises(SearchError, match="every proposal's fine-tune failed"):
        run_step(searcher(0.0, first.latency_ms * 0.01, tune=everyone_fails), first, lambda: None)


def test_a_proposal_that_saves_nothing_measured_whole_is_not_taken():
    first = start()
    best = {}

    def measure(edits, parent):
        m = latency_of(edits, parent)
        if not best:  # the first measured (the best by score) turns out to save nothing
            best["edits"] = edits
            return Measured(m.parent_ms, 0.5, 0.0, 0.0, m.parent_ms, 0.01)
        return m

    rows = run_step(searcher(0.0, first.latency_ms * 0.01, measure=measure), first, lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert chosen.edits != best["edits"] and chosen.measured
    refused = next(r for r in rows if r.edits == best["edits"])
    assert refused.measured and refused.d_ms == 0.0  # on the record, measured
    assert sum(r.measured for r in rows) == 2  # the rest only predicted
    noisy = lambda edits, parent: Measured(macs(edits), 0.5, 0, 0, macs(parent), 1e6)  # noqa: E731
    with pytest.raises(SearchError, match="noise"):
        run_step(searcher(0.0, first.latency_ms * 0.01, measure=noisy), first, lambda: None)


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

    rows = run_step(searcher(0.0, delta, measure=measure), first, lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert chosen.edits != short["edits"] and first.latency_ms - chosen.latency_ms >= delta
    within = lambda e, p: Measured(macs(p) - 0.95 * delta, 0.1, 0, 0, macs(p), 0.1 * delta)  # noqa: E731
    rows = run_step(searcher(0.0, delta, measure=within), first, lambda: None)
    assert sum(r.measured for r in rows) == 1  # 5 % short: the first is taken
    few = lambda e, p: Measured(macs(p) - 0.4 * delta, 0.1, 0, 0, macs(p), 0.1 * delta)  # noqa: E731
    with pytest.raises(SearchError, match=r"saved half of the .* ms the step needs") as e:
        run_step(searcher(0.0, delta, measure=few), first, lambda: None)
    assert e.value.exit_code == 3 and "the best 5 by score were measured" in str(e.value)


def test_when_whole_networks_save_less_than_their_rows_say_the_best_is_cut_deeper():
    """Whole networks save 60 % of what their rows predict, and no proposal sized by its rows
    saves half the step's need (those saved at most 40 % of it): the best by score is cut deeper,
    sized from its measured saving, fine-tuned like the proposals and taken; where no depth
    saves the need, the search stops."""
    first, delta = start(), start().latency_ms * 0.01
    scale, tuned = {}, []

    def measure(edits, parent):
        saved = scale.get("k", 0.6) * (macs(parent) - macs(edits))
        if any(edits == p.edits for p in tuned):  # sized by its rows: short of the need
            saved = min(saved, 0.4 * delta)
        return Measured(macs(parent) - saved, 0.1, 0, 0, macs(parent), 1e-4)

    def tune(step, props, parent, first=0):
        tuned.extend(props)
        return finetune(step, props, parent, first)

    s = searcher(0.0, delta, tune=tune, measure=measure)
    rows = run_step(s, first, lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert first.latency_ms - chosen.latency_ms >= delta  # confirmed: the exact saving
    deeper = tuned[-1]  # fine-tuned after the step's batch
    assert chosen.edits == deeper.edits and deeper.multiples > 1
    same_move = [p for p in tuned[1:-1] if p.move == deeper.move]
    assert same_move and same_move[0].multiples < deeper.multiples
    scale["k"] = 0.01  # a cut saves almost nothing measured whole: no depth reaches the need
    with pytest.raises(SearchError, match="cut deeper"):
        run_step(searcher(0.0, delta, tune=tune, measure=measure), first, lambda: None)


def deep_exp_cut(multiples=6):
    """bneck3's expansion cut ``multiples`` divisors deep, and a search whose step needs a third
    of what that saves."""
    move = mv.Move("exp", ("bneck3",))
    edits, words = mv.shrunk(spec_of({}), {}, move, multiples)
    saved = macs({}) - macs(edits)
    return Proposal(move, words, edits, saved / 3, multiples), searcher(0.0, saved / 3)


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
    rows = run_step(s, first, lambda: None)
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
    rows = run_step(dataclasses.replace(s, saving_of=low), first, lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert len(again) == 2 and chosen.edits == again[0] != again[1]
    assert again[1] not in [p.edits for p in tuned]  # the trim was not fine-tuned
    assert chosen.latency_ms == pytest.approx(macs(chosen.edits))


def test_the_noise_of_a_saving_is_that_of_its_rounds_not_of_either_network():
    from mnv3spec.adapt.timing import saving_noise

    drift = [1.0 + i for i in range(100)]  # a load that rises through the rounds
    parent = [t + 0.5 for t in drift]
    child = [t + (0.01 if i % 2 else -0.01) for i, t in enumerate(drift)]
    noise = saving_noise(parent, child)
    assert noise < 0.01  # the child's own spread is 50 ms; the saving, 0.5 ± 0.01 ms, is clear
    # IQR of the differences 1.35 ms is σ 1 ms; twice the standard error of their median over
    # 100 rounds is 2 × 1.25 / 10 = 0.25 ms
    spread = [0.5 + 1.35 * (i / 99 - 0.5) * 2 for i in range(100)]
    assert saving_noise([s for s in spread], [0.0] * 100) == pytest.approx(0.25, rel=0.03)


def test_the_last_step_asks_only_for_what_is_left_so_the_result_can_land_under_the_target():
    first = start()
    delta = first.latency_ms * 0.2
    target = first.latency_ms - 0.5 * delta  # half a step below the start
    steps = []
    last = search(searcher(target, delta), first, steps.append)
    assert len(steps) == 1 and last.latency_ms <= target
    saved = [r.d_ms for r in steps[0]]
    assert all(d >= first.latency_ms - target for d in saved)
    assert any(d < delta for d in saved)  # sized to what was left: less than a full δ


def test_the_last_step_asks_for_half_a_step_at_least_so_its_saving_is_not_lost_in_noise():
    first = start()
    delta = first.latency_ms * 0.2
    target = first.latency_ms - 0.05 * delta  # a twentieth of a step left
    steps = []
    last = search(searcher(target, delta), first, steps.append)
    assert len(steps) == 1 and last.latency_ms <= target - 0.45 * delta
    assert all(r.d_ms >= delta / 2 for r in steps[0])
    assert any(r.d_ms < delta for r in steps[0])


def test_search_stops_at_the_target_and_prefers_cheap_edits():
    first = start()
    target = first.latency_ms * 0.85
    steps = []
    last = search(searcher(target, first.latency_ms * 0.01), first, steps.append)
    assert last.latency_ms <= target < first.latency_ms
    assert all(sum(r.chosen for r in rows) == 1 for rows in steps)
    assert [r.step for r in steps[-1]] == [len(steps)] * len(steps[-1])
    assert all(r.edit.startswith("exp") for rows in steps for r in rows if r.chosen)


def test_an_unreachable_target_stops_with_exit_3():
    with pytest.raises(SearchError) as e:
        search(searcher(0.001, 1e-6), start(), lambda rows: None)
    assert e.value.exit_code == 3
    assert "stopped at" in str(e.value)


def test_no_proposal_saves_delta_stops_at_once():
    with pytest.raises(SearchError):
        run_step(searcher(0.0, 1e6), start(), lambda: None)


def test_a_baseline_is_the_largest_knob_that_meets_the_target():
    from mnv3spec.adapt import baselines

    timed = []

    def latency(value):
        timed.append(value)
        return Measured(value * 10.0, 0.0, 0.0)

    values = baselines.widths(1.0)
    assert values[0] == 0.01 and values[-1] == 1.0 and len(values) == 100
    assert baselines.largest_meeting(values, latency, 6.27)[0] == 0.62
    assert len(timed) <= 7 and len(set(timed)) == len(timed)  # bisection: each timed once
    assert baselines.largest_meeting(values, latency, 0.09) is None
    assert baselines.resolutions(224)[-1] == 224 and baselines.resolutions(224)[0] == 32


def test_a_network_is_put_on_its_references_scale_so_drifting_load_cancels():
    from mnv3spec.adapt.search import on_scale

    parent = dataclasses.replace(start(), latency_ms=10.0)
    busy = Measured(3.0, 0.6, 9.0, 1.0, 6.0)  # both ran twice as slow as when the parent was timed
    child = on_scale(busy, parent.latency_ms)
    assert (child.median_ms, child.spread_ms, child.parent_ms) == (5.0, 1.0, 10.0)


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
    rows = run_step(s, first, lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert again == [chosen.edits]
    assert chosen.latency_ms == pytest.approx(macs(chosen.edits))  # the honest figure


def test_a_proposal_whose_saving_does_not_hold_beside_the_start_is_passed_over():
    """The pair beside the parent says the best proposal saves enough; timed again beside the
    start it saves nothing (its rounds were lucky): the next is measured and taken, and the trace
    shows the first one's second figure. When none holds, the search stops, naming both."""
    first, again = start(), []

    def second_look(edits):  # the first proposal timed again: as slow as its parent
        again.append(edits)
        return latency_of({}, {}) if len(again) == 1 else confirm(edits)

    s = searcher(0.0, first.latency_ms * 0.01, again=second_look)
    rows = run_step(s, first, lambda: None)
    chosen = next(r for r in rows if r.chosen)
    assert len(again) == 2 and chosen.edits == again[1] != again[0]
    passed = next(r for r in rows if r.edits == again[0])
    assert passed.measured and not passed.chosen and passed.d_ms == pytest.approx(0.0)
    assert chosen.latency_ms == pytest.approx(macs(chosen.edits))
    never = searcher(0.0, first.latency_ms * 0.01, again=lambda edits: latency_of({}, {}))
    with pytest.raises(SearchError, match="beside its parent and again beside the start") as e:
        run_step(never, first, lambda: None)
    assert e.value.exit_code == 3


def inherited(props, parent):
    """A screen: each proposal's held-out figures before any fine-tune, twice its kind's cost."""
    return [Tuned(parent.holdout_top1 - (2 * COST[p.move.kind] if p.move else 0.0), "")
            for p in props]  # fmt: skip


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
    everyone = run_step(s, first, lambda: None)  # no at_most: every proposal, no screen
    assert not screens and all(r.tuned for r in everyone)
    proposed = len(tuned) - 1
    tuned.clear()
    rows = run_step(dataclasses.replace(s, at_most=2), first, lambda: None)
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
    wide = run_step(dataclasses.replace(s, at_most=proposed), first, lambda: None)
    assert not screens and all(r.tuned for r in wide)  # as many as proposed: nothing screened


def test_a_continued_search_numbers_its_steps_on(capsys):
    """A search continued after step 2 shows "step 3" (it showed "step 1" while training s03-*)."""
    from mnv3spec.adapt.steps import StepBar

    bar = StepBar(2)
    bar()
    bar.close()
    bar()
    bar.close()
    err = capsys.readouterr().err
    assert "step 3: moves timed" in err and "step 4: moves timed" in err
    assert "step 1:" not in err


def test_a_path_gives_each_target_it_reached_its_first_network_that_meets_it():
    path = [
        dataclasses.replace(start(), step=i, latency_ms=ms) for i, ms in enumerate([10, 9, 8, 7])
    ]
    assert reached(path, 8.5).step == 2 and reached(path, 9).step == 1  # at the target meets it
    assert reached(path, 6.9) is None  # not reached: the search goes on from the last
    assert reached(path[:1], 10) is None  # the start is no result, even at the target


def test_a_trace_keeps_screened_rows_and_reads_one_written_before_them(tmp_path):
    from mnv3spec.adapt import trace

    passed = TraceRow(1, "exp bneck3 72→64", False, 9.0, 0, 0, 40.0, -10.0, 1.0, -10.0, "",
                      {"bneck3": {"exp": 64}}, False, 1.5, 0.4, tuned=False)  # fmt: skip
    chosen = dataclasses.replace(passed, edit="exp bneck1 32→24", chosen=True, measured=True,
                                 run="runs/s01-00", tuned=True)  # fmt: skip
    first = dataclasses.replace(start(), latency_ms=10.0)
    rows = [first, chosen, passed]
    trace.write(tmp_path, rows)
    assert trace.read(tmp_path) == rows
    text = (tmp_path / "trace.csv").read_text()
    older = "\n".join(line.rsplit(",", 1)[0] for line in text.splitlines()[:2]) + "\n"
    (tmp_path / "trace.csv").write_text(older)  # a trace of an earlier version: no tuned column
    assert trace.read(tmp_path) == [first]
    for bad in (
        dataclasses.replace(passed, run="runs/s01-01"),  # screened, yet a run
        dataclasses.replace(chosen, tuned=False, run=""),
    ):  # the path not fine-tuned
        trace.write(tmp_path, [first, chosen if bad.chosen is False else bad, bad])
        with pytest.raises(UserError, match="damaged"):
            trace.read(tmp_path)
