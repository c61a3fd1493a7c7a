"""The row look-up that sizes proposals: only the rows that differ are timed, each exported once
per process, on the search's runtime."""

from __future__ import annotations

from mnv3spec.adapt import rows
from mnv3spec.adapt.timing import LatencySettings
from mnv3spec.spec.edits import from_rows
from mnv3spec.spec.load import load_spec

from .conftest import ROOT

TINY = str(ROOT / "tests" / "data" / "tiny_phone.yaml")


def spec_of(edits):
    return load_spec(TINY, from_rows(edits))


def test_only_the_rows_that_differ_are_exported_and_each_once(monkeypatch):
    import mnv3spec.latency.backends as backends

    exported = []
    real = backends.prepare

    def prepare(module, backend, x):
        exported.append((backend, tuple(x.shape)))
        return real(module, "eager", x)

    monkeypatch.setattr(backends, "prepare", prepare)
    timer = rows.RowTimer(LatencySettings("executorch", runs=3, warmup=1))
    parent = spec_of({})
    m = timer.saving(spec_of({"bneck3": {"exp": 64}}), parent)
    assert len(exported) == 2  # bneck3, the parent's and the child's: nothing else
    assert all(backend == "executorch" for backend, _ in exported)
    assert m.median_ms > 0 and m.parent_ms > 0 and m.seconds > 0
    timer.saving(spec_of({"bneck3": {"exp": 56}}), parent)
    assert len(exported) == 3  # the parent's bneck3 was kept from the first call
    group = timer.saving(spec_of({"bneck2": {"out": 16}, "bneck3": {"out": 16}}), parent)
    # the group's two rows and the row that reads its output, the parent's and the child's, less
    # the parent's bneck3, kept
    assert len(exported) == 3 + 2 * 3 - 1
    assert group.parent_ms > 0


def test_a_parent_timed_beside_many_children_is_exported_once(monkeypatch):
    import mnv3spec.latency.backends as backends
    from mnv3spec.adapt import timing

    exported = []

    def prepare(module, backend, x, loads=1):
        assert loads == timing.LOADS  # each network's file loaded several times, run in turn
        exported.append(sum(p.numel() for p in module.parameters()))
        return (lambda: None), ""

    monkeypatch.setattr(backends, "prepare", prepare)
    monkeypatch.setattr(timing, "_PREPARED", {})
    s = LatencySettings("executorch", runs=3, warmup=1)
    start = spec_of({})
    timing.measure_pair(spec_of({"bneck2": {"exp": 40}}), start, s)  # the start: the first kept
    parent = spec_of({"bneck2": {"exp": 40}})
    children = [{"bneck2": {"exp": 40}, "bneck3": {"exp": e}} for e in (16, 24, 32, 40, 48, 56)]
    for edits in children:
        timing.measure_pair(spec_of(edits), parent, s)
    # the start, the parent once (beside the start, then beside six children) and each child
    assert len(exported) == 2 + len(children)
    timing.measure_pair(parent, start, s)  # the chosen one confirmed beside the start: both kept
    assert len(exported) == 2 + len(children)


def test_a_continued_search_keeps_its_start_before_anything_else(monkeypatch):
    """A continued search has its start's latency from the cache: ``keep_start`` exports it
    first all the same, so it is the one kept, not the step's parent exported before it."""
    import mnv3spec.latency.backends as backends
    from mnv3spec.adapt import timing

    exported = []

    def prepare(module, backend, x, loads=1):
        exported.append(sum(p.numel() for p in module.parameters()))
        return (lambda: None), ""

    monkeypatch.setattr(backends, "prepare", prepare)
    monkeypatch.setattr(timing, "_PREPARED", {})
    s = LatencySettings("executorch", runs=3, warmup=1)
    start, parent = spec_of({}), spec_of({"bneck2": {"exp": 40}})
    timing.keep_start(start, s)
    timing.keep_start(parent, s)  # something is kept already: nothing happens
    assert len(exported) == 1
    for e in (16, 24, 32, 40, 48):  # more than KEEP networks after it: the start stays
        timing.measure_pair(spec_of({"bneck2": {"exp": 40}, "bneck3": {"exp": e}}), parent, s)
    timing.measure_pair(parent, start, s)
    assert len(exported) == 1 + 6  # the parent and five children; the start not again
    assert next(iter(timing._PREPARED)) == timing.key(start, s)


def test_every_export_load_and_timing_runs_at_the_settings_threads_then_torchs_are_back(
    monkeypatch,
):
    """The search's networks and rows are exported, loaded and timed with the settings' threads
    (the runtimes size their pools from torch's as they load), whatever torch's count is; the
    process's own count is restored after each (a training in the same process keeps its)."""
    import torch

    import mnv3spec.latency.backends as backends
    import mnv3spec.latency.measure as measure
    from mnv3spec.adapt import timing

    seen = []
    real_rounds = measure.time_rounds

    def prepare(module, backend, x, loads=1):
        seen.append(("prepare", torch.get_num_threads()))
        return (lambda: seen.append(("call", torch.get_num_threads()))), ""

    def time_rounds(runners, runs, warmup, device):
        seen.append(("rounds", torch.get_num_threads()))
        return real_rounds(runners, runs, warmup, device)

    monkeypatch.setattr(backends, "prepare", prepare)
    monkeypatch.setattr(measure, "time_rounds", time_rounds)
    monkeypatch.setattr(rows, "time_rounds", time_rounds)
    monkeypatch.setattr(timing, "_PREPARED", {})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for threads in (1, 3):
            s = LatencySettings("executorch", runs=3, warmup=1, threads=threads)
            seen.clear()
            timing.keep_start(spec_of({}), s)
            timing.measure_spec(spec_of({"bneck2": {"exp": 40}}), s)
            timing.measure_pair(spec_of({"bneck3": {"exp": 40}}), spec_of({}), s)
            rows.RowTimer(s).saving(spec_of({"bneck3": {"exp": 48}}), spec_of({}))
            assert {kind for kind, _ in seen} == {"prepare", "call", "rounds"}
            assert {n for _, n in seen} == {threads}
            assert torch.get_num_threads() == 2
            monkeypatch.setattr(timing, "_PREPARED", {})
    finally:
        torch.set_num_threads(before)
