"""The baselines' sizing: the largest width or resolution that meets the target."""

from __future__ import annotations

import pytest

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


def test_a_found_baseline_is_timed_as_the_path_is_and_steps_down_while_above_the_target():
    """Sought with the search's in-process figures, a baseline is then timed as adapt's path
    is (in a process of its own); where that figure is above the target, the next smaller value
    is timed, :data:`SETTLE` at most, so the table compares networks timed alike."""
    from mnv3spec.adapt import baselines

    recorded = []

    def record(slower):
        def timed(value):
            recorded.append(value)
            return Measured(value * 10.0 * slower, 0.0, 0.0)

        return timed

    values = baselines.widths(1.0)
    value, m = baselines.recorded(values, 0.62, record(1.0), 6.27)
    assert (value, m.median_ms, recorded) == (0.62, 6.2, [0.62])  # met: timed once
    recorded.clear()
    value, m = baselines.recorded(values, 0.62, record(1.02), 6.27)  # 6.324 > 6.27
    assert value == 0.61 and m.median_ms == pytest.approx(6.222) and recorded == [0.62, 0.61]
    recorded.clear()
    value, m = baselines.recorded(values, 0.62, record(1.5), 6.27)  # none meets it: the last
    assert recorded == [0.62, 0.61, 0.6, 0.59] and value == 0.59
    assert m.median_ms == pytest.approx(8.85)
    recorded.clear()
    assert baselines.recorded(values, 0.01, record(2.0), 0.15)[0] == 0.01  # no smaller value
    assert recorded == [0.01]


def test_find_records_each_knob_found_with_the_paths_timing():
    from mnv3spec.adapt import baselines

    def sought(knob, value):
        return Measured(value * (10.0 if knob == "width" else 0.05), 0.0, 0.0)

    def record(knob, value):  # timed apart: 3 % slower
        return Measured(sought(knob, value).median_ms * 1.03, 0.0, 0.0)

    found = {b.knob: b for b in baselines.find(1.0, 224, sought, 6.27, record)}
    assert found["width"].value == 0.6 and found["width"].latency.median_ms <= 6.27
    assert found["resolution"].value == 120 and found["resolution"].latency.median_ms <= 6.27
    plain = {b.knob: b.value for b in baselines.find(1.0, 224, sought, 6.27)}
    assert plain == {"width": 0.62, "resolution": 120}
