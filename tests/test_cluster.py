"""``sweep --cluster``: trainings as tasks of a real Ray cluster on this machine (a head and two
worker nodes, bound to loopback), a node lost in the middle of a training, Ctrl-C, a training
that fails for its own reason, and the bad input refused before anything is written; and a sweep
without ``--cluster`` that never imports ``ray``.

The cluster tests share one cluster (module scope) and run on one xdist worker: each node is a
handful of processes, and 2 cores run them slowly.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mnv3spec.errors import UserError
from mnv3spec.files import LOCK_FILE
from mnv3spec.services.run_folder import RunFolder

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
        # the nodes as a terminal starts them, even where the suite runs in the background
        # (`cmd &`, SIGINT ignored, which every process of a node would inherit)
        ignored, c = signal.signal(signal.SIGINT, signal.SIG_DFL), None
        try:
            c = Cluster(initialize_head=True, head_node_args=head)
            for _ in range(2):
                c.add_node(**NODE, num_cpus=1)
            signal.signal(signal.SIGINT, ignored)
            c.wait_for_nodes()
            yield c
        finally:
            signal.signal(signal.SIGINT, ignored)
            if c is not None:
                c.shutdown()


def cli_process(*args: str, **kwargs) -> subprocess.Popen:
    """``python cli.py ARGS`` as a process of its own, for what signals or kills the driver."""
    env = {**os.environ, **LOOPBACK, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "cli.py"), *args]
    # Ctrl-C as at a terminal even where the suite runs in the background (`cmd &`), which starts
    # its children with SIGINT ignored: Python then never raises KeyboardInterrupt
    default = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, preexec_fn=default, **kwargs)


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
        f"code = main({sweep_args(tmp_path, '--epochs', '1')!r})\n"  # one training, here
        "print(code, 'ray' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.stdout.split()[-2:] == ["0", "False"], done.stderr
    assert finished_epochs(tmp_path / VARIANT / "runs" / VARIANT) == 1


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


def test_trainings_on_cpu_share_the_largest_node_unless_told():
    """As a run on this machine alone uses every core: a lone training takes a whole node, those
    sent together share it; --cpus-per-training, or trainings on GPUs, keep their count."""
    from mnv3spec.explore.training import ClusterSettings

    shared = ClusterSettings("local")
    assert shared.cpus_each([2.0], 1) == 2  # adapt's start on the bench's 2 cores
    assert shared.cpus_each([2.0], 2) == 1 and shared.cpus_each([2.0], 5) == 1
    assert shared.cpus_each([0.0, 1.0, 1.0], 1) == 1  # this module's cluster: a head of 0 CPUs
    assert shared.cpus_each([16.0, 4.0], 3) == 5  # all three fit on the largest node at once
    assert ClusterSettings("local", cpus_per_training=1).cpus_each([16.0], 1) == 1
    assert ClusterSettings("local", cpus_per_training=4).cpus_each([16.0], 8) == 4
    assert ClusterSettings("local", gpus_per_training=0.25).cpus_each([16.0], 1) == 1


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


# --- on the module's cluster ------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The weights of the one-variant sweep below trained here, uninterrupted, 1 thread."""
    out = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("OMP_NUM_THREADS", "1")
        r = run_cli(*sweep_args(out, "--epochs", "3"))
    assert r.returncode == 0, r.stderr
    return out / VARIANT / "runs" / VARIANT / RunFolder.LAST


def nodes_in_log(log: Path) -> list[str]:
    """The nodes a training ran on, in order (each attempt writes its node first)."""
    lines = log.read_text().splitlines() if log.is_file() else []
    return [line.split()[3] for line in lines if line.startswith("# on node ")]


def test_a_sweep_runs_its_trainings_on_the_cluster(cluster, tmp_path):
    argv = sweep_args(tmp_path, "--grid", "layers.12.se=true,false", "--epochs", "2")
    r = run_cli(*argv, "--cluster", cluster.address)
    assert r.returncode == 0, r.stderr
    assert "on the Ray cluster 127.0.0.1:" in r.stdout and "3 nodes, 2 CPU, 0 GPU" in r.stdout
    folder = tmp_path / VARIANT
    for variant in ("small-L12.se=true", "small-L12.se=false"):
        assert finished_epochs(folder / "runs" / variant) == 2
        assert len(nodes_in_log(folder / "logs" / f"{variant}.log")) == 1
    rows = (folder / "sweep.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",," not in row.split("small")[-1][:40] for row in rows[1:])
    again = run_cli(*argv, "--cluster", cluster.address)  # finished: nothing is sent
    assert again.returncode == 0 and "2 variants already trained (kept)" in again.stdout
    assert "on the Ray cluster" not in again.stdout


def test_a_diverging_training_is_reported_not_retried(cluster, tmp_path):
    r = run_cli(
        *sweep_args(tmp_path, "--epochs", "2", "--lr", "1e30"), "--cluster", cluster.address
    )
    assert r.returncode == 3, r.stderr
    assert f"{VARIANT} failed: train exited with 3" in r.stdout
    assert len(nodes_in_log(tmp_path / VARIANT / "logs" / f"{VARIANT}.log")) == 1


def test_a_cluster_without_the_gpus_asked_for_is_refused(cluster, tmp_path):
    r = run_cli(*sweep_args(tmp_path), "--cluster", cluster.address, "--gpus-per-training", "0.5")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--gpus-per-training 0.5: no node of the cluster has the 1 CPU and 0.5 GPU" in r.stderr
    assert not any(tmp_path.iterdir())


def test_a_driver_of_another_ray_version_is_refused(cluster, tmp_path, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "__version__", "2.0.0")  # this process now says it runs Ray 2.0.0
    r = run_cli(*sweep_args(tmp_path), "--cluster", cluster.address)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"cannot join the cluster at {cluster.address}: Version mismatch" in r.stderr
    assert "Ray: 2.0.0" in r.stderr and "must run the cluster's Ray and Python" in r.stderr
    assert not any(tmp_path.iterdir())


def test_an_out_the_nodes_do_not_share_is_refused(cluster, tmp_path, monkeypatch):
    from mnv3spec.explore import cluster as on_cluster

    seen = on_cluster._seen_by
    # one node reads nothing, as a node without the shared storage would
    monkeypatch.setattr(on_cluster, "_seen_by", lambda *a: dict(list(seen(*a).items())[1:]))
    r = run_cli(*sweep_args(tmp_path), "--cluster", cluster.address)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "is not seen by every node of the cluster: 1 of 2 nodes (127.0.0.1)" in r.stderr
    assert not any(tmp_path.iterdir())  # the marker is gone too


def start_and_wait_for_epoch_1(cluster, out: Path) -> tuple[subprocess.Popen, Path]:
    """A one-variant sweep of 3 epochs on the cluster, in a process, once epoch 1 is saved
    (epochs take seconds: the test acts well before epoch 2 ends)."""
    argv = sweep_args(out, "--epochs", "3")
    proc = cli_process(*argv, "--cluster", cluster.address, stdout=subprocess.PIPE)
    run = out / VARIANT / "runs" / VARIANT
    # metrics.csv is written last of an epoch's files (resume.pt first): a row, and all are there
    wait_for(lambda: finished_epochs(run) >= 1 or proc.poll() is not None, what="epoch 1")
    assert finished_epochs(run) == 1 and proc.poll() is None, "the training ended too soon"
    return proc, run


def test_ctrl_c_cancels_the_tasks_and_the_same_command_resumes(cluster, tmp_path, reference):
    proc, run = start_and_wait_for_epoch_1(cluster, tmp_path)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, out
    assert (run / RunFolder.RESUME).is_file() and finished_epochs(run) < 3
    r = run_cli(*sweep_args(tmp_path, "--epochs", "3"), "--cluster", cluster.address)
    assert r.returncode == 0 and "resuming small on the cluster" in r.stdout, r.stderr
    same_weights(run / RunFolder.LAST, reference)


def test_a_killed_driver_takes_its_trainings_along_and_the_same_command_resumes(
    cluster, tmp_path, reference
):
    proc, run = start_and_wait_for_epoch_1(cluster, tmp_path)
    proc.kill()  # SIGKILL: the driver has no say; Ray ends its tasks, and their workers
    proc.communicate()
    wait_for(lambda: lock_is_free(run), timeout=120, what="the worker to end")
    assert finished_epochs(run) < 3
    r = run_cli(*sweep_args(tmp_path, "--epochs", "3"), "--cluster", cluster.address)
    assert r.returncode == 0 and "resuming small on the cluster" in r.stdout, r.stderr
    same_weights(run / RunFolder.LAST, reference)


def lock_is_free(run: Path) -> bool:
    """No process holds the run folder's lock (a killed one leaves the file, not the lock)."""
    path = run / LOCK_FILE
    if not path.exists():
        return True
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
    return True


def test_a_training_on_a_lost_node_resumes_on_another(cluster, tmp_path, reference):
    proc, run = start_and_wait_for_epoch_1(cluster, tmp_path)
    log = tmp_path / VARIANT / "logs" / f"{VARIANT}.log"
    (first,) = nodes_in_log(log)
    lost = next(n for n in cluster.worker_nodes if n.node_id == first)
    cluster.remove_node(lost, allow_graceful=False)  # as if the machine went away
    try:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        nodes = nodes_in_log(log)
        assert len(nodes) == 2 and nodes[1] != first, nodes  # run again on the other node
        request = json.loads((log.with_suffix(".json")).read_text())
        assert request == {"resume": str(run), "trusted_bases": []}  # the retry resumed the run
        assert finished_epochs(run) == 3
        same_weights(run / RunFolder.LAST, reference)
    finally:
        cluster.add_node(**NODE, num_cpus=1)  # the cluster as the next test expects it


def test_adapt_sends_its_trainings_to_the_cluster(cluster, tmp_path):
    """adapt's trainings (its start, proposals and retrains all go through ``run_jobs``) run as
    tasks of the cluster it is given; the search around them is tested in test_adapt_*."""
    from mnv3spec.adapt.trainings import Job, run_jobs
    from mnv3spec.explore.launch import cluster_session
    from mnv3spec.explore.training import ClusterSettings

    flags = {"data": "synthetic", "epochs": 1, "batch": 32, "seed": 0, "device": "cpu"}
    job = Job("start", str(ROOT / "specs" / "small.yaml"), {"width": 0.25, "resolution": 16}, {})
    said = []
    with cluster_session(ClusterSettings(cluster.address), tmp_path):
        (run,) = run_jobs([job], tmp_path, flags, said.append, ClusterSettings(cluster.address))
    assert finished_epochs(run.path) == 1
    assert len(nodes_in_log(tmp_path / "logs" / "start.log")) == 1
    assert any("on the cluster" in line for line in said)


def test_a_node_gone_since_it_was_listed_is_not_counted_blind(tmp_path):
    """A node removed a moment before the check may still be listed alive; the task pinned to it
    cannot be scheduled (CI, 2026-12-06: the test after a node's removal failed so). It runs
    nothing, so the check passes on the nodes left, and the marker is removed."""
    from ray.exceptions import TaskUnschedulableError

    from mnv3spec.explore import cluster as on_cluster

    here, gone = "a" * 56, "b" * 56

    class Task:  # a task pinned to a node: its reference is (node, marker)
        def __init__(self, node):
            self.node = node

        def remote(self, marker):
            return self.node, marker

    class Ray:  # the calls _seen_by makes
        def remote(self, read):
            return self

        def options(self, num_cpus, scheduling_strategy):
            return Task(scheduling_strategy.node_id)

        def wait(self, refs, num_returns, timeout):
            return refs, []

        def get(self, ref):
            node, marker = ref
            if node == gone:
                raise TaskUnschedulableError("the node specified doesn't exist any more")
            return Path(marker).read_text() if node == here else ""  # others: not shared

    nodes = [{"NodeID": n, "NodeManagerAddress": "127.0.0.1"} for n in (here, gone)]
    on_cluster._check_shared(Ray(), tmp_path, nodes)  # no error
    assert not any(tmp_path.iterdir())
    with pytest.raises(UserError, match="1 of 2 nodes"):  # one that reads nothing is blind
        on_cluster._check_shared(Ray(), tmp_path, [nodes[0], {**nodes[0], "NodeID": "c" * 56}])
    with pytest.raises(UserError, match="no node left to run on: the 1 node"):  # all gone
        on_cluster._check_shared(Ray(), tmp_path, [nodes[1]])
    assert not any(tmp_path.iterdir())
