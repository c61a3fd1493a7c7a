"""A sweep's trainings, each in a process of its own (:mod:`.worker`) handed its configuration,
so a variant that fails, diverges or is killed cannot take the others down.

Each variant's request is a JSON file beside its log, ``logs/<variant>.json``: the
:class:`~mnv3spec.train.config.TrainConfig` of a new run (config.json's very format), or the run
folder of an interrupted one to resume. One at a time, or one per GPU in parallel, on this
machine; or, given a :class:`ClusterSettings`, as tasks of a Ray cluster (:mod:`.cluster`; it and
its task, :mod:`.node`, alone import ``ray``). The worker process itself is :mod:`.process`.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

from ..errors import UserError
from ..services.run_folder import RunFolder
from ..spec.variant import trusted_folders
from ..train.config import TrainConfig
from . import process
from .grid import Variant

INTERRUPTED = (130, -signal.SIGINT)  # a training stopped by Ctrl-C (its handler, or the signal)


@dataclass(frozen=True)
class Training:
    """One variant's training: a new run of ``config`` into ``folder``, or (``config`` None) the
    continuation of the interrupted run there."""

    variant: Variant
    folder: RunFolder
    config: TrainConfig | None

    def request(self) -> dict:
        """What the worker is handed: the run, and the folders the user trusts for a variant's
        base (``--allow-base``), which a process of its own would not know otherwise."""
        trusted = {"trusted_bases": list(trusted_folders())}
        if self.config is None:
            return {"resume": str(self.folder), **trusted}
        return {"config": dataclasses.asdict(self.config), **trusted}


@dataclass(frozen=True)
class ClusterSettings:
    """The Ray cluster a launch's trainings run on: ``cluster`` is its address (``host:port`` or
    ``ray://host:port``), or ``"local"`` for one started on this machine for the launch; each
    training is a task holding ``gpus_per_training`` GPUs (a fraction in (0, 1] shares one, as
    Ray shares it) and ``cpus_per_training`` CPUs (its threads)."""

    cluster: str
    gpus_per_training: float | None = None  # None: none (the trainings run on CPU)
    cpus_per_training: float = 1

    def __post_init__(self) -> None:
        gpus, cpus = self.gpus_per_training, self.cpus_per_training
        if gpus is not None and not (0 < gpus <= 1 or _whole(gpus, 1)):
            raise UserError(
                f"{gpus:g} is neither a fraction in (0, 1] (trainings that share a GPU) nor a "
                "whole number of GPUs, 1 or more",
                field="gpus_per_training",
            )
        if not _whole(cpus, 1):
            raise UserError(
                f"{cpus:g} is not a whole number of CPUs, 1 or more", field="cpus_per_training"
            )
        self.head()  # refuses an address that is not one

    def head(self) -> tuple[str, int] | None:
        """The head's host and port (None for ``local``)."""
        address = self.cluster.strip()
        if address == "local":
            return None
        host, colon, port = address.removeprefix("ray://").rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(
                f"{address} is not host:port, ray://host:port or local", field="cluster"
            )
        return host.strip("[]"), int(port)


def _whole(x: float, low: int) -> bool:
    """``x`` is a whole number, at least ``low`` (NaN and infinity are neither)."""
    return x >= low and float(x).is_integer()


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
