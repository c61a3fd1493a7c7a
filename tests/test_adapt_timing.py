"""The figures of a timing beside a reference: the noise of a saving, and a network put on its
reference's scale."""

from __future__ import annotations

import dataclasses
import os

import pytest

from mnv3spec.adapt.timing import Measured, on_scale, saving_noise

from .fake_search import TINY, start


def test_the_noise_of_a_saving_is_that_of_its_rounds_not_of_either_network():
    drift = [1.0 + i for i in range(100)]  # a load that rises through the rounds
    parent = [t + 0.5 for t in drift]
    child = [t + (0.01 if i % 2 else -0.01) for i, t in enumerate(drift)]
    noise = saving_noise(parent, child)
    assert noise < 0.01  # the child's own spread is 50 ms; the saving, 0.5 ± 0.01 ms, is clear
    # IQR of the differences 1.35 ms is σ 1 ms; twice the standard error of their median over
    # 100 rounds is 2 × 1.25 / 10 = 0.25 ms
    spread = [0.5 + 1.35 * (i / 99 - 0.5) * 2 for i in range(100)]
    assert saving_noise([s for s in spread], [0.0] * 100) == pytest.approx(0.25, rel=0.03)


def test_a_network_is_put_on_its_references_scale_so_drifting_load_cancels():
    parent = dataclasses.replace(start(), latency_ms=10.0)
    busy = Measured(3.0, 0.6, 9.0, 1.0, 6.0)  # both ran twice as slow as when the parent was timed
    child = on_scale(busy, parent.latency_ms)
    assert (child.median_ms, child.spread_ms, child.parent_ms) == (5.0, 1.0, 10.0)


def test_a_path_network_is_timed_beside_the_start_in_a_process_of_its_own():
    """As ``latency`` times them afterwards: the start exported first in a new process, the
    child beside it; the search's own process exports nothing (its kept programs unchanged)."""
    from mnv3spec.adapt import timing
    from mnv3spec.spec.load import load_spec

    start_spec, child = load_spec(TINY, resolution=64), load_spec(TINY, resolution=16)
    kept = dict(timing._PREPARED)
    m = timing.measure_apart(child, start_spec, timing.LatencySettings("eager", runs=40))
    assert kept == timing._PREPARED
    assert 0 < m.median_ms < m.parent_ms  # 16 px beside 64 px: a sixteenth of the work
    assert m.seconds > 0 and m.noise_ms >= 0 and m.spread_ms >= 0


def _dies(child, start, settings):  # in the timing's own process: as if killed
    os._exit(9)


def test_a_timing_process_that_dies_is_a_search_error_naming_it(monkeypatch):
    """Killed (or out of memory) while it times a network, the process of its own is one
    paragraph that says the search continues, exit 3, not a traceback of the process pool."""
    from mnv3spec.adapt import timing
    from mnv3spec.errors import SearchError
    from mnv3spec.spec.load import load_spec

    monkeypatch.setattr(timing, "_pair_first", _dies)
    spec = load_spec(TINY, resolution=16)
    with pytest.raises(SearchError) as e:
        timing.measure_apart(spec, spec, timing.LatencySettings("eager", runs=2))
    assert e.value.exit_code == 3
    assert f"timing {spec.name} beside the start ended" in str(e.value)
    assert "continues the search" in str(e.value)


def test_a_record_of_an_earlier_version_timed_in_the_searchs_process_is_timed_again(
    monkeypatch, tmp_path
):
    """A folder continued from a version that recorded the path in the search's own process:
    its cached record (key ``recorded``) is not taken for one timed apart; the record is timed
    anew, kept under its own key, and read from the cache after that."""
    from mnv3spec.adapt import steps, timing
    from mnv3spec.adapt.folder import AdaptSettings
    from mnv3spec.adapt.rows import RowTimer
    from mnv3spec.spec.load import load_spec

    s = AdaptSettings(TINY, target_ratio=0.9, backend="eager", resolution=64, out=str(tmp_path))
    settings = timing.LatencySettings("eager", runs=s.runs, warmup=s.warmup)
    ctx = steps.Context(s, tmp_path, settings, timing.Cache(tmp_path), load_spec(TINY), print,
                        RowTimer(settings))  # fmt: skip
    edits = {"bneck1": {"exp": 24}}
    child, start_spec = ctx.deployed(edits), ctx.deployed({})
    assert child.resolution == 64 and child.document != start_spec.document
    old = timing.key(child, settings, start_spec, what="recorded")
    ctx.cache.entries[old] = Measured(0.5, 0.01, 0.0, parent_ms=1.0)  # timed in-process
    timed = []

    def apart(c, st, _):
        timed.append((c.document, st.document))
        return Measured(0.8, 0.02, 0.0, parent_ms=1.0)

    monkeypatch.setattr(steps, "measure_apart", apart)
    assert ctx.recorded(edits).median_ms == 0.8
    assert timed == [(child.document, start_spec.document)]
    assert ctx.recorded(edits).median_ms == 0.8 and len(timed) == 1  # kept, not timed again
    assert ctx.cache.entries[old].median_ms == 0.5  # the old entry stays as it was


INTERRUPTED = """
import sys
from mnv3spec.adapt import timing
from mnv3spec.errors import SearchError
from mnv3spec.spec.load import load_spec
spec = load_spec({tiny!r}, resolution=32)
try:
    timing.measure_apart(spec, spec, timing.LatencySettings("eager", runs=10**6))
except KeyboardInterrupt:
    print("interrupted")
except SearchError as e:
    print("search error:", e)
"""


def test_ctrl_c_while_a_record_is_timed_ends_the_search_and_its_timing_process():
    """Ctrl-C (SIGINT to the terminal's process group) while the process of its own times a
    network: the search is interrupted at once (the CLI's "interrupted", exit 130; the same
    command continues), not told that process was killed or ran out of memory, and no timing
    process is left running."""
    import contextlib
    import signal
    import subprocess
    import sys
    import time

    from .conftest import ROOT

    def sigint_default():
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # as a terminal's foreground job has it

    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED.format(tiny=TINY)], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=sigint_default, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip

    def group() -> list[str]:  # the live processes of the search's group (not the reaped)
        ps = subprocess.run(["ps", "-ww", "-o", "stat=,args=", "-g", str(proc.pid)],
                            capture_output=True, text=True).stdout  # fmt: skip
        return [line for line in ps.splitlines() if line.strip() and not line.startswith("Z")]

    try:
        end = time.monotonic() + 60
        while not any("spawn_main" in p for p in group()) and time.monotonic() < end:
            time.sleep(0.2)
        assert any("spawn_main" in p for p in group()), "no timing process started"
        time.sleep(3)  # the timing under way
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert out.strip() == "interrupted", out + err
        time.sleep(0.5)
        assert group() == []
    finally:  # whatever failed, nothing of it left running (a million rounds)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
