"""What a recipe costs per training step: the seed's against the short-budget preset, with and
without ``--ema``, in alternating rounds of one process (the machine is shared: read the ratios).

    python bench/recipe_step.py [--rounds 5] [--steps 10] [--batch 128] [--resolution 32]

Each step is what ``train`` runs per batch, through the same functions: the batch augmented
(crop, flip, and random erasing where the recipe has it) and normalised, the optimiser step with
the recipe's loss (label smoothing), and the average's update where ``--ema`` is on. The model is
specs/small.yaml (width 1.0, si=1, 10 classes) on random uint8 images. Target (issue 22): the
preset slows a step by at most 10 %.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnv3spec import build, load_spec  # noqa: E402
from mnv3spec.data.batches import training_batch  # noqa: E402
from mnv3spec.train.ema import WeightAverage  # noqa: E402
from mnv3spec.train.recipe import make_optimizer, resolve_recipe  # noqa: E402
from mnv3spec.train.steps import train_step  # noqa: E402

VARIANTS = {"seed": ("seed", 0.0), "preset": ("cosine-ls-erase", 0.0)}
VARIANTS["preset + ema 0.999"] = ("cosine-ls-erase", 0.999)


class Variant:
    """One recipe's network, optimiser, loss and average, stepped on the shared batches."""

    def __init__(self, recipe_name: str, ema: float, resolution: int) -> None:
        self.recipe = resolve_recipe(recipe_name, ema=ema)
        torch.manual_seed(0)
        spec = load_spec(ROOT / "specs" / "small.yaml", si=1, resolution=resolution, num_classes=10)
        self.net = build(spec).to(memory_format=torch.channels_last).train()
        self.optimizer = make_optimizer(self.net, self.recipe)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.recipe.label_smoothing)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.average = WeightAverage(self.net, ema) if ema else None
        self.generator = torch.Generator().manual_seed(0)

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        x = training_batch(
            images,
            flip=True,
            erasing=self.recipe.random_erasing,
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
            generator=self.generator,
        )
        if self.average is not None:
            self.average.prepare()
        args = (self.net, self.criterion, self.optimizer, self.scaler, x, labels, None)
        train_step(*args, self.average)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant per round")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--resolution", type=int, default=32)
    args = p.parse_args()
    r = args.resolution
    images = torch.randint(0, 256, (args.batch, 3, r, r), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.batch,))
    variants = {name: Variant(*how, r) for name, how in VARIANTS.items()}
    for v in variants.values():  # warm-up: allocator, oneDNN primitives
        v.step(images, labels)
    seconds = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, v in variants.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                v.step(images, labels)
            seconds[name].append((time.perf_counter() - start) / args.steps)
    print(
        f"specs/small.yaml width 1.0, si=1, {r}×{r}, batch {args.batch}, {torch.get_num_threads()} "
        f"threads, {args.rounds} rounds × {args.steps} steps, torch {torch.__version__}"
    )
    base = statistics.median(seconds["seed"])
    print("| recipe | ms per step (median of rounds) | × seed |")
    print("|---|---:|---:|")
    for name, s in seconds.items():
        ms = statistics.median(s) * 1000
        print(f"| {name} | {ms:.1f} | {statistics.median(s) / base:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
