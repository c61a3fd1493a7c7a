"""What inherited weights are worth before any fine-tuning: top-1 of narrowed children of a trained
parent, with channels kept by filter norm (inherit's rule), at random, or by smallest norm.

    python bench/inherit.py PARENT.safetensors [--data-dir DIR] [--seeds 2]

The children are edits of Small's rows (the paper's two kinds of proposal, and a uniform width),
so PARENT is a trained Small at width 1.0; each is evaluated on the validation split of the data
the parent was trained on. Prints one row per child and rule, and how long inherit took.
"""

from __future__ import annotations

import argparse
import time

import torch

from mnv3spec import build
from mnv3spec.data.batches import loader
from mnv3spec.data.datasets import load_dataset
from mnv3spec.train.evaluate import evaluate
from mnv3spec.weights.checkpoint import load_model
from mnv3spec.weights.inherit import filter_norms, inherit

CHILDREN = {
    "bneck5 exp 240→160": {"layers.bneck5.exp": 160},
    "bneck4-6 out 40→32 (a residual group)": {f"layers.bneck{i}.out": 32 for i in (4, 5, 6)},
    "width 1.0→0.75": {"width": 0.75},
}


def rules(seeds: int) -> dict:
    """Name → score of a width's producing filters (higher is kept)."""
    found = {"largest norm": filter_norms, "smallest norm": lambda f: -filter_norms(f)}
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        found[f"random (seed {seed})"] = lambda f, g=g: torch.rand(len(f[0]), generator=g)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parent")
    parser.add_argument("--data-dir", default="./data")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    parent, meta = load_model(args.parent)
    data = meta["extra"].get("data", "cifar100")
    ds = load_dataset(data, args.data_dir, meta["resolution"], num_classes=len(meta["classes"]))
    val = loader(ds.val_images, ds.val_labels, 256, shuffle=False, workers=0, pin_memory=False)
    kw = {"mean": meta["mean"], "std": meta["std"], "device": torch.device("cpu")}
    print(f"parent {args.parent}: top-1 {evaluate(parent, val, **kw).top1:.2f}% on {data}")
    print(f"{'child':40s} {'rule':18s} {'top-1':>7s} {'inherit ms':>10s}")
    for name, edits in CHILDREN.items():
        for rule, score in rules(args.seeds).items():
            child = build(parent.spec.derive(**edits))
            start = time.perf_counter()
            inherit(parent, child, score=score)
            ms = (time.perf_counter() - start) * 1e3
            top1 = evaluate(child, val, **kw).top1
            print(f"{name:40s} {rule:18s} {top1:6.2f}% {ms:10.0f}")


if __name__ == "__main__":
    main()
