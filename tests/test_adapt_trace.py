"""trace.csv: written and read back, its screened rows, and a damaged one refused."""

from __future__ import annotations

import dataclasses

import pytest

from mnv3spec.adapt.trace import TraceRow
from mnv3spec.errors import UserError

from .fake_search import start


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
