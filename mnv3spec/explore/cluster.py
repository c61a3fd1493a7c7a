"""A launch's trainings as tasks of a Ray cluster. Each task runs the worker process that
:mod:`.launch` runs on this machine (the same request, log and run folder), on a node that sees
the run folders, and Ray's own fault tolerance does the rest:

- a node lost in the middle of a training is a system failure: Ray runs the task again on another
  node (``max_retries``), and the task, finding the run started, resumes it from its last
  finished epoch;
- a training that fails for its own reason (a bad variant, exit 2; divergence, exit 3) returns its
  exit status as a value, so it is reported as on this machine, never retried
  (``retry_exceptions=False``);
- Ctrl-C cancels every task; a cancelled task passes SIGINT to its worker, which stops as after a
  Ctrl-C at a terminal, its run resumable.

Only this module and the task it sends (:mod:`.node`) import ``ray``, and only when a cluster is
asked for.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError
from ..services.run_folder import RunFolder
from . import node, process
from .training import INTERRUPTED, ClusterSettings, Training

LOCAL = "local"  # the address that starts a cluster on this machine for the launch
RETRIES = 3  # times a task lost with its node is run again
REACH_SECONDS = 10  # to open a connection to the head
PROBE_SECONDS = 20  # for something that answers there to show it is a Ray cluster's head
EXTRA = 'pip install -e ".[cluster]"'
_LOOPBACK = {"localhost", "::1"}
# A cluster on this machine stays on it: its nodes advertise 127.0.0.1, not the machine's outward
# address (Ray reads this when first imported), and send no usage statistics.
_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
_PROBE = "import logging, sys, ray; ray.init(address=sys.argv[1], logging_level=logging.ERROR)"


def _on_loopback(settings: ClusterSettings) -> bool:
    head = settings.head()
    return head is None or head[0] in _LOOPBACK or head[0].startswith("127.")


def _import_ray(settings: ClusterSettings):
    if _on_loopback(settings):
        os.environ.update(_LOOPBACK_ENV)
    try:
        import ray
    except ImportError:
        raise UserError(
            f"running trainings on a Ray cluster needs Ray, which is not installed here: {EXTRA}",
            field="cluster",
        ) from None
    return ray


def _reach(settings: ClusterSettings) -> None:
    """Refuse, within seconds, an address where no Ray cluster answers (ray.init would wait on
    it for minutes): nothing listening, then something that is not a head (in a process of its
    own, killed when it takes too long)."""
    address = settings.cluster.strip()
    host, port = settings.head()
    try:
        socket.create_connection((host, port), timeout=REACH_SECONDS).close()
    except OSError as e:
        raise UserError(
            f"nothing answers at {address} ({getattr(e, 'strerror', None) or e}); start the "
            "cluster (ray start --head) or give its head's address",
            field="cluster",
        ) from None
    cmd = [sys.executable, "-c", _PROBE, address]
    try:
        probe = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_SECONDS)
    except subprocess.TimeoutExpired:
        raise UserError(
            f"{address} answers, but not as a Ray cluster's head within {PROBE_SECONDS} s; give "
            "the address its head printed (ray start --head)",
            field="cluster",
        ) from None
    if probe.returncode != 0:
        raise UserError(_connect_error(address, probe.stderr), field="cluster")


def _connect_error(address: str, said: str) -> str:
    """Ray's reason for not connecting, on one line: a version mismatch is the usual one."""
    lines = [line.strip() for line in said.strip().splitlines() if line.strip()]
    if "Version mismatch" in said:
        start = next(i for i, line in enumerate(lines) if "Version mismatch" in line)
        why = " ".join(lines[start : start + 7]).removeprefix("RuntimeError: ")
        return (
            f"cannot join the cluster at {address}: {why}; this process must run the cluster's "
            "Ray and Python versions"
        )
    return f"cannot join the cluster at {address}: {lines[-1] if lines else 'no reason given'}"


def _init(ray, address: str) -> None:
    logged = {"logging_level": logging.ERROR, "log_to_driver": False}  # the sweep says enough
    env = {"env_vars": {"PYTHONPATH": process.package_root()}}  # tasks import this very package
    if address == LOCAL:
        ray.init(include_dashboard=False, runtime_env=env, **logged)
        return
    try:
        ray.init(address=address, runtime_env=env, **logged)
    except (RuntimeError, ConnectionError) as e:
        ray.shutdown()
        raise UserError(_connect_error(address, str(e)), field="cluster") from None


@contextmanager
def connected(settings: ClusterSettings, out: Path) -> Iterator[None]:
    """Connected to the cluster for the block, after checking that it can run the trainings:
    reachable, the same Ray and Python, a node with the CPUs and GPUs a training asks for, and
    ``out`` seen by every such node. ``os.environ`` is as it was after (ray.init sets some)."""
    address = settings.cluster.strip()
    saved = dict(os.environ)
    try:
        ray = _import_ray(settings)
        if address != LOCAL:
            _reach(settings)
        _init(ray, address)
        try:
            _check_shared(ray, out, _fitting_nodes(ray, settings))
            yield
        finally:
            ray.shutdown()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _fitting_nodes(ray, s: ClusterSettings) -> list[dict]:
    """The alive nodes that can run a training, refused if there is none."""
    nodes = [n for n in ray.nodes() if n["Alive"]]
    gpus, cpus = s.gpus_per_training or 0, s.cpus_per_training or 1  # the least a training holds
    fit = [
        n
        for n in nodes
        if n["Resources"].get("CPU", 0) >= cpus and n["Resources"].get("GPU", 0) >= gpus
    ]
    if fit:
        return fit
    have = "; ".join(
        f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPU, "
        f"{n['Resources'].get('GPU', 0):g} GPU"
        for n in nodes
    )
    short = any(n["Resources"].get("GPU", 0) < gpus for n in nodes)
    raise UserError(
        f"no node of the cluster has the {cpus:g} CPU and {gpus:g} GPU a "
        f"training asks for, so none would ever start (its nodes: {have})",
        field="gpus_per_training" if short else "cpus_per_training",
    )


def _read_marker(path: str) -> str:
    """On a node: what it reads in the driver's marker file ("" when it cannot)."""
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _check_shared(ray, out: Path, nodes: list[dict]) -> None:
    """Refuse unless every node that may run a training reads the marker the driver writes in
    ``out`` (or the nearest folder above it that exists: nothing is created); the marker is
    removed after."""
    folder = next(p for p in (out, *out.absolute().parents) if p.is_dir())
    token = uuid.uuid4().hex
    marker = folder / f".mnv3spec-shared-{token[:12]}"
    marker.write_text(token)
    try:
        seen = _seen_by(ray, str(marker), nodes)
    finally:
        marker.unlink(missing_ok=True)
    if nodes and all(seen.get(n["NodeID"], "") is GONE for n in nodes):
        raise UserError(
            f"has no node left to run on: the {len(nodes)} node(s) the cluster listed all left "
            "it before they could read a file; start the cluster's nodes again",
            file=str(out),
            field="cluster",
        )
    blind = [
        n["NodeManagerAddress"] for n in nodes if seen.get(n["NodeID"], "") not in (token, GONE)
    ]
    if blind:
        raise UserError(
            f"is not seen by every node of the cluster: {len(blind)} of {len(nodes)} nodes "
            f"({', '.join(blind)}) cannot read a file written in {folder}. The run folders must "
            "live where every node sees them: give a folder on storage that every node mounts "
            "at the same path",
            file=str(out),
            field="out",
        )


GONE = None  # what a node read that left the cluster since it was listed: it runs nothing


def _seen_by(ray, marker: str, nodes: list[dict]) -> dict[str, str | None]:
    """What each node reads in ``marker``, by node id: a task pinned to each node; :data:`GONE`
    for a node that left since it was listed (a node removed a moment before was still listed
    alive, and its task could not be scheduled: CI's run of test_cluster, 2026-12-06)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    read = ray.remote(_read_marker)
    refs = {
        n["NodeID"]: read.options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(marker)
        for n in nodes
    }
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=120)
    return {node: _read(ray, ref) for node, ref in refs.items() if ref in ready}


def _read(ray, ref) -> str | None:
    from ray.exceptions import TaskUnschedulableError

    try:
        return ray.get(ref)
    except TaskUnschedulableError:
        return GONE


def run_trainings(
    jobs: list[Training], logs: Path, settings: ClusterSettings, say: Callable[[str], None]
) -> dict[str, tuple[int, str]]:
    """:func:`.launch.run_trainings` on the cluster (connected here unless it is already)."""
    logs.mkdir(parents=True, exist_ok=True)
    import ray

    if ray.is_initialized():
        return _run(ray, jobs, logs, settings, say)
    with connected(settings, logs):
        return _run(ray, jobs, logs, settings, say)


def _run(ray, jobs: list[Training], logs: Path, s: ClusterSettings, say) -> dict:
    resources = ray.cluster_resources()
    alive = [n for n in ray.nodes() if n["Alive"]]
    cpus = s.cpus_each([n["Resources"].get("CPU", 0) for n in alive], len(jobs))
    say(
        f"on the Ray cluster {s.cluster}: {len(alive)} nodes, {resources.get('CPU', 0):g} CPU, "
        f"{resources.get('GPU', 0):g} GPU; {cpus} CPU and {s.gpus_per_training or 0:g} GPU for "
        "each training"
    )
    task = ray.remote(node.train).options(
        num_cpus=cpus,
        num_gpus=s.gpus_per_training or 0,
        max_retries=RETRIES,
        retry_exceptions=False,
    )
    pending = {}
    for i, job in enumerate(jobs, 1):
        doing = "training" if job.config is not None else "resuming"
        say(f"[{i}/{len(jobs)}] {doing} {job.variant.id} on the cluster")
        pending[_submit(task, job, logs, cpus)] = (i, job)
    errors: dict[str, tuple[int, str]] = {}
    try:
        while pending:  # in short waits: Ctrl-C is only seen between them
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            if not ready:
                continue
            i, job = pending.pop(ready[0])
            code, error = _outcome(ray, ready[0])
            if code in INTERRUPTED:
                raise KeyboardInterrupt
            if code:
                errors[job.variant.id] = (code, error)
                say(f"[{i}/{len(jobs)}] {job.variant.id} failed: {error}")
    except KeyboardInterrupt:
        _cancel(ray, list(pending))
        raise
    return errors


def _submit(task, job: Training, logs: Path, threads: int):
    """``job`` as a task, in plain data (the node then imports no torch to read it), with the
    request that resumes it should the task run again."""
    resume = Training(job.variant, job.folder, None).request()
    started = str(job.folder / RunFolder.CONFIG)  # a start writes it first: with it, it resumes
    return task.remote(job.request(), resume, started, job.variant.id, str(logs), threads)


def _outcome(ray, ref) -> tuple[int, str]:
    """A task's (exit status, error); a task Ray gave up on (lost more times than it retries,
    or its worker crashed) is a failure of its training, status 1."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        return 1, f"the cluster lost it: {type(e).__name__}: {lines[0] if lines else ''}"


def _cancel(ray, refs: list) -> None:
    """Cancel the tasks, and give the running ones the time to stop their workers."""
    for ref in refs:
        ray.cancel(ref)
    ray.wait(refs, num_returns=len(refs), timeout=120)
