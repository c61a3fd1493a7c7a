"""Latency targets of issue 4, measured in one run on this machine (batch 1, CPU).

    python bench/latency.py [--runs 100] [--warmup 20]

Ratio = torchvision eager ms ÷ our ms, both medians from the same alternating rounds, so a ratio
above 1 means ours is faster. Targets at 224 with si=2 (the paper's network):
  * our eager ÷ torchvision eager ≥ 0.97 for Small and Large (the compiler adds nothing);
  * the best backend ≥ 3× torchvision eager for Small.
The same table follows at the CIFAR resolution 32 with si=1 (torchvision's twin is given our
strides and shortcuts, see ``mnv3spec.run.latency.torchvision_twin``). Not a test: numbers move with
the machine's load, so run it on a quiet machine and read the ratios, not the milliseconds.
"""

from __future__ import annotations

import argparse
import sys

from mnv3spec.run import latency

# (spec, target for the best backend ÷ torchvision eager at 224, or None)
SPECS = [("small", 3.0), ("large", None)]  # shipped specs, by name
SETTINGS = [(224, 2), (32, 1)]  # (resolution, si)


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "no torchvision twin"
    return f"{value:.2f} (target ≥ {target:g}: {'met' if value >= target else 'NOT met'})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    print(latency.header(1, args.runs, args.warmup), flush=True)
    for resolution, si in SETTINGS:
        rows, verdicts = [], []
        for spec, best_target in SPECS:
            mine = latency.measure(
                [spec],
                widths=(1.0,),
                devices=["cpu"],
                backends=latency.BACKENDS,
                resolution=resolution,
                overrides={"si": si},
                reference=latency.REFERENCE,
                runs=args.runs,
                warmup=args.warmup,
                progress=lambda line: print(f"timing {line}", file=sys.stderr, flush=True),
            )
            rows += mine
            name = mine[0].spec
            eager = next(r.speedup for r in mine if r.backend == "eager")
            verdicts.append(f"  {name}: eager ÷ torchvision eager = {verdict(eager, 0.97)}")
            best = max((r for r in mine if r.speedup), key=lambda r: r.speedup, default=None)
            if best is not None:
                target = best_target if resolution == 224 else None
                shown = verdict(best.speedup, target) if target else f"{best.speedup:.2f}"
                verdicts.append(f"  {name}: best ({best.backend}) ÷ torchvision eager = {shown}")
        print(f"\nresolution {resolution}, si={si}, width 1.0")
        print(latency.format_table(rows))
        print("\n".join(verdicts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
