"""How long compiling a spec takes, against constructing torchvision's hand-written model.

    python bench/build_speed.py [--repeats 20]

Prints the median time per build (YAML read + schema + plan + modules + init) for every shipped
spec at si=2, 1000 classes, and the ratio to torchvision's constructor measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torchvision

import mnv3spec

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = {
    "mobilenet_v3_large": torchvision.models.mobilenet_v3_large,
    "mobilenet_v3_small": torchvision.models.mobilenet_v3_small,
}


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: imports, schema compilation, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, median of {args.repeats} builds")
    print(f"{'spec':28s} {'build ms':>9s} {'torchvision ms':>15s} {'ratio':>6s}")
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        ours = median_ms(
            lambda p=path: mnv3spec.build(mnv3spec.load_spec(p, si=2, num_classes=1000)),
            args.repeats,
        )
        name = mnv3spec.load_spec(path).name
        ref = REFERENCE.get(name)
        if ref:
            theirs = median_ms(ref, args.repeats)
            print(f"{path.name:28s} {ours:9.1f} {theirs:15.1f} {ours / theirs:6.2f}")
        else:
            print(f"{path.name:28s} {ours:9.1f} {'-':>15s} {'-':>6s}")


if __name__ == "__main__":
    main()
