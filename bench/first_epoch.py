"""Where the first epoch's extra time goes on a GPU (issue #8: find the epoch-1 stall; measure,
don't guess).

    python bench/first_epoch.py               # on a CUDA machine: one table, three fresh processes

Small at 32 px (si=1, width 1.0, 100 classes), batch 128, bf16, channels_last, the training
step as ``cli.py train`` runs it (``mnv3spec.train.steps.captured_step``). Each configuration runs
in a fresh process, since cuDNN's autotune cache and CUDA's loaded kernels live as long as the
process. The configurations:

- ``autotune on``: cuDNN's ``benchmark`` on, as for an unseeded CUDA run;
- ``autotune off``: cuDNN's heuristics pick the algorithms (as for a seeded run);
- ``on, eager loading``: autotune on, ``CUDA_MODULE_LOADING=EAGER`` (every kernel loaded when
  CUDA starts rather than on first use), to tell kernel loading from autotuning.

Each prints seconds for: CUDA's start; the first training step (autotuning and first-use
kernel loading at the training shape); the two later eager steps; the graph capture; a short
batch's first step (80 images, the last of an epoch of 50,000; with autotune on and off) and
its second; the first and the second validation pass over 10,000 images at batch 1,024 (with
autotune on and off); and the steady replay rate, which says what autotuning buys.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnv3spec import build, load_spec  # noqa: E402
from mnv3spec.services.device import amp_dtype  # noqa: E402
from mnv3spec.train.graph import DeviceLR  # noqa: E402
from mnv3spec.train.recipe import RECIPES, make_optimizer  # noqa: E402
from mnv3spec.train.steps import captured_step, train_step  # noqa: E402

CONFIGS = {
    "autotune on": ({}, True),
    "autotune off": ({}, False),
    "on, eager loading": ({"CUDA_MODULE_LOADING": "EAGER"}, True),
}
BATCH, SHORT, VAL, VAL_BATCH = 128, 80, 10_000, 1024
ROWS = {
    "cuda_start": "CUDA start (first tensor on the GPU)",
    "first_step": "first training step (eager)",
    "eager_steps": "2 more eager steps",
    "capture": "graph capture",
    "short_first": "short batch (80): first step",
    "short_second": "short batch (80): second step",
    "val_first": "validation, first pass (10,000 at 1,024)",
    "val_second": "validation, second pass",
    "replay_images_s": "steady replay, images/s",
}


def timed(device: torch.device, fn: Callable[[], object]) -> float:
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    return time.perf_counter() - start


def worker(autotune: bool, device: torch.device, replays: int) -> dict[str, float]:
    """One configuration's timings, in this (fresh) process."""
    out = {}
    start = time.perf_counter()
    torch.zeros(1, device=device)
    out["cuda_start"] = time.perf_counter() - start
    torch.backends.cudnn.benchmark = autotune
    torch.manual_seed(0)
    net = build(load_spec("small", si=1, num_classes=100, resolution=32))
    net = net.to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(net, RECIPES["seed"])
    lr, amp = DeviceLR(optimizer, device), amp_dtype(device)
    criterion = torch.nn.CrossEntropyLoss()
    lr.refresh()
    step = captured_step(net, criterion, optimizer, lr, amp)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        return x, torch.randint(0, 100, (n,), device=device)

    x, y = batch(BATCH)
    out["first_step"] = timed(device, lambda: step(x, y))
    out["eager_steps"] = timed(device, lambda: [step(x, y) for _ in range(2)])
    out["capture"] = timed(device, lambda: step(x, y))
    out["replay_images_s"] = (
        BATCH * replays / timed(device, lambda: [step(x, y) for _ in range(replays)])
    )
    xs, ys = batch(SHORT)
    scaler = torch.amp.GradScaler(enabled=False)

    def short() -> None:
        train_step(net, criterion, optimizer, scaler, xs, ys, amp)

    out["short_first"] = timed(device, short)
    out["short_second"] = timed(device, short)
    val = [batch(min(VAL_BATCH, VAL - i))[0] for i in range(0, VAL, VAL_BATCH)]

    @torch.no_grad()
    def validate() -> None:
        net.eval()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            for v in val:
                net(v)
        net.train()

    out["val_first"] = timed(device, validate)
    out["val_second"] = timed(device, validate)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replays", type=int, default=200, help="replays timed for the steady rate")
    p.add_argument("--worker", choices=["on", "off"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("first_epoch.py times CUDA's first steps; this machine has no CUDA GPU")
        return 2
    device = torch.device("cuda")
    if args.worker:
        print(json.dumps(worker(args.worker == "on", device, args.replays)))
        return 0
    results = {}
    for name, (env, autotune) in CONFIGS.items():
        command = [sys.executable, __file__, "--worker", "on" if autotune else "off"]
        command += ["--replays", str(args.replays)]
        done = subprocess.run(
            command, env={**os.environ, **env}, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr}")
            return 1
        results[name] = json.loads(done.stdout.splitlines()[-1])
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, seconds unless said")
    print(f"{'':44s}" + "".join(f"{name:>20s}" for name in results))
    for key, label in ROWS.items():
        cells = [r[key] for r in results.values()]
        fmt = "{:>20,.0f}" if key.endswith("images_s") else "{:>20.3f}"
        print(f"{label:44s}" + "".join(fmt.format(c) for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
