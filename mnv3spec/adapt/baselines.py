"""The comparison MobileNetV3 §6.2 makes and the NetAdapt ports skip: the width multiplier and
the input resolution, each scaled until the measured latency meets the same target."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .timing import Measured

WIDTH_STEP = 0.01  # width multipliers tried: multiples of this (at 0.05, a bench's width
# baseline ran at 0.80 T: 0.75 measured above T; bisection times about 7 of the 100)
RESOLUTION_STEP = 8  # resolutions tried: multiples of this
MIN_RESOLUTION = 32
SETTLE = 3  # values a found baseline steps down at most while, timed as the path is, it is above T


@dataclass(frozen=True)
class Baseline:
    """A knob (``width`` or ``resolution``) at the largest value whose latency meets the target."""

    knob: str
    value: Any
    latency: Measured


def largest_meeting(
    values: Sequence[Any], latency_of: Callable[[Any], Measured], target_ms: float
) -> tuple[Any, Measured] | None:
    """The largest of ``values`` (ascending) whose measured latency is at most ``target_ms``,
    found by bisection (latency grows with the knob; each value is timed once at most)."""
    lo, hi, best = 0, len(values) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        measured = latency_of(values[mid])
        if measured.median_ms <= target_ms:
            best, lo = (values[mid], measured), mid + 1
        else:
            hi = mid - 1
    return best


def widths(start: float) -> list[float]:
    count = round(start / WIDTH_STEP)
    return [round(WIDTH_STEP * i, 4) for i in range(1, count + 1)]


def resolutions(start: int) -> list[int]:
    return list(range(MIN_RESOLUTION, start + 1, RESOLUTION_STEP))


def recorded(
    values: Sequence[Any], found: Any, record: Callable[[Any], Measured], target_ms: float
) -> tuple[Any, Measured]:
    """``found`` (one of ``values``), timed as a search's path is (``record``), or the next
    smaller value while that measures above ``target_ms``, :data:`SETTLE` values at most (the
    last, as measured, where none meets it): the figure the table compares with adapt's own."""
    at = values.index(found)
    for i in range(at, max(at - SETTLE, 0) - 1, -1):
        measured = record(values[i])
        if measured.median_ms <= target_ms:
            break
    return values[i], measured


def find(
    width: float,
    resolution: int,
    latency_of: Callable[[str, Any], Measured],
    target_ms: float,
    record: Callable[[str, Any], Measured] | None = None,
) -> list[Baseline]:
    """The width and the resolution baselines that meet ``target_ms`` (a knob that cannot is
    left out), sought with ``latency_of`` and, with ``record``, timed as the search's path is
    (:func:`recorded`)."""
    found = []
    for knob, values in (("width", widths(width)), ("resolution", resolutions(resolution))):
        hit = largest_meeting(values, lambda v, knob=knob: latency_of(knob, v), target_ms)
        if hit is not None and record is not None:
            hit = recorded(values, hit[0], lambda v, knob=knob: record(knob, v), target_ms)
        if hit is not None:
            found.append(Baseline(knob, *hit))
    return found
