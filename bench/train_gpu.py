"""Training speed on a GPU, side by side on one card and one dataset, with issue #8's targets.

    python bench/train_gpu.py                  # on a CUDA machine: the full table (~5 min)
    python bench/train_gpu.py --device cpu --images 2048 --epochs 2 --no-large --no-default-run

It writes CIFAR-100-shaped random data in the real on-disk format (``cifar-100-python/`` with
train/test/meta pickles) into a temporary ``--data-dir``, so ``cli.py train`` reads it through its
real CIFAR path, and prints, for Small at 32 px (si=1, width 1.0, 100 classes, batch 128):

- the seed's pipeline: PIL transforms, a DataLoader with 0 workers, fp32 NCHW (images/s);
- ``cli.py train --no-graph`` (the eager loop) and ``cli.py train`` (steps replayed as a CUDA
  graph): steady images/s, epoch-1 seconds, and the warm-up line;
- the model step alone with the data already on the device: eager and captured (the ceiling);
- ``cli.py train`` under a 1-process ``torchrun``, and Large's run and step ceilings;
- the train loss per epoch of a captured and an eager run from one seed (on a fifth of the data);
- the whole default run, ``cli.py train specs/small.yaml`` for 20 epochs, start to ``done``;
- each target of issue #8, met or not. ``bench/first_epoch.py`` says where epoch 1's extra
  time goes.
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnv3spec import build, load_spec  # noqa: E402
from mnv3spec.services.run_folder import RunFolder  # noqa: E402
from mnv3spec.train.graph import DeviceLR, GraphStep, sgd_update  # noqa: E402


def write_cifar100(root: Path, train: int, test: int) -> None:
    """Random images and labels in CIFAR-100's python format: dicts with byte keys."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", train), ("test", test)):
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"fine_labels": rng.integers(0, 100, n).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    meta = {b"fine_label_names": [f"class{i}".encode() for i in range(100)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=4))


def seed_pipeline(data_dir: Path, device: torch.device, steps: int) -> float:
    """The seed repo's train.py loop: torchvision transforms on PIL images, fp32, NCHW."""
    import torchvision.transforms as T
    from PIL import Image

    batch = pickle.loads((data_dir / "cifar-100-python" / "train").read_bytes())
    images = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = batch[b"fine_labels"]
    tf = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
        ]
    )

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int):
            return tf(Image.fromarray(images[i])), labels[i]

    loader = torch.utils.data.DataLoader(Images(), batch_size=128, shuffle=True, num_workers=0)
    net = build(load_spec("small", si=1, num_classes=100, resolution=32)).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    seen, start = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 3:
            _sync(device)
            start, seen = time.perf_counter(), 0
        loss = torch.nn.functional.cross_entropy(net(x.to(device)), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
        if i == steps + 3:
            break
    _sync(device)
    return seen / (time.perf_counter() - start)


def step_ceiling(device: torch.device, steps: int, spec: str = "small") -> dict[str, float]:
    """images/s of the model step alone (bf16 on CUDA, channels_last), eager and captured."""
    amp = torch.bfloat16 if device.type == "cuda" else None
    out = {}
    for mode in ("eager", "graph") if device.type == "cuda" else ("eager",):
        net = build(load_spec(spec, si=1, num_classes=100, resolution=32))
        net = net.to(device, memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        lr = DeviceLR(opt, device)
        lr.refresh()

        def step(x, y, net=net, opt=opt, lr=lr):
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = torch.nn.functional.cross_entropy(net(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sgd_update(opt, lr.values)
            return loss.detach(), loss.detach()

        run = GraphStep(step) if mode == "graph" else step
        x = torch.randn(128, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 100, (128,), device=device)
        for _ in range(5):
            run(x, y)
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            run(x, y)
        _sync(device)
        out[mode] = 128 * steps / (time.perf_counter() - start)
    return out


def cli_run(
    data_dir: Path,
    out: Path,
    name: str,
    epochs: int,
    *extra: str,
    spec: str = "small",
    launcher: tuple[str, ...] = (sys.executable,),
) -> dict:
    """``cli.py train`` on the CIFAR folder: wall seconds, epoch-1 seconds, steady images/s,
    the train loss of each epoch, and the lines that say how steps ran."""
    command = [*launcher, str(ROOT / "cli.py"), "train", f"specs/{spec}.yaml"]
    command += ["--data-dir", str(data_dir), "--out", str(out), "--name", name]
    command += ["--epochs", str(epochs), *extra]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    rows = RunFolder(out / name).read_metrics()
    steady = [r.images_per_s for r in rows[1:]] or [rows[0].images_per_s]
    said = [line for line in done.stdout.splitlines() if line.startswith(("warm-up", "steps"))]
    return {
        "wall": wall,
        "epoch1": rows[0].seconds,
        "steady_epoch": sorted(r.seconds for r in rows[1:] or rows)[len(rows[1:]) // 2],
        "steady": sorted(steady)[len(steady) // 2],
        "losses": [r.train_loss for r in rows],
        "notes": "; ".join(said),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def verdict(label: str, value: float, target: float, unit: str, *, at_most: bool = False) -> str:
    met = value <= target if at_most else value >= target
    sign, said = "≤" if at_most else "≥", "met" if met else "NOT met"
    return f"  {label}: {value:,.1f}{unit} (target {sign} {target:,g}{unit}: {said})"


def show(label: str, rate: float, base: float, epoch1: str = "", notes: str = "") -> None:
    print(
        f"{label:48s} {rate:10,.0f} {epoch1:>10s}  ×{rate / base:.1f} of seed  {notes}", flush=True
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=50_000, help="training images (CIFAR: 50,000)")
    p.add_argument("--epochs", type=int, default=4, help="epochs of each loop compared")
    p.add_argument("--steps", type=int, default=100, help="steps timed for the step ceilings")
    p.add_argument("--no-large", action="store_true", help="skip Large's rows")
    p.add_argument("--no-torchrun", action="store_true", help="skip the 1-process torchrun row")
    p.add_argument("--no-default-run", action="store_true", help="skip the 20-epoch default run")
    args = p.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, 32 px, batch 128, {args.images} train images\n")
    print(f"{'what':48s} {'images/s':>10s} {'epoch 1 s':>10s}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "runs"
        write_cifar100(data, args.images, max(args.images // 5, 256))
        seed = seed_pipeline(data, device, args.steps)
        show("seed pipeline (PIL, DataLoader, fp32 NCHW)", seed, seed)
        dev = ["--device", args.device]
        runs = {}
        for key, label, extra in (
            ("eager", "cli.py train --no-graph (eager)", ("--no-graph",)),
            ("default", "cli.py train (default)", ()),
        ):
            r = runs[key] = cli_run(data, out, key, args.epochs, *dev, *extra)
            show(label, r["steady"], seed, f"{r['epoch1']:.1f}", r["notes"])
        ceilings = {"small": step_ceiling(device, args.steps)}
        for mode, rate in ceilings["small"].items():
            show(f"model step alone, {mode}", rate, seed)
        if not args.no_torchrun:
            launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone")
            launcher += ("--nproc_per_node=1",)
            r = runs["torchrun"] = cli_run(data, out, "tr", args.epochs, *dev, launcher=launcher)
            show(
                "torchrun --nproc_per_node=1 cli.py train", r["steady"], seed, f"{r['epoch1']:.1f}"
            )
        if not args.no_large:
            r = runs["large"] = cli_run(data, out, "large", 2, *dev, spec="large")
            show(
                "Large: cli.py train (default)", r["steady"], seed, f"{r['epoch1']:.1f}", r["notes"]
            )
            ceilings["large"] = step_ceiling(device, args.steps, "large")
            for mode, rate in ceilings["large"].items():
                show(f"Large: model step alone, {mode}", rate, seed)
        # The same seed both ways, on a fifth of the data: the captured run's loss curve.
        small_data = Path(tmp) / "small-data"
        write_cifar100(small_data, max(args.images // 5, 256), 256)
        curves = [
            cli_run(small_data, out, f"curve-{i}", 3, *dev, "--seed", "0", *extra)["losses"]
            for i, extra in enumerate(((), ("--no-graph",)))
        ]
        gap = max(abs(a - b) / abs(b) for a, b in zip(*curves, strict=True))
        print(f"\ntrain loss per epoch, seed 0: default {curves[0]}, --no-graph {curves[1]}")
        print(f"  largest relative gap {gap:.2%}")
        default = runs["default"]
        lines = [
            verdict("steady images/s", default["steady"], 15_000, ""),
            verdict("× the seed's pipeline", default["steady"] / seed, 5, "×"),
            verdict("× the eager loop", default["steady"] / runs["eager"]["steady"], 3, "×"),
            verdict(
                "epoch 1 − a steady epoch",
                default["epoch1"] - default["steady_epoch"],
                10,
                " s",
                at_most=True,
            ),
        ]
        if "large" in runs:
            lines.append(verdict("Large steady images/s", runs["large"]["steady"], 8_000, ""))
        if "torchrun" in runs:
            slower = 100 * (1 - runs["torchrun"]["steady"] / default["steady"])
            lines.append(verdict("torchrun 1 process, % slower", slower, 10, " %", at_most=True))
        if not args.no_default_run:
            r = cli_run(data, out, "default20", 20, *dev)
            lines.append(
                verdict("20-epoch default run, start to done", r["wall"], 90, " s", at_most=True)
            )
        print("\ntargets (issue #8, Small unless said):\n" + "\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
