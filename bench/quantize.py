"""Issue 11 in one run: float vs int8 top-1 of a checkpoint trained on rendered images, and ONNX
Runtime latency fp32 vs int8 at batch 1 (Small and Large, width 1.0, at 224 with si=2 and at 32
with si=1).

    python bench/quantize.py [--work DIR] [--checkpoint CKPT] [--epochs 10] [--runs 50]

The data is not a photo dataset (there is no internet here): 8 classes of shapes and stripe
patterns (circle, square, triangle, cross, ring, star, horizontal and vertical stripes) drawn
with PIL in random colours, sizes and places, lightly blurred, written as an image folder
(300 train + 60 val images per class at 64 px) and trained on with ``cli.py train`` as a user
would. Targets: int8 top-1 within 1.0 point of float; int8 ≥ 1.5× fp32 for Small at 224. Not a
test: a shared machine moves the milliseconds, so read the ratios (both runners alternate in
the same rounds).
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFilter

from mnv3spec import build, load_spec
from mnv3spec.deploy import quantize
from mnv3spec.latency import measure

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["circle", "square", "triangle", "cross", "ring", "star", "hstripes", "vstripes"]
SETTINGS = [(224, 2), (32, 1)]  # (resolution, si)
WORK = Path(tempfile.gettempdir()) / "mnv3spec-bench-quantize"


def draw(kind: str, size: int, rng: random.Random) -> Image.Image:
    """One image of class ``kind``: the shape in a colour far from the background's."""
    bg = tuple(rng.randint(0, 255) for _ in range(3))
    fg = tuple((c + rng.randint(80, 175)) % 256 for c in bg)
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    r = rng.uniform(0.22, 0.4) * size
    cx, cy = (rng.uniform(r, size - r) for _ in range(2))
    box, w = [cx - r, cy - r, cx + r, cy + r], max(1, int(r / 3))
    if kind == "circle":
        d.ellipse(box, fill=fg)
    elif kind == "square":
        d.rectangle(box, fill=fg)
    elif kind == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    elif kind == "cross":
        d.rectangle([cx - r, cy - w / 2, cx + r, cy + w / 2], fill=fg)
        d.rectangle([cx - w / 2, cy - r, cx + w / 2, cy + r], fill=fg)
    elif kind == "ring":
        d.ellipse(box, outline=fg, width=w)
    elif kind == "star":
        points = []
        for i in range(10):
            q, a = (r if i % 2 == 0 else r / 2.5), math.pi * i / 5 - math.pi / 2
            points.append((cx + q * math.cos(a), cy + q * math.sin(a)))
        d.polygon(points, fg)
    else:
        step = max(2, int(rng.uniform(0.08, 0.16) * size))
        for k in range(0, size, 2 * step):
            d.rectangle(
                [0, k, size, k + step] if kind == "hstripes" else [k, 0, k + step, size], fg
            )
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.0)))


def render(folder: Path, per_class: tuple[int, int] = (300, 60), size: int = 64) -> Path:
    """The shapes dataset as train/<class>/ and val/<class>/ PNGs (kept if already there)."""
    if (folder / "val" / CLASSES[-1]).is_dir():
        return folder
    rng = random.Random(0)
    for split, n in zip(("train", "val"), per_class, strict=True):
        for kind in CLASSES:
            (folder / split / kind).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw(kind, size, rng).save(folder / split / kind / f"{i:04d}.png")
    return folder


def train(data: Path, work: Path, epochs: int, device: str, size: int) -> Path:
    command = [sys.executable, str(ROOT / "cli.py"), "train", str(ROOT / "specs" / "small.yaml")]
    command += ["--data", str(data), "--set", f"resolution={size}", "--width", "0.5"]
    command += ["--epochs", str(epochs), "--lr", "0.05", "--schedule", "cosine", "--seed", "0"]
    command += ["--out", str(work), "--name", "shapes", "--device", device]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return work / "shapes" / "best.safetensors"


def accuracy(checkpoint: Path) -> None:
    r = quantize.quantize_checkpoint(
        checkpoint, checkpoint.with_name("bench.int8.onnx"), force=True
    )
    verdict = "met" if r.drop <= 1.0 else "NOT met"
    print(
        f"top-1 float {r.float_top1:.2f}%  int8 {r.int8_top1:.2f}%  drop {r.drop:.2f} points "
        f"(target ≤ 1.0: {verdict}; {r.images} val images, {r.calib} calibration images)"
    )
    print("ops left in float:", dict(r.float_ops.most_common()), flush=True)


def speed(names: list[str], runs: int, warmup: int) -> None:
    print(f"\nONNX Runtime, CPU, batch 1, {torch.get_num_threads()} thread(s), median of {runs}")
    print(f"{'spec':<22}{'res':>5}{'fp32 ms':>10}{'int8 ms':>10}{'int8 speed-up':>15}")
    for resolution, si in SETTINGS:
        for name in names:
            model = build(load_spec(name, resolution=resolution, si=si)).eval()
            x = torch.randn(1, 3, resolution, resolution)
            runners = {
                "fp32": measure.prepare(model, "onnxruntime", x)[0],
                "int8": measure.prepare(model, "onnxruntime-int8", x)[0],
            }
            times = measure.time_rounds(runners, runs, warmup, "cpu")
            fp32, int8 = (measure.percentiles(times[k])[0] for k in ("fp32", "int8"))
            target = "  (target ≥ 1.5)" if (name, resolution) == ("small", 224) else ""
            print(
                f"{model.spec.name:<22}{resolution:>5}{fp32:>10.3f}{int8:>10.3f}"
                f"{fp32 / int8:>14.2f}×{target}",
                flush=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=WORK, help=f"data and runs (default {WORK})")
    parser.add_argument("--checkpoint", type=Path, help="skip rendering and training")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="auto", help="for training")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--specs", nargs="+", default=["small", "large"], help="for latency")
    parser.add_argument("--size", type=int, default=64, help="rendered image size (px)")
    args = parser.parse_args()
    if not args.skip_accuracy:
        checkpoint = args.checkpoint
        if checkpoint is None:
            data = render(args.work / f"shapes{args.size}", size=args.size)
            checkpoint = train(data, args.work / "runs", args.epochs, args.device, args.size)
        accuracy(checkpoint)
    speed(args.specs, args.runs, args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
