"""A sweep's trainings, each in a process of its own (:mod:`.worker`) handed its configuration,
so a variant that fails, diverges or is killed cannot take the others down.

Each variant's request is a JSON file beside its log, ``logs/<variant>.json``: the
:class:`~mnv3spec.train.config.TrainConfig` of a new run (config.json's very format), or the run
folder of an interrupted one to resume. One at a time, or one per GPU in parallel, on this
machine; or, given a :class:`ClusterSettings`, as tasks of a Ray cluster (:mod:`.cluster`; it and
its task, :mod:`.node`, alone import ``ray``). The worker process itself is :mod:`.process`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from queue import Queue

from . import process
from .training import INTERRUPTED, ClusterSettings, Training


@contextmanager
def cluster_session(cluster: ClusterSettings | None, out: Path) -> Iterator[None]:
    """Connected to ``cluster`` for the block, its checks passed (reachable, the same Ray, the
    resources a training asks for, ``out`` seen by every node), before anything is written;
    nothing at all without one, and ``ray`` is not imported."""
    if cluster is None:
        yield
        return
    from . import cluster as ray_cluster

    with ray_cluster.connected(cluster, out):
        yield


def local_gpus(device: str) -> int:
    """The GPUs of this machine that trainings on ``device`` (a train flag) run on, one training
    each in parallel (0: one at a time, on the CPU or the one GPU)."""
    import torch

    return torch.cuda.device_count() if device in ("auto", "cuda") else 0


def _environment(gpu: int | None, parallel: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [process.package_root(), env.get("PYTHONPATH")])
    )
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if "OMP_NUM_THREADS" not in env:  # one run alone uses every core; parallel runs share them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


def run_trainings(
    jobs: list[Training],
    logs: Path,
    gpus: int,
    say: Callable[[str], None],
    cluster: ClusterSettings | None = None,
) -> dict[str, tuple[int, str]]:
    """Run the trainings, one at a time, or one per GPU in parallel when ``gpus`` > 1, or as
    tasks of ``cluster`` when one is given (``gpus`` is then the cluster's business); each
    logs to ``logs/<variant>.log``. Returns (exit status, error) by variant id. Ctrl-C (in this
    process or in a worker) stops them all, each run left resumable, and raises
    KeyboardInterrupt: no further variant starts."""
    if cluster is not None and jobs:
        from . import cluster as ray_cluster

        return ray_cluster.run_trainings(jobs, logs, cluster, say)
    return _run_here(jobs, logs, gpus, say)


def _run_here(
    jobs: list[Training], logs: Path, gpus: int, say: Callable[[str], None]
) -> dict[str, tuple[int, str]]:
    logs.mkdir(parents=True, exist_ok=True)
    parallel = max(1, min(gpus, len(jobs)))
    free: Queue[int | None] = Queue()
    for gpu in range(parallel) if gpus > 1 else [None]:
        free.put(gpu)
    errors: dict[str, tuple[int, str]] = {}
    stop = threading.Event()
    running: set[subprocess.Popen] = set()

    def one(i: int, job: Training) -> None:
        gpu = free.get()
        try:
            if stop.is_set():
                return
            on = f" on GPU {gpu}" if gpu is not None else ""
            doing = "training" if job.config is not None else "resuming"
            say(f"[{i}/{len(jobs)}] {doing} {job.variant.id}{on}")
            code, error = _train_one(job, logs, _environment(gpu, parallel), running)
        finally:
            free.put(gpu)
        if code in INTERRUPTED:
            stop.set()
        elif code:
            errors[job.variant.id] = (code, error)
            say(f"[{i}/{len(jobs)}] {job.variant.id} failed: {error}")

    pool = ThreadPoolExecutor(parallel)
    try:
        for fut in [pool.submit(one, i, job) for i, job in enumerate(jobs, 1)]:
            fut.result()
    except KeyboardInterrupt:
        stop.set()
        for proc in list(running):  # Ctrl-C reached us alone (kill -INT): pass it on
            proc.send_signal(signal.SIGINT)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if stop.is_set():
        raise KeyboardInterrupt
    return errors


def _train_one(job: Training, logs: Path, env: dict, running: set) -> tuple[int, str]:
    wait = lambda proc: _wait(proc, running)  # noqa: E731
    return process.run_worker(job.request(), job.variant.id, logs, env, wait)


def _wait(proc: subprocess.Popen, running: set) -> int:
    running.add(proc)
    try:
        return proc.wait()
    finally:
        running.discard(proc)
