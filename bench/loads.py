"""How far apart are two timings of the same two networks, each pair loaded anew, by how many
times each file is loaded? Small (``--set si=2``, 224 px) and a narrower child of it (three
expansions cut, as an adapt path cuts them), exported to ExecuTorch and timed side by side in
alternating rounds (as ``latency`` and ``adapt`` time them), ``--repeats`` times for each count of
``--loads``, every repeat exported and loaded anew. A load's luck moves a ratio that more rounds
cannot; more loads average it, run :data:`~mnv3spec.deploy.runtimes.record.GROUP` at a time so
that each call still finds its weights in the cache. Prints each ratio, their mean and spread, and
the start's median and p90 per count.

    python bench/loads.py [--loads 4 12] [--repeats 4] [--threads 1] [--runs 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from mnv3spec.cli.flags import number
from mnv3spec.cli.latency import MAX_LOADS, MAX_THREADS
from mnv3spec.latency.backends import prepare
from mnv3spec.latency.measure import percentiles, time_rounds
from mnv3spec.model.builder import build
from mnv3spec.spec.edits import from_rows
from mnv3spec.spec.load import load_spec

ROOT = Path(__file__).resolve().parents[1]
CHILD = {"bneck5": {"exp": 80}, "bneck10": {"exp": 192}, "bneck11": {"exp": 208}}


def loaded(edits: dict, loads: int, resolution: int):
    spec = load_spec(str(ROOT / "specs" / "small.yaml"), from_rows(edits), si=2,
                     resolution=resolution)  # fmt: skip
    x = torch.randn(1, spec.in_channels, resolution, resolution)
    return prepare(build(spec).eval(), "executorch", x, loads=loads)[0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    # the bounds latency's own flags have (--loads: each load holds a program in memory)
    p.add_argument("--loads", type=number(int, 1, high=MAX_LOADS), nargs="+", default=[4, 12])
    p.add_argument("--repeats", type=number(int, 1), default=4)
    threads = number(int, 1, high=MAX_THREADS)
    p.add_argument("--threads", type=threads, default=1, help="the timing's")
    p.add_argument("--runs", type=number(int, 1), default=200)
    p.add_argument("--resolution", type=number(int, 32, high=1024), default=224)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[int, list[tuple[float, float, float]]] = {}  # by loads: ratio, median, p90
    print(f"Small and its child at {args.resolution} px, ExecuTorch, {args.threads} thread(s), "
          f"{args.runs} rounds; each repeat exported and loaded anew")  # fmt: skip
    for repeat in range(args.repeats):  # the counts in turn, so a drifting load hits each alike
        for loads in args.loads:
            start, child = loaded({}, loads, args.resolution), loaded(CHILD, loads, args.resolution)
            times = time_rounds({"start": start, "child": child}, args.runs, 10, "cpu")
            ratio = percentiles(times["child"])[0] / percentiles(times["start"])[0]
            median, p90, _ = percentiles(times["start"])
            results.setdefault(loads, []).append((ratio, median, p90))
            print(f"repeat {repeat + 1} loads {loads:>2}: child ÷ start {ratio:.4f} "
                  f"(start {median:.3f} ms, p90 {p90:.3f})", flush=True)  # fmt: skip
    for loads, rows in results.items():
        ratios = [r for r, _, _ in rows]
        spread = statistics.stdev(ratios) / statistics.mean(ratios) if len(ratios) > 1 else 0.0
        print(f"loads {loads:>2}: ratio mean {statistics.mean(ratios):.4f}, "
              f"sd {100 * spread:.2f} %, range {min(ratios):.4f}-{max(ratios):.4f}; "
              f"start median {statistics.median(m for _, m, _ in rows):.3f} ms, "
              f"p90 {statistics.median(q for _, _, q in rows):.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
