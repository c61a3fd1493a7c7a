"""Would a proposal's held-out loss before any fine-tune (its inherited weights alone: seconds)
rank a search's proposals as their fine-tunes did (about 80 s each on the bench's CPU)? For each
step of a finished ``adapt`` folder: every proposal's loss as inherited, beside the loss its
fine-tune reached (trace.csv), and where the step's choice — the best fine-tuned ΔLoss per ms
saved — falls in the order of the inherited ΔLoss per ms. If the choice is always among the first
few, a search could fine-tune only those (the step's cost is its fine-tunes).

    python bench/adapt_proxy.py ADAPT_FOLDER [--steps 1 2 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnv3spec.adapt import steps
from mnv3spec.spec.load import load_spec
from mnv3spec.train.config import TrainConfig
from mnv3spec.train.plan import load_data

REFERENCE = "parent, fine-tuned alike"


def inherited_loss(run: Path, cache: dict) -> float:
    """The held-out loss of ``run``'s network with its parent's weights narrowed into it."""
    config = json.loads((run / "config.json").read_text())
    cfg = TrainConfig(**config)
    spec = load_spec(cfg.spec, **cfg.overrides)
    key = (cfg.data, cfg.train_subset, cfg.holdout, cfg.seed)
    if key not in cache:
        cache[key] = load_data(cfg, spec)
    return steps.inherited(spec, cache[key], cfg, cfg.init).loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--steps", type=int, nargs="*", help="steps to read (default: every one)")
    a = p.parse_args()
    with open(a.folder / "trace.csv") as f:
        rows = list(csv.DictReader(f))
    numbers = sorted({int(r["step"]) for r in rows} - {0})
    cache: dict = {}
    places = []
    for step in a.steps or numbers:
        mine = [r for r in rows if int(r["step"]) == step]
        ref = next((r for r in mine if r["edit"] == REFERENCE), None)
        props = [r for r in mine if r["edit"] != REFERENCE]
        if ref is None or not props:
            continue
        started = time.perf_counter()
        parent_loss = inherited_loss(a.folder / ref["run"], cache)  # the parent itself
        figures = []
        for r in props:
            saved = max(float(r["d_ms"]), 1e-6)
            before = inherited_loss(a.folder / r["run"], cache)
            figures.append((r, (before - parent_loss) / saved, float(r["d_loss"]) / saved))
        by_tuned = sorted(figures, key=lambda f: f[2])
        by_inherited = sorted(figures, key=lambda f: f[1])
        chosen = next((f for f in figures if f[0]["chosen"] == "1"), by_tuned[0])
        place = [f[0]["edit"] for f in by_inherited].index(chosen[0]["edit"]) + 1
        best = [f[0]["edit"] for f in by_inherited].index(by_tuned[0][0]["edit"]) + 1
        places.append((place, best, len(figures)))
        took = time.perf_counter() - started
        print(f"step {step}: {len(figures)} proposals; the step's choice {chosen[0]['edit']} "
              f"ranks {place} by inherited loss per ms (the best fine-tuned ranks {best}); "
              f"{took:.0f} s")  # fmt: skip
        for r, inherited, tuned in by_inherited:
            mark = "  chosen" if r["chosen"] == "1" else ""
            print(f"    {r['edit']:<28} inherited ΔLoss/ms {inherited:+.4f}  "
                  f"fine-tuned {tuned:+.4f}{mark}")  # fmt: skip
    if places:
        for k in (3, 5, 7):
            hits = sum(place <= k for place, _, _ in places)
            best = sum(b <= k for _, b, _ in places)
            print(f"the step's choice among the first {k} by inherited loss: {hits}/{len(places)} "
                  f"steps; the best fine-tuned: {best}/{len(places)}")  # fmt: skip


if __name__ == "__main__":
    main()
