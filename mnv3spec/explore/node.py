"""What a Ray task runs on a cluster's node (:mod:`.cluster`): one training's worker process,
handed plain data and kept free of torch, so that a task starts in milliseconds, not the seconds
an import of torch takes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from . import process


def train(
    request: dict, resume: dict, started: str, name: str, logs: str, threads: int
) -> tuple[int, str]:
    """The task: the worker for ``request`` on this node, with ``threads`` CPU threads, logging
    to ``logs/NAME.log`` where and when each attempt starts and ends. Run again after its node
    was lost, it finds the run started (the file ``started`` exists) and hands the worker
    ``resume`` instead."""
    import ray

    if Path(started).is_file():
        request = resume
    log = Path(logs) / f"{name}.log"
    where = f"node {ray.get_runtime_context().get_node_id()} ({ray.util.get_node_ip_address()})"
    _note(log, f"on {where}")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [process.package_root(), env.get("PYTHONPATH")])
    )
    code, error = process.run_worker(request, name, Path(logs), env, _wait, _worker_setup())
    _note(log, f"exit {code}")
    return code, error


def _note(log: Path, what: str) -> None:
    with open(log, "a") as f:
        f.write(f"# {what} at {datetime.now().isoformat(sep=' ', timespec='milliseconds')}\n")


def _wait(proc: subprocess.Popen) -> int:
    """The worker's exit status; cancelled (ray.cancel raises KeyboardInterrupt here), the
    worker is stopped as Ctrl-C stops it, and waited for."""
    try:
        while True:  # waits in short steps: Ray's interrupt wakes no blocking wait
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait()
        raise


def _worker_setup() -> Callable[[], None]:
    """For the worker process, before it starts: Ctrl-C reaches it (Ray's workers block SIGINT,
    and a child inherits the mask), and, on Linux, it is killed when the task's process ends
    however it ends (its node lost, the driver gone), so no orphan trains on beside a retry."""
    prctl = None
    if sys.platform.startswith("linux"):
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if prctl is not None:
            prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent ended before the line above
                os._exit(1)

    return setup
