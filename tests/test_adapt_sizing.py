"""A step's proposals sized by their rows: the smallest shrink that saves what the step needs,
in a few look-ups (latency faked as multiply-adds: :mod:`tests.fake_search`)."""

from __future__ import annotations

import dataclasses

from mnv3spec.adapt import moves as mv
from mnv3spec.adapt.search import search
from mnv3spec.adapt.sizing import LOOKUPS, smallest_step

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
    last = search(searcher(target, delta), first, steps.append)
    assert len(steps) == 1
    return delta, target, steps[0], last


def test_the_last_step_asks_only_for_what_is_left_so_the_result_can_land_under_the_target():
    delta, target, rows, last = last_step(0.5)  # half a step below the start
    assert last.latency_ms <= target
    assert all(r.d_ms >= 0.5 * delta for r in rows)
    assert any(r.d_ms < delta for r in rows)  # sized to what was left: less than a full δ


def test_the_last_step_asks_for_half_a_step_at_least_so_its_saving_is_not_lost_in_noise():
    delta, target, rows, last = last_step(0.05)  # a twentieth of a step left
    assert last.latency_ms <= target - 0.45 * delta
    assert all(r.d_ms >= delta / 2 for r in rows)
    assert any(r.d_ms < delta for r in rows)
