"""How far apart are two timings of one network, and is a search's path as fast as it recorded?
Two figures from a finished ``adapt`` folder on this machine's runtime:

1. the start exported and loaded ``--loads`` times, all timed in the same alternating rounds,
   ``--rounds`` times over: each load's median. If one load is faster than another in every
   round, the gap is that load's luck, which more rounds cannot average away;
2. each network on the path (the chosen row of each step) timed again beside the start
   ``--rounds`` times, each time both exported anew in a process of their own as ``latency``
   times them (``adapt.timing.measure_apart``), on the start's recorded scale as the
   search records it (``adapt.timing.on_scale``), beside its recorded latency. A recorded figure
   that chose its network (the best of several noisy ones) lies below these;
3. with ``--kept N``: the result (the path's last network) beside the start lowered first in
   this process and kept, and beside the start lowered again after ``N`` networks of the trace
   (as a search's process lowers them), each pair in alternating rounds of its own, ``--rounds``
   times: the ratio each gives.

    python bench/adapt_retime.py ADAPT_FOLDER [--loads 4] [--rounds 3] [--steps 3 4 5]
                                              [--kept 12]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from mnv3spec.adapt import folder as files
from mnv3spec.adapt.rows import RowTimer
from mnv3spec.adapt.steps import Context
from mnv3spec.adapt.timing import Cache, LatencySettings, _program, measure_apart, on_scale
from mnv3spec.latency.backends import prepare
from mnv3spec.latency.measure import percentiles, time_rounds
from mnv3spec.model.builder import build
from mnv3spec.services.device import cpu_threads
from mnv3spec.spec.load import load_spec


def context(folder: Path) -> Context:
    """The folder's search, read only (its cache is not written)."""
    s = files.AdaptSettings(**json.loads((folder / files.SETTINGS).read_text()), out=str(folder))
    timing = LatencySettings(s.backend, s.int8, s.runs, s.warmup, s.threads)
    return Context(s, folder, timing, Cache(folder), load_spec(s.spec), print, RowTimer(timing),
                   None)  # fmt: skip


def loads(ctx: Context, count: int, rounds: int) -> None:
    spec, runtime = ctx.deployed({}), ctx.timing.runtime
    x = torch.randn(1, spec.in_channels, spec.resolution, spec.resolution)
    runners = {f"load {i}": prepare(build(spec).eval(), runtime, x)[0] for i in range(count)}
    print(f"the start, {count} loads timed together ({ctx.timing.runs} runs a round), median ms:")
    for r in range(rounds):
        times = time_rounds(runners, ctx.timing.runs, ctx.timing.warmup, "cpu")
        medians = {k: percentiles(v)[0] for k, v in times.items()}
        slowest, fastest = max(medians.values()), min(medians.values())
        cells = "  ".join(f"{k} {v:.4f}" for k, v in medians.items())
        print(f"  round {r}: {cells}  | slowest/fastest {slowest / fastest:.3f}")


def path(ctx: Context, rounds: int, only: list[int] | None) -> None:
    with open(ctx.folder / "trace.csv") as f:
        chosen = [r for r in csv.DictReader(f) if r["chosen"] == "1"]
    start_ms, start = float(chosen[0]["latency_ms"]), ctx.deployed({})
    print(f"the path, timed again beside the start (recorded {start_ms:.4f} ms), new processes:")
    print("step  recorded  again (each)                 again/recorded (median)")
    ratios = []
    for row in chosen[1:]:
        if only and int(row["step"]) not in only:
            continue
        spec, recorded = ctx.deployed(json.loads(row["edits"])), float(row["latency_ms"])
        again = [
            on_scale(measure_apart(spec, start, ctx.timing), start_ms).median_ms
            for _ in range(rounds)
        ]
        ratio = statistics.median(again) / recorded
        ratios.append(ratio)
        each = " ".join(f"{v:.4f}" for v in again)
        print(f"{row['step']:>4}  {recorded:.4f}    {each:<28} {ratio:.3f}", flush=True)
    if ratios:
        print(f"median again/recorded over the path: {statistics.median(ratios):.3f}")


def kept(ctx: Context, others: int, rounds: int) -> None:
    with open(ctx.folder / "trace.csv") as f:
        rows = list(csv.DictReader(f))
    result = ctx.deployed(json.loads([r for r in rows if r["chosen"] == "1"][-1]["edits"]))
    first = _program(ctx.deployed({}), ctx.timing)
    lowered = [r for r in rows if r["chosen"] != "1" and r["edits"]][:others]
    for row in lowered:  # each lowered and loaded, then dropped, as a search's process does
        _program(ctx.deployed(json.loads(row["edits"])), ctx.timing)
    again, theirs = _program(ctx.deployed({}), ctx.timing), _program(result, ctx.timing)
    print(f"the result beside the start kept and beside it lowered after {len(lowered)} others:")
    for r in range(rounds):
        cells = []
        for name, start in (("kept", first), ("again", again)):
            times = time_rounds({"start": start, "result": theirs}, ctx.timing.runs,
                                ctx.timing.warmup, "cpu")  # fmt: skip
            cells.append(
                f"{name} {percentiles(times['result'])[0] / percentiles(times['start'])[0]:.3f}"
            )
        print(f"  round {r}: result ÷ start, " + "  ".join(cells), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--loads", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, nargs="*", help="path steps to time (default: every one)")
    p.add_argument("--kept", type=int, metavar="N", help="only the start kept against lowered anew")
    a = p.parse_args()
    ctx = context(a.folder)
    with cpu_threads(ctx.timing.threads):
        if a.kept is not None:
            kept(ctx, a.kept, a.rounds)
            return
        loads(ctx, a.loads, a.rounds)
        path(ctx, a.rounds, a.steps)


if __name__ == "__main__":
    main()
