"""How adapt sizes a step's proposals: row look-ups (each a row exported to the runtime and timed)
per move, their seconds, and how far past what the step needs each proposal cuts — adapt's
:func:`~mnv3spec.adapt.sizing.smallest_step` beside the doubling it replaced (1, 2, 4… divisors,
then the deepest), in one run, each with a row timer of its own (no export shared).

    OMP_NUM_THREADS=1 python bench/adapt_sizing.py            # Small, si=2, 224 px, ExecuTorch

The step is the bench's first: δ = ``--step`` (0.05) × the start's latency, measured here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mnv3spec.adapt.moves import can_inherit, moves, shrunk  # noqa: E402
from mnv3spec.adapt.proposal import Proposal, Search  # noqa: E402
from mnv3spec.adapt.rows import RowTimer  # noqa: E402
from mnv3spec.adapt.sizing import smallest_step  # noqa: E402
from mnv3spec.adapt.timing import LatencySettings, measure_spec  # noqa: E402
from mnv3spec.adapt.trace import TraceRow  # noqa: E402
from mnv3spec.spec.edits import from_rows  # noqa: E402
from mnv3spec.spec.load import load_spec  # noqa: E402


def doubling(s: Search, spec, parent: TraceRow, move) -> Proposal | None:
    """The sizing adapt used before: 1, 2, 4… divisors until one saves what is needed, then the
    deepest the row allows."""
    multiples, tried = 1, set()
    while True:
        found = shrunk(spec, parent.edits, move, multiples)
        if found is None:
            deepest = max(
                (m for m in range(1, multiples) if shrunk(spec, parent.edits, move, m)), default=0
            )
            if not deepest or deepest in tried:
                return None
            multiples, found = deepest, shrunk(spec, parent.edits, move, deepest)
        tried.add(multiples)
        if not can_inherit(spec, s.spec_of(found[0])):
            multiples += 1
            continue
        saved = s.saving_of(found[0], parent.edits)
        if saved >= s.needed(parent):
            return Proposal(move, found[1], found[0], saved, multiples)
        multiples *= 2


def _cell(q: Proposal | None) -> str:
    return f"{q.edit.split()[-1]} ({q.saved_ms:.3f} ms)" if q else "-"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--spec", default="small")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--backend", default="executorch")
    p.add_argument("--step", type=float, default=0.05)
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(1)
    timing = LatencySettings(args.backend, False, args.runs, 5, threads=1)
    trained = lambda edits: load_spec(args.spec, from_rows(edits))  # noqa: E731
    deployed = lambda edits: load_spec(  # noqa: E731
        args.spec, from_rows(edits), si=2, resolution=args.resolution
    )
    start = measure_spec(deployed({}), timing)
    parent = TraceRow(0, "start", True, start.median_ms, 0, 0, 0, 0, 0, 0, "", {})
    spec = trained({})
    all_moves = moves(spec, (), deployed({}))
    delta = args.step * start.median_ms
    print(f"{args.spec} at {args.resolution} px on {timing.runtime}: {start.median_ms:.3f} ms, "
          f"δ {delta:.3f} ms, {len(all_moves)} moves, {args.runs} runs")  # fmt: skip
    found = {}
    for name, size in (("doubling", doubling), ("adapt", smallest_step)):
        timer, looked = RowTimer(timing), []

        def saving(edits, theirs, timer=timer, looked=looked):
            looked.append(edits)
            m = timer.saving(deployed(edits), deployed(theirs))
            return m.parent_ms - m.median_ms

        s = Search(0.0, delta, trained, None, saving, None, None, None, 0)
        began = time.perf_counter()
        proposals = {mv.label: size(s, spec, parent, mv) for mv in all_moves}
        seconds = time.perf_counter() - began
        over = [q.saved_ms / s.delta_ms for q in proposals.values() if q is not None]
        found[name] = (len(looked), seconds, proposals)
        middle, most = statistics.median(over), max(over)
        print(f"{name:>8}: {len(looked)} look-ups in {seconds:.0f} s, {len(over)} proposals, "
              f"saving / need median {middle:.2f}, max {most:.2f}")  # fmt: skip
    print(f"{'move':<16} {'doubling':<26} {'adapt':<26}")
    for mv in all_moves:
        cells = [_cell(found[n][2][mv.label]) for n in ("doubling", "adapt")]
        print(f"{mv.label:<16} {cells[0]:<26} {cells[1]:<26}")
    (n0, t0, _), (n1, t1, _) = found["doubling"], found["adapt"]
    print(f"adapt / doubling: look-ups {n1 / n0:.2f}, seconds {t1 / t0:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
