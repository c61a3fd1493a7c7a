"""A training's worker process (:mod:`.worker`), handed its request file and appending to its log;
its exit status and error. Kept free of torch, so that a cluster's task imports it at once."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mnv3spec

from ..files import writing

WORKER = "mnv3spec.explore.worker"


def package_root() -> str:
    """The folder that holds this very package, for a worker's PYTHONPATH."""
    return str(Path(mnv3spec.__file__).resolve().parent.parent)


def importing_this_package(env: dict[str, str]) -> dict[str, str]:
    """``env`` with :func:`package_root` first on PYTHONPATH: a worker runs this very code."""
    path = os.pathsep.join(filter(None, [package_root(), env.get("PYTHONPATH")]))
    return {**env, "PYTHONPATH": path}


def run_worker(
    request: dict,
    name: str,
    logs: Path,
    env: dict,
    wait: Callable[[subprocess.Popen], int],
    preexec_fn: Callable[[], None] | None = None,
) -> tuple[int, str]:
    """Write ``request`` to ``logs/NAME.json``, hand it to a worker process appending to
    ``logs/NAME.log``, and ``wait`` for it; its exit status and, when it failed, the error it
    printed (this run's own last ``error:`` line, else its last line). ``preexec_fn`` runs in the
    child before the worker starts."""
    request_file, log = logs / f"{name}.json", logs / f"{name}.log"
    with writing(request_file) as tmp:
        tmp.write_text(json.dumps(request, indent=2))
    cmd = [sys.executable, "-m", WORKER, str(request_file)]
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(['python', *cmd[1:]])}\n")
        f.flush()
        start = f.tell()
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec_fn
        )
        code = wait(proc)
    if code == 0:
        return 0, ""
    with open(log, "rb") as f:
        f.seek(start)
        lines = f.read().decode(errors="replace").strip().splitlines()
    said = [line for line in lines if line.startswith("error: ")] or lines[-1:]
    last = said[-1].removeprefix("error: ") if said else "(no output)"
    return code, f"train exited with {code}: {last} (log {log})"
