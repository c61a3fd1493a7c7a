"""The baselines' sizing: the largest width or resolution that meets the target."""

from __future__ import annotations

from mnv3spec.adapt.timing import Measured


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
