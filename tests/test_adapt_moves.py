"""The paper's two kinds of proposal as spec edits: an expansion per row, an output width per
residual group, shrunk in multiples of the divisor (faked services: :mod:`tests.fake_search`)."""

from __future__ import annotations

from mnv3spec.adapt import moves as mv
from mnv3spec.model.builder import build
from mnv3spec.model.summary import summarize
from mnv3spec.spec.load import load_spec

from .fake_search import TINY, spec_of


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
    assert mv.can_inherit(spec, child)  # the residual of bneck3 is kept
    plans = {r.name: r for r in summarize(build(child, device="meta")).rows}
    assert plans["last_conv"].in_shape[0] == 16  # the consumer follows


def test_a_kernel_or_se_move_makes_a_child_that_inherits():
    """--moves kernel se: each child can take its parent's weights (the centre of its filters,
    the rest without the SE), so it is proposed and fine-tuned; before, an SE-less child was
    never proposed (its layers differ) and a 3×3 one could not inherit."""
    spec = load_spec(TINY)
    extra = [m for m in mv.moves(spec, ("kernel", "se")) if m.kind in mv.EXTRA]
    assert len(extra) == 4
    for move in extra:
        edits, _ = mv.shrunk(spec, {}, move, 1)
        assert mv.can_inherit(spec, spec_of(edits)), move.label
    grown = spec_of({"bneck2": {"se": True}})  # an SE the parent has not: nothing to inherit
    assert not mv.can_inherit(spec, grown)
    assert not mv.can_inherit(spec, spec_of({"bneck1": {"exp": 16}}))  # its expansion goes


def test_groups_of_the_deployed_network_merge_with_the_trained_ones():
    small = load_spec("small")
    assert ("stem", "bneck1") in mv.groups(small)
    assert ("stem", "bneck1") in mv.groups(load_spec("small", si=2), small)
