"""Latency targets of issues 4, 8 and 9, measured in one run on this machine (batch 1).

    python bench/latency.py [--runs 100] [--warmup 20] [--backends eager ...]
    python bench/latency.py --device cuda      # on a GPU: eager, compiled and cuda-graph rows

Every ratio compares medians from the same alternating rounds. Targets at 224 with si=2 and 1000
classes (the paper's network, torchvision's configuration):
  * our eager ms ÷ torchvision eager ms ≤ 1.03 for Small and Large (the compiler costs nothing at
    inference: same parameters, same outputs, no slower);
  * torchvision eager ms ÷ our best backend's ms ≥ 3 for Small.
timm's eager model of the same network is timed too when timm is installed (no target: the ratio
is shown).
The same table follows at the CIFAR resolution 32 with si=1 (torchvision's twin is given our
strides and shortcuts, see ``mnv3spec.weights.torchvision.torchvision_twin``). On CUDA (issue
8) the target is a time: Small at 224, batch 1, replayed as a CUDA graph, ≤ 1.0 ms. Not a test:
numbers move with the machine's load, so run it on a quiet machine and read the ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from mnv3spec.latency import measure

# (spec, target for torchvision eager ÷ the best backend at 224, or None)
SPECS = [("small", 3.0), ("large", None)]  # shipped specs, by name
SETTINGS = [(224, 2), (32, 1)]  # (resolution, si)
EAGER_TARGET = 1.03  # our eager ÷ torchvision eager, at most
CUDA_BACKENDS = ("eager", "compiled", "cuda-graph")
CUDA_GRAPH_TARGET_MS = 1.0  # Small at 224, batch 1, cuda-graph, at most
REFERENCES = ("torchvision", "timm") if importlib.util.find_spec("timm") else ("torchvision",)


def eager_verdict(row: measure.LatencyRow) -> str:
    if row.torchvision_ms is None or row.median_ms is None:
        return "no torchvision twin"
    ratio = row.median_ms / row.torchvision_ms
    met = "met" if ratio <= EAGER_TARGET else "NOT met"
    shown = f"{ratio:.3f} (target ≤ {EAGER_TARGET:g}: {met})"
    if row.timm_ms is not None:
        shown += f"; our eager ÷ timm eager = {row.median_ms / row.timm_ms:.3f}"
    return shown


def best_verdict(rows: list[measure.LatencyRow], target: float | None) -> str | None:
    best = max((r for r in rows if r.speedup), key=lambda r: r.speedup, default=None)
    if best is None:
        return None
    shown = f"torchvision eager ÷ best ({best.backend}) = {best.speedup:.2f}"
    if target is None:
        return shown
    return f"{shown} (target ≥ {target:g}: {'met' if best.speedup >= target else 'NOT met'})"


def cuda_verdict(rows: list[measure.LatencyRow]) -> str | None:
    graph = next((r for r in rows if r.backend == "cuda-graph" and r.median_ms), None)
    if graph is None:
        return None
    met = "met" if graph.median_ms <= CUDA_GRAPH_TARGET_MS else "NOT met"
    return f"cuda-graph {graph.median_ms:.3f} ms (target ≤ {CUDA_GRAPH_TARGET_MS:g} ms: {met})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--device", choices=measure.DEVICES, default="cpu")
    parser.add_argument(
        "--backends", nargs="+", help="default: all on cpu, eager compiled and cuda-graph on cuda"
    )
    parser.add_argument("--resolutions", nargs="+", type=int, default=[r for r, _ in SETTINGS])
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.backends = args.backends or list(CUDA_BACKENDS if cuda else measure.BACKENDS)
    print(measure.header(1, args.runs, args.warmup, REFERENCES), flush=True)
    for resolution, si in SETTINGS:
        if resolution not in args.resolutions:
            continue
        rows, verdicts = [], []
        for spec, best_target in SPECS:
            mine = measure.measure(
                [spec],
                widths=(1.0,),
                devices=[args.device],
                backends=tuple(args.backends),
                resolution=resolution,
                overrides={"si": si, "num_classes": 1000},
                reference=REFERENCES,
                runs=args.runs,
                warmup=args.warmup,
                progress=lambda line: print(f"timing {line}", file=sys.stderr, flush=True),
            )
            rows += mine
            name = mine[0].spec
            eager = next((r for r in mine if r.backend == "eager"), None)
            if eager is not None:
                verdicts.append(f"  {name}: our eager ÷ torchvision eager = {eager_verdict(eager)}")
            if cuda and resolution == 224 and spec == "small" and cuda_verdict(mine):
                verdicts.append(f"  {name}: {cuda_verdict(mine)}")
            best = best_verdict(mine, best_target if resolution == 224 and not cuda else None)
            if best and len(args.backends) > 1:
                verdicts.append(f"  {name}: {best}")
        print(f"\nresolution {resolution}, si={si}, width 1.0, 1000 classes")
        print(measure.format_latency(rows, REFERENCES))
        print("\n".join(verdicts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
