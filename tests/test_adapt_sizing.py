"""A step's proposals sized by their rows: the smallest shrink that saves what the step needs,
in a few look-ups (latency faked as multiply-adds: :mod:`tests.fake_search`)."""

from __future__ import annotations

import dataclasses

import pytest

from mnv3spec.adapt import moves as mv
from mnv3spec.adapt.proposal import LAND
from mnv3spec.adapt.search import search
from mnv3spec.adapt.sizing import (
    CALIBRATION,
    LOOKUPS,
    PRIOR_STEPS,
    calibration,
    propose,
    smallest_step,
)

from .fake_search import counted, macs, saving_of, searcher, spec_of, start


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


def last_step(left: float):
    """A search to ``left`` × δ below the start (δ a fifth of it): δ, the target, the rows of its
    one step and its result."""
    first = start()
    delta = first.latency_ms * 0.2
    target = first.latency_ms - left * delta
    steps = []
    last = search(searcher(target, delta), [first], steps.append)
    assert len(steps) == 1
    return delta, target, steps[0], last


def test_the_last_step_asks_only_for_what_is_left_so_the_result_can_land_under_the_target():
    delta, target, rows, last = last_step(0.5)  # half a step below the start
    assert last.latency_ms <= target * (1 - LAND)  # aimed at the middle of the band under it
    assert all(r.d_ms >= 0.5 * delta for r in rows)
    assert any(r.d_ms < delta for r in rows)  # sized to what was left: less than a full δ


def test_the_last_step_asks_for_half_a_step_at_least_so_its_saving_is_not_lost_in_noise():
    delta, target, rows, last = last_step(0.05)  # a twentieth of a step left
    assert last.latency_ms <= target - 0.45 * delta
    assert all(r.d_ms >= delta / 2 for r in rows)
    assert any(r.d_ms < delta for r in rows)


def path_of(first, *cuts):
    """A path from ``first`` through bneck3's expansion cut to each of ``cuts``, each network
    recorded at half the saving its rows predict (:func:`fake_search.saving_of`)."""
    rows, latency = [first], first.latency_ms
    for exp in cuts:
        edits = {"bneck3": {"exp": exp}}
        latency -= saving_of(edits, rows[-1].edits) / 2
        rows.append(dataclasses.replace(first, step=len(rows), latency_ms=latency, edits=edits))
    return rows


def test_rows_that_over_predict_the_path_savings_size_the_next_step_deeper():
    """A path whose steps saved, measured whole, half what their rows predicted: the calibration
    counts a few steps of δ as predicted alike, so it lies between a half and one, and the next
    step's proposals are sized to the need divided by it (deeper than the rows alone say), the
    first step's by the rows alone."""
    first = start()
    s = searcher(0.0, first.latency_ms * 0.04)
    assert calibration(s, [first]) == 1.0
    path = path_of(first, 56, 40)
    ratio = calibration(s, path)
    predicted = first.latency_ms - macs({"bneck3": {"exp": 40}})
    prior = PRIOR_STEPS * s.delta_ms
    assert ratio == pytest.approx((predicted / 2 + prior) / (predicted + prior))
    assert 0.5 < ratio < 0.9
    need, move = s.needed(path[-1]), mv.Move("exp", ("bneck2",))
    plain = smallest_step(s, spec_of(path[-1].edits), path[-1], move)
    scaled = smallest_step(s, spec_of(path[-1].edits), path[-1], move, ratio)
    assert plain.saved_ms >= need and scaled.saved_ms >= need / ratio
    assert scaled.multiples > plain.multiples
    found = {p.edit: p for p in propose(s, path, lambda: None)}
    assert found[scaled.edit].edits == scaled.edits  # propose scales by the path's calibration


def test_the_calibration_is_bounded_and_never_drops_a_move_the_rows_say_can_save_the_need():
    """Savings far below (or above) the rows' scale the need within the bounds; a need scaled
    past the deepest cut takes the deepest, as long as that saves the need itself."""
    first = start()
    s = searcher(0.0, first.latency_ms * 0.01)
    slow = [first, dataclasses.replace(first, step=1, latency_ms=first.latency_ms - 1e-9,
                                        edits={"bneck3": {"exp": 8}})]  # fmt: skip
    assert calibration(s, slow) == CALIBRATION[0]
    fast = [first, dataclasses.replace(slow[1], latency_ms=first.latency_ms / 100)]
    assert calibration(s, fast) == CALIBRATION[1]
    move = mv.Move("exp", ("bneck3",))
    deepest = smallest_step(
        dataclasses.replace(s, delta_ms=first.latency_ms - macs({"bneck3": {"exp": 8}})),
        spec_of({}), first, move, 0.01,
    )  # fmt: skip
    assert deepest is not None and deepest.edits == {"bneck3": {"exp": 8}}
