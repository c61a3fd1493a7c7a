"""``sweep --cluster``: trainings as tasks of a real Ray cluster on this machine (a head and two
worker nodes, bound to loopback), a node lost in the middle of a training, Ctrl-C, a training
that fails for its own reason, and the bad input refused before anything is written; and a sweep
without ``--cluster`` that never imports ``ray``.

The cluster tests share one cluster (module scope) and run on one xdist worker: each node is a
handful of processes, and 2 cores run them slowly.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mnv3spec.train.run_folder import RunFolder

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.xdist_group("ray_cluster")

# Every cluster here stays on loopback: nodes advertise 127.0.0.1 (without the first variable
# Ray advertises the machine's outward address), no usage statistics, no dashboard.
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
NODE = {"node_ip_address": "127.0.0.1"}
TINY = ["specs/small.yaml", "--set", "width=0.25", "--set", "resolution=16"]
TINY += ["--data", "synthetic", "--batch", "32", "--seed", "0", "--device", "cpu"]
FAST = ["--latency-runs", "1", "--latency-warmup", "1", "--devices", "cpu"]
VARIANT = "small"  # a sweep of one spec and no grid: one variant, named after the spec


def sweep_args(out: Path, *more: object) -> list[str]:
    return ["sweep", *TINY, *FAST, "--out", str(out), *map(str, more)]


@pytest.fixture(scope="module")
def cluster():
    """A head that runs no training (0 CPUs: removing a worker never removes it) and two worker
    nodes of 1 CPU each; shut down after the module's tests, passed or failed."""
    with pytest.MonkeyPatch.context() as m:
        for key, value in {**LOOPBACK, "OMP_NUM_THREADS": "1"}.items():
            m.setenv(key, value)
        from ray.cluster_utils import Cluster

        head = {**NODE, "num_cpus": 0, "include_dashboard": False}
        c = Cluster(initialize_head=True, head_node_args=head)
        try:
            for _ in range(2):
                c.add_node(**NODE, num_cpus=1)
            c.wait_for_nodes()
            yield c
        finally:
            c.shutdown()


def cli_process(*args: str, **kwargs) -> subprocess.Popen:
    """``python cli.py ARGS`` as a process of its own, for what signals or kills the driver."""
    env = {**os.environ, **LOOPBACK, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "cli.py"), *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, **kwargs)


def wait_for(condition, timeout: float = 300, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.05)


def finished_epochs(folder: Path) -> int:
    return len(RunFolder(folder).read_metrics()) if (folder / RunFolder.METRICS).is_file() else 0


def same_weights(a: Path, b: Path) -> None:
    left, right = load_file(a), load_file(b)
    assert left.keys() == right.keys()
    assert all(left[k].equal(right[k]) for k in left), "weights differ"


def test_a_sweep_without_cluster_never_imports_ray(tmp_path):
    code = (
        "import sys\nfrom mnv3spec.cli import main\n"
        f"code = main({sweep_args(tmp_path, '--no-train')!r})\n"
        "print(code, 'ray' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.stdout.split()[-2:] == ["0", "False"], done.stderr


@pytest.mark.parametrize(
    "more, message",
    [
        (["--gpus-per-training", "1.5"], "--gpus-per-training: 1.5 is neither a fraction"),
        (["--gpus-per-training", "0"], "--gpus-per-training: 0 is neither a fraction"),
        (["--gpus-per-training", "-0.5"], "neither a fraction in (0, 1]"),
        (["--cpus-per-training", "0"], "--cpus-per-training: 0 is not a whole number"),
        (["--cpus-per-training", "1.5"], "not a whole number of CPUs, 1 or more"),
    ],
)
def test_bad_resources_are_refused_before_any_work(tmp_path, more, message):
    r = run_cli(*sweep_args(tmp_path, "--epochs", "1"), "--cluster", "local", *more)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr and not any(tmp_path.iterdir())


def test_an_address_that_is_not_one_is_refused(tmp_path):
    r = run_cli(*sweep_args(tmp_path), "--cluster", "nohost")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "--cluster: nohost is not host:port, ray://host:port or local" in r.stderr


def test_resources_without_cluster_and_cluster_without_address(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    r = run_cli(*sweep_args(tmp_path), "--gpus-per-training", "1")
    assert r.returncode == 2 and "--gpus-per-training need --cluster" in r.stderr
    r = run_cli(*sweep_args(tmp_path), "--cluster")
    assert r.returncode == 2 and "takes $RAY_ADDRESS, which is not set" in r.stderr
    assert not any(tmp_path.iterdir())


def test_without_ray_installed_the_extra_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as when it is absent
    r = run_cli(*sweep_args(tmp_path), "--cluster", "127.0.0.1:1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert 'needs Ray, which is not installed here: pip install -e ".[cluster]"' in r.stderr
    assert not any(tmp_path.iterdir())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_where_nothing_listens_is_refused_at_once(tmp_path):
    started = time.monotonic()
    r = run_cli(*sweep_args(tmp_path), "--cluster", f"127.0.0.1:{free_port()}")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nothing answers at" in r.stderr
    assert time.monotonic() - started < 30 and not any(tmp_path.iterdir())


def test_an_address_that_answers_but_is_no_ray_head_is_refused_within_30_s(tmp_path):
    with socket.socket() as server:  # accepts, then says nothing
        server.bind(("127.0.0.1", 0))
        server.listen()
        started = time.monotonic()
        r = run_cli(*sweep_args(tmp_path), "--cluster", f"127.0.0.1:{server.getsockname()[1]}")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "answers, but not as a Ray cluster's head" in r.stderr
    assert time.monotonic() - started < 30 and not any(tmp_path.iterdir())
