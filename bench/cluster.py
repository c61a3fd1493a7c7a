"""``sweep --cluster`` against the same sweep on this machine alone (issue 30): wall time, and
Ray's overhead per training.

    OMP_NUM_THREADS=1 python bench/cluster.py           # CPU: 12 tiny trainings, both ways
    python bench/cluster.py --gpu                        # on a CUDA machine: 1, 2, 4 per GPU

The CPU part: a 12-variant sweep of tiny trainings (Small at 16 px, width 0.25-0.35, synthetic
data, 1 epoch, one thread each) run without ``--cluster``, one at a time, then on a 3-node Ray
cluster started here (a head and two worker nodes, 1 CPU each, bound to loopback), three at a
time. Ray's overhead per training is read from the training logs, where each task notes when its
worker starts and ends: on each node, the gap between one training's end and the next one's
start (or, for a node's first, between the sweep handing its trainings to Ray and the start) is
time Ray spent returning a result, scheduling the next task and, the first time, starting a
worker.

The GPU part (not run without a GPU): Small at 32 px on ``--cluster local``, 8 variants, with
``--gpus-per-training`` 1, 0.5 and 0.25 (1, 2 and 4 trainings per GPU), and the sweep's summed
images per second: the images all its trainings saw over the span from the first start to the
last end.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
GRIDS = ["--grid", "width=0.25,0.3,0.35", "--grid", "layers.12.se=true,false"]
GRIDS += ["--grid", "layers.3.k=3,5"]  # 3 x 2 x 2 = 12 variants
TINY = ["specs/small.yaml", *GRIDS, "--set", "resolution=16", "--data", "synthetic"]
TINY += ["--batch", "32", "--seed", "0", "--device", "cpu", "--epochs", "1"]
FAST = ["--latency-runs", "1", "--latency-warmup", "1", "--devices", "cpu"]
STARTED = re.compile(r"^# on node (\S+) \(.*\) at (.+)$")
ENDED = re.compile(r"^# exit -?\d+ at (.+)$")


def sweep(out: Path, *more: str) -> tuple[float, float]:
    """Run a sweep in a process; its wall seconds, and when it handed its trainings over (the
    first "training" line it printed, as a time stamp)."""
    cmd = [sys.executable, str(ROOT / "cli.py"), "sweep", *TINY, *FAST, "--out", str(out), *more]
    env = {**os.environ, **LOOPBACK, "PYTHONPATH": str(ROOT)}
    started, handed = time.monotonic(), None
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if handed is None and " training " in line:
            handed = time.time()
    assert proc.wait() == 0, f"{' '.join(cmd)} failed"
    return time.monotonic() - started, handed


def trainings(logs: Path) -> list[tuple[str, float, float]]:
    """(node, start, end) of each training on the cluster, from the lines its task wrote in its
    log as its worker started and ended."""
    rows = []
    for log in sorted(logs.glob("*.log")):
        lines = log.read_text().splitlines()
        (node, start), *_ = [m.groups() for m in map(STARTED.match, lines) if m]
        *_, end = [m.group(1) for m in map(ENDED.match, lines) if m]
        rows.append((node, *(datetime.fromisoformat(t).timestamp() for t in (start, end))))
    return rows


def overhead(rows: list[tuple[str, float, float]], handed: float) -> tuple[float, float, float]:
    """Seconds between a node being free (or the trainings handed over) and a training starting
    on it: the mean per training, and the means of each node's first (a Ray worker starts) and
    of the others."""
    first, later = [], []
    for node in {r[0] for r in rows}:
        free = handed
        for k, (_, start, end) in enumerate(sorted(r for r in rows if r[0] == node)):
            (later if k else first).append(start - free)
            free = end
    mean = sum(first + later) / len(rows)
    return mean, sum(first) / len(first), sum(later) / max(1, len(later))


def cpu_bench() -> None:
    from ray.cluster_utils import Cluster

    os.environ.update(LOOPBACK)
    with tempfile.TemporaryDirectory() as tmp:
        alone, _ = sweep(Path(tmp) / "alone")
        print(f"without --cluster: 12 trainings in {alone:.1f} s", flush=True)
        head = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "include_dashboard": False}
        cluster = Cluster(initialize_head=True, head_node_args=head)
        try:
            for _ in range(2):
                cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
            cluster.wait_for_nodes()
            wall, handed = sweep(Path(tmp) / "cluster", "--cluster", cluster.address)
            rows = trainings(Path(tmp) / "cluster" / "small" / "logs")
        finally:
            cluster.shutdown()
    print(f"--cluster, 3 nodes of 1 CPU: 12 trainings in {wall:.1f} s ({alone / wall:.2f}x)")
    mean, first, later = overhead(rows, handed)
    print(f"Ray's overhead per training: {mean:.2f} s (mean of 12; a node's first {first:.2f} s,")
    print(f"  as a Ray worker starts there; the others {later:.2f} s)")


def gpu_bench() -> None:
    """1, 2 and 4 trainings per GPU: the sweep's summed images per second (needs CUDA)."""
    grid = ["--grid", "width=0.5,0.75,1.0,1.25", "--grid", "layers.12.se=true,false"]
    args = ["specs/small.yaml", *grid, "--set", "resolution=32", "--data", "synthetic"]
    args += ["--epochs", "2", "--device", "cuda", *FAST[:4], "--devices", "cpu"]
    for share in ("1", "0.5", "0.25"):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, str(ROOT / "cli.py"), "sweep", *args, "--out", tmp]
            cmd += ["--cluster", "local", "--gpus-per-training", share]
            env = {**os.environ, **LOOPBACK, "PYTHONPATH": str(ROOT)}
            subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
            print(f"{1 / float(share):g} per GPU: {images_per_s(Path(tmp) / 'small'):.0f} img/s")


def images_per_s(folder: Path) -> float:
    """All the images the sweep's trainings saw, over the span from first start to last end."""
    rows = trainings(folder / "logs")
    images = 0.0
    for run in (folder / "runs").iterdir():
        lines = (run / "metrics.csv").read_text().splitlines()[1:]
        images += sum(float(c[-1]) * float(c[-2]) for c in (line.split(",") for line in lines))
    return images / (max(r[2] for r in rows) - min(r[1] for r in rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", action="store_true", help="the GPU part (needs CUDA)")
    args = p.parse_args()
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            sys.exit("--gpu needs a CUDA device")
        gpu_bench()
    else:
        cpu_bench()


if __name__ == "__main__":
    main()
