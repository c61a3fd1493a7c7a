"""Recipe against recipe: the seed's and the short-budget preset on Fashion-MNIST, Small, seeded.

    python bench/recipes.py --train-subset 6000             # CPU: 6,000 training images
    python bench/recipes.py --device cuda                    # GPU: all 60,000
    python bench/recipes.py --train-subset 6000 --report     # the table so far, no training

Each (recipe, width) trains as ``cli.py train specs/small.yaml --data fashion-mnist --recipe R
--width W --epochs E --seed S`` would, into OUT/R-wW; a folder already there is resumed (a
finished one is only read), so the bench can be stopped and run again, and two benches with
different ``--recipes`` or ``--widths`` can run side by side. Validation is always the official
10,000 test images. Prints per run: epochs done, best and final test top-1, and the wall time
summed over its epochs (training and evaluation, from metrics.csv).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnv3spec.services.run_folder import RunFolder  # noqa: E402
from mnv3spec.train.config import TrainConfig  # noqa: E402
from mnv3spec.train.recipe import RECIPES  # noqa: E402
from mnv3spec.train.train import resume, train  # noqa: E402


def run_one(args: argparse.Namespace, recipe: str, width: float) -> Path:
    """Train (or continue) one run; its folder."""
    folder = Path(args.out) / f"{recipe}-w{width}"
    if RunFolder(folder).holds_run():
        done = len(RunFolder(folder).read_metrics())
        if done < args.epochs:
            resume(folder, "bench/recipes.py (resume)")
        return folder
    cfg = TrainConfig(
        spec=str(ROOT / "specs" / "small.yaml"),
        overrides={"width": width},
        data="fashion-mnist",
        data_dir=args.data_dir,
        train_subset=args.train_subset,
        epochs=args.epochs,
        device=args.device,
        recipe=recipe,
        seed=args.seed,
        out=args.out,
        name=folder.name,
    )
    train(cfg, "bench/recipes.py")
    return folder


def row(recipe: str, width: float, folder: Path) -> str:
    rows = RunFolder(folder).read_metrics()
    if not rows:
        return f"{recipe:<18} {width:>5}  {'no epoch finished':>30}"
    top1 = [r.val_top1 for r in rows]
    seconds = sum(r.seconds for r in rows)
    return (
        f"{recipe:<18} {width:>5} {len(rows):>6} {max(top1):>8.2f} {top1[-1]:>8.2f} "
        f"{seconds / 60:>8.1f}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", default=["seed", "cosine-ls-erase"], choices=RECIPES)
    p.add_argument("--widths", nargs="+", type=float, default=[1.0, 0.5])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train-subset", type=int, help="training images (default: all 60,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--out", help="default runs/recipes-N-seedS (N: training images, S: --seed)")
    p.add_argument("--report", action="store_true", help="print the table only, train nothing")
    args = p.parse_args()
    default = (
        f"recipes-{args.train_subset or 60000}-seed{args.seed}"  # a seed never resumes another's
    )
    args.out = args.out or str(ROOT / "runs" / default)
    folders = {}
    for width in args.widths:
        for recipe in args.recipes:
            folder = Path(args.out) / f"{recipe}-w{width}"
            folders[recipe, width] = folder if args.report else run_one(args, recipe, width)
    images = f"{args.train_subset or 60000:,} training images"
    print(f"Fashion-MNIST, Small, {images}, {args.epochs} epochs, seed {args.seed}: test top-1 %")
    print(f"{'recipe':<18} {'width':>5} {'epochs':>6} {'best':>8} {'final':>8} {'minutes':>8}")
    for (recipe, width), folder in folders.items():
        print(row(recipe, width, folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
