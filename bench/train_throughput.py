"""Training images/s: our input pipeline against the seed's, same model, same data, same batch.

    python bench/train_throughput.py [--steps 20] [--warmup 3] [--batch 128]

The model is specs/small.yaml as compiled (width 1.0, si=1, 32×32, 100 classes), trained with the
seed's SGD; the data is random uint8 images laid out N×32×32×3 like the CIFAR pickles. Pipelines:

* seed: torchvision per-image transforms (ToPILImage, RandomCrop(32, padding=4),
  RandomHorizontalFlip, ToTensor, Normalize) through a DataLoader with 2 workers, NCHW tensors;
* ours, NCHW: the uint8 tensor decoded once, mnv3spec.data.batches.augment/normalize per batch;
* ours: the same with channels_last, as ``cli.py train`` runs.

Each pipeline runs in a fresh process of its own, so its peak memory is its own: the resident set
size high-water mark from ``resource.getrusage`` (ru_maxrss) of the training process, and of the
largest DataLoader worker (RUSAGE_CHILDREN). Images/s counts the timed steps after warm-up.
Not a test: the figures move with the machine's load, so read the ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PIPELINES = ("seed", "ours-nchw", "ours")


def cifar_like(n: int):
    """Random images as the CIFAR pickle holds them once reshaped: uint8 N×32×32×3, labels."""
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 100, n).tolist()


def seed_batches(images, labels, batch: int):
    import torch
    import torchvision.transforms as T

    from mnv3spec.data.cifar import CIFAR100_MEAN, CIFAR100_STD

    transform = T.Compose(
        [
            T.ToPILImage(),
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(CIFAR100_MEAN, CIFAR100_STD),
        ]
    )

    class CifarLike(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int):
            return transform(images[i]), labels[i]

    yield from torch.utils.data.DataLoader(CifarLike(), batch, shuffle=True, num_workers=2)


def our_batches(images, labels, batch: int, channels_last: bool):
    import torch

    from mnv3spec.data.batches import augment, batches, normalize
    from mnv3spec.data.cifar import CIFAR100_MEAN, CIFAR100_STD

    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # decoded once, NCHW uint8
    y = torch.tensor(labels)
    g = torch.Generator().manual_seed(0)
    for images_u8, targets in batches(x, y, batch, shuffle=True, generator=g):
        augmented = augment(images_u8, generator=g)
        yield (
            normalize(augmented, CIFAR100_MEAN, CIFAR100_STD, channels_last=channels_last),
            targets,
        )


def run_one(pipeline: str, steps: int, warmup: int, batch: int) -> dict:
    """Train ``warmup + steps`` steps on ``pipeline``'s batches; the timed part's images/s."""
    import torch

    from mnv3spec import build, load_spec
    from mnv3spec.train.recipe import RECIPES, make_optimizer

    torch.manual_seed(0)
    images, labels = cifar_like((steps + warmup) * batch)
    model = build(load_spec(ROOT / "specs" / "small.yaml", si=1, resolution=32, num_classes=100))
    if pipeline == "ours":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, RECIPES["seed"])
    if pipeline == "seed":
        source = seed_batches(images, labels, batch)
    else:
        source = our_batches(images, labels, batch, channels_last=pipeline == "ours")
    model.train()
    for i, (x, y) in enumerate(source):
        if i == warmup:
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    return {
        "images_per_s": steps * batch / seconds,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--only", choices=PIPELINES, help=argparse.SUPPRESS)  # one child process
    args = parser.parse_args()
    if args.only:
        print(json.dumps(run_one(args.only, args.steps, args.warmup, args.batch)))
        return 0

    import torch

    print(
        f"specs/small.yaml width 1.0, si=1, 32×32, batch {args.batch}, {args.warmup} warm-up + "
        f"{args.steps} timed steps, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    results = {}
    for name in PIPELINES:
        cmd = [sys.executable, __file__, "--only", name]
        cmd += [
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--batch",
            str(args.batch),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
    base = results["seed"]["images_per_s"]
    print("| pipeline | images/s | × seed | peak RSS, trainer | peak RSS, largest worker |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        worker = f"{r['worker_rss_mib']:.0f} MiB" if name == "seed" else "no workers"
        print(
            f"| {name} | {r['images_per_s']:.0f} | {r['images_per_s'] / base:.2f}× | "
            f"{r['rss_mib']:.0f} MiB | {worker} |"
        )
    print(f"ratio ours ÷ seed: {results['ours']['images_per_s'] / base:.2f}× (target ≥ 1.5×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
