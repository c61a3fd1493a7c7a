"""Latency predicted from the look-up table against measured, for the shipped specs (issue 10).

    python bench/predict.py [--runs 100] [--warmup 20] [--resolution 224 --si 2]

First ``latency --table`` (into a temporary file) times every distinct row of Small and Large at
widths 0.25/0.5/0.75/1.0, eager, batch 1, on this CPU; then each whole network is timed again as
``latency`` times it, in a separate pass, and compared with the prediction (sum of the rows +
the median overhead of all eight networks). Target (nn-Meter's criterion): within ±10 %. Not a
test: a loaded machine moves the numbers, so run it on a quiet one and say what load it had.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from mnv3spec import build, load_spec
from mnv3spec.latency import measure, predict
from mnv3spec.text import text_table

SPECS = ("small", "large")
WIDTHS = (0.25, 0.5, 0.75, 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--resolution", type=int, help="default: the spec's (32)")
    parser.add_argument("--si", type=int, default=1, help="2 for the paper's 224 network")
    args = parser.parse_args()
    timing = {"runs": args.runs, "warmup": args.warmup, "batch": 1, "devices": ["cpu"]}
    overrides = {"si": args.si, **({"resolution": args.resolution} if args.resolution else {})}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "table.csv"
        print(
            predict.make_table(
                path,
                SPECS,
                widths=WIDTHS,
                backends=("eager",),
                resolution=None,
                overrides=overrides,
                **timing,
            ),
            flush=True,
        )
        table = predict.read_table(path)
    measured = measure.measure(list(SPECS), widths=WIDTHS, overrides=overrides, **timing)
    lines, errors = [], []
    for row, (spec, width) in zip(measured, [(s, w) for s in SPECS for w in WIDTHS], strict=True):
        model = build(load_spec(spec, width=width, **overrides))
        guess = predict.predict(model, table, "cpu", "eager", 1)
        error = 100 * (guess / row.median_ms - 1)
        errors.append(abs(error))
        lines.append((spec, f"{width:g}", f"{row.median_ms:.3f}", f"{guess:.3f}", f"{error:+.1f}"))
    print(measure.header(1, args.runs, args.warmup))
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; resolution "
        f"{measured[0].resolution}, si {args.si}"
    )
    header = ("spec", "width", "measured ms", "predicted ms", "error %")
    print("\n".join(text_table(header, lines, None, {0})))
    within = sum(e <= 10 for e in errors)
    print(f"{within}/{len(errors)} within ±10 % (target: all); worst {max(errors):.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
