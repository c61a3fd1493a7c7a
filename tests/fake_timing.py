"""Latency faked for the searches whose path a test reads, so that it does not hang on this
machine's load (timed for real beside other tests, a tiny network at 64 px measured 11.5 ±
23.7 ms, and its search stopped short some of the time): a deployed network's "ms" are its
multiply-adds in millions, alone or beside another, and what its rows save is the difference.
The real timing has tests of its own (test_adapt_rows.py) and the bench.

:func:`installed` fakes it in this process; :func:`site_folder` writes a folder that fakes it in
a child process started with that folder first on its ``PYTHONPATH`` (its sitecustomize)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnv3spec.adapt import rows, steps
from mnv3spec.adapt.timing import Measured
from mnv3spec.model.builder import build
from mnv3spec.model.summary import summarize

ROOT = Path(__file__).resolve().parents[1]


def _ms(spec) -> float:
    return summarize(build(spec, device="meta")).macs / 1e6


def measure_spec(spec, settings) -> Measured:
    return Measured(_ms(spec), 0.0, 0.0)


def measure_pair(child, parent, settings) -> Measured:
    return Measured(_ms(child), 0.0, 0.0, 0.0, _ms(parent))


def row_saving(timer, child, parent) -> Measured:
    return Measured(_ms(child), 0.0, 0.0, 0.0, _ms(parent))


def install(patch) -> None:
    """Fake the timing with ``patch(owner, name, value)`` (a setattr that may be undone)."""
    patch(steps, "measure_spec", measure_spec)
    patch(steps, "measure_pair", measure_pair)
    patch(steps, "measure_apart", measure_pair)  # a path's record, timed in a process of its own
    patch(rows.RowTimer, "saving", row_saving)


@contextlib.contextmanager
def installed() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as m:
        install(m.setattr)
        yield


SITE = """import sys
sys.path.insert(0, {root!r})
from tests import fake_timing
fake_timing.install(setattr)
"""


def site_folder(folder: Path) -> Path:
    """``folder``, holding a sitecustomize that fakes the timing in every process started with
    it on its ``PYTHONPATH`` (the search and its training workers alike)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITE.format(root=str(ROOT)))
    return folder
