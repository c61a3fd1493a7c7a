"""Shared helpers: the repo root, the CLI run in this process (as fast as a call) or in a real
one (where a process is the point), and tiny checkpoints and runs the tests share."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import traceback
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

# Under pytest-xdist (setup.cfg runs ``-n auto``), each worker takes its share of the cores, and so
# do the processes it starts: torch's thread pools, each sized for the whole machine, would
# oversubscribe the cores and slow every training 20-30×.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    from mnv3spec.services.device import thread_count

    _share = thread_count(int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_share)
    torch.set_num_threads(_share)
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


def run_cli(
    *args, cwd: Path = ROOT, timeout: float = 900, merge: bool = False
) -> subprocess.CompletedProcess:
    """``python cli.py ARGS`` as a user runs it, but in this process: ``main(argv)`` with
    ``sys.argv``, the working folder, stdout and stderr as a fresh process would have them, all
    restored after. An exception that escapes main is printed as Python prints it, exit 1 (as a
    process would end). ``timeout`` guards against a hang (SIGALRM, like subprocess's timeout).
    ``merge``: stderr goes into stdout, interleaved as a terminal shows them (stderr is then "")."""
    from mnv3spec.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    if merge:
        err = out
    saved_argv, saved_cwd, before = sys.argv, os.getcwd(), _process_state()
    _alarm.rang = False
    old_alarm = signal.signal(signal.SIGALRM, _timed_out)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        sys.argv = [str(ROOT / "cli.py"), *argv]
        os.chdir(cwd)
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            warnings.catch_warnings(),
        ):
            _fresh_process_warnings()
            try:
                code = main(argv)
            except SystemExit as e:  # argparse: --help, bad flags
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:
                if _alarm.rang:  # however a library wrapped it (torch.onnx does)
                    raise CliTimeout(f"cli {' '.join(argv)} ran past {timeout} s") from None
                traceback.print_exc()
                code = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_alarm)
        sys.argv = saved_argv
        os.chdir(saved_cwd)
    after = _process_state()
    leaked = {k: (v, after[k]) for k, v in before.items() if after[k] != v}
    assert not leaked, f"cli {' '.join(argv)} left process state changed (before, after): {leaked}"
    return subprocess.CompletedProcess(argv, code, out.getvalue(), "" if merge else err.getvalue())


def _fresh_process_warnings() -> None:
    """Python's own warning filters, as a fresh process starts with them (pytest adds its own),
    and each warning shown again once (catch_warnings forgets those already shown)."""
    warnings.resetwarnings()
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category, append=True)


def _process_state() -> dict:
    """What a command run in this process must leave as it found it."""
    return {
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "cudnn.benchmark": torch.backends.cudnn.benchmark,
        "grad": torch.is_grad_enabled(),
        "dtype": torch.get_default_dtype(),
        # torch's compiler stack sets its cache folders in os.environ when first imported
        "environ": {k: v for k, v in os.environ.items() if not k.startswith("TORCHINDUCTOR_")},
    }


class CliTimeout(Exception):
    """run_cli's command ran past its timeout."""


class _alarm:
    rang = False


def _timed_out(signum, frame):
    _alarm.rang = True
    raise CliTimeout("the command ran past run_cli's timeout")


def run_cli_process(*args, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python cli.py ARGS`` in a real subprocess: for what needs one (the start-up itself, what
    a fresh interpreter imports, exit codes of the real binary)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


# 512 synthetic 16×16 images, batch 32: 16 steps an epoch, well under a second each.
TINY = ["specs/small.yaml", "--data", "synthetic", "--set", "resolution=16", "--width", "0.25"]
TINY += ["--batch", "32", "--seed", "0", "--device", "cpu"]


@dataclass(frozen=True)
class TinyRun:
    folder: Path  # the run folder, one epoch finished
    stdout: str  # what train printed


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """One finished epoch of TINY, trained once for the session: tests that read a run, or copy
    one to damage or continue, share it."""
    out = tmp_path_factory.mktemp("tiny_run")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("OMP_NUM_THREADS", "1")
        result = run_cli("train", *TINY, "--epochs", "1", "--out", out, "--name", "r")
    assert result.returncode == 0, result.stderr
    return TinyRun(out / "r", result.stdout)


@dataclass(frozen=True)
class TinyOnnx:
    path: Path  # tiny_run's best.safetensors as a float .onnx of any batch, with our metadata
    stdout: str  # what export printed


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run, tmp_path_factory) -> TinyOnnx:
    """``export`` of tiny_run's checkpoint to ONNX (``--dynamic-batch``, no ``--out``: beside a
    copy of the checkpoint), done once for the session, as an ONNX export takes seconds of
    tracing. Tests that damage it work on a copy."""
    source = tmp_path_factory.mktemp("tiny_onnx") / "best.safetensors"
    shutil.copyfile(tiny_run.folder / "best.safetensors", source)
    result = run_cli("export", source, "--format", "onnx", "--dynamic-batch")
    assert result.returncode == 0, result.stderr
    return TinyOnnx(source.with_suffix(".onnx"), result.stdout)


# every kind of row the shipped specs have, in 3 blocks: for the tests that lower to phone runtimes
TINY_PHONE = ROOT / "tests" / "data" / "tiny_phone.yaml"


def tiny_checkpoint(
    path: Path,
    classes: list[str],
    spec: Path = ROOT / "specs" / "small.yaml",
    width: float = 0.25,
    **overrides,
) -> torch.nn.Module:
    """Save ``spec`` at ``width`` (by default Small at 0.25), 32×32, as a training run would, with
    weights that give O(1) logits (BN statistics of random input, a larger classifier) so
    predictions are not ties."""
    from mnv3spec import build, load_spec
    from mnv3spec.weights.checkpoint import save_weights

    torch.manual_seed(0)
    model = build(load_spec(spec, width=width, num_classes=len(classes), **overrides))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # the running statistics become those of the one batch below
            m.reset_running_stats()
    with torch.no_grad():
        model.train()(torch.rand(16, 3, 32, 32) * 4 - 2)
        classifier = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        classifier.weight.normal_(0, 3)
    save_weights(path, model.eval(), classes=classes, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    return model


def misdescribe(program: Path, claim: str) -> str:
    """The metadata file beside ``program`` (a tiny_checkpoint's phone program: 32×32, 4 classes)
    edited as by hand to claim resolution 16 (``claim`` "resolution") or 5 classes ("classes"),
    its embedded spec agreeing: its digest, the program's, still matches. Returns what the
    refusal says."""
    import yaml

    from mnv3spec import load_spec
    from mnv3spec.deploy.runtimes.phone import sidecar

    beside = sidecar(program)
    info = json.loads(beside.read_text())
    if claim == "resolution":
        info["resolution"] = 16
        said = f"takes 1×3×32×32 images where {beside.name} claims resolution 16 (1×3×16×16)"
    else:
        info["classes"] = [f"class{i}" for i in range(5)]
        info["spec"] = load_spec(yaml.safe_load(info["spec"]), num_classes=5).to_yaml()
        said = f"gives 1×4 logits where {beside.name} claims 5 classes (1×5)"
    beside.write_text(json.dumps(info))
    return said


def check_misdescribed_program(source: Path, folder: Path, load, claim: str, tmp_path: Path, cli,
                                timeout: float) -> None:  # fmt: skip
    """A copy of the phone program ``source`` whose metadata file claims another resolution or
    class count (:func:`misdescribe`): ``load`` refuses it naming both figures, before an image
    runs; eval prints no top-1; infer skips it and classifies with the good checkpoint of
    ``folder`` beside it."""
    import shutil

    from PIL import Image

    from mnv3spec.deploy.runtimes.phone import sidecar
    from mnv3spec.errors import CheckpointError

    program = tmp_path / f"m{source.suffix}"
    shutil.copy(source, program)
    shutil.copy(sidecar(source), sidecar(program))
    message = misdescribe(program, claim)
    with pytest.raises(CheckpointError) as e:
        load(program)
    assert message in e.value.message and e.value.file == str(program)
    result = cli("eval", program, "--data", "synthetic", timeout=timeout)
    assert result.returncode == 2 and result.stdout == "", result.stdout
    assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(images / "red.png")
    good = folder / "best.safetensors"
    result = cli("infer", "--models", good, program, "--images", images, timeout=timeout)
    assert result.returncode == 0, result.stderr
    said = f"skipped {program}: does not match its metadata: the program {message}"
    assert said in result.stderr
    assert f"{good}: tiny_phone" in result.stdout and "red.png" in result.stdout
    assert str(program) not in result.stdout


def kill_during_epoch_2(tmp_path: Path, *train_args: object) -> Path:
    """``train *train_args --out tmp_path --name killed`` in a real process (three epochs),
    killed while epoch 2 runs: returns the run folder, epoch 1 saved and nothing after."""
    cmd = [sys.executable, str(ROOT / "cli.py"), "train", *map(str, train_args)]
    cmd += ["--out", str(tmp_path), "--name", "killed"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch 1/3"):  # printed once epoch 1 is saved: epoch 2 is running
            proc.kill()
            break
    proc.wait()
    proc.stdout.close()
    return tmp_path / "killed"


@pytest.fixture
def offline(monkeypatch):
    """urlopen fails as it does without network; records the URLs asked for."""
    calls = []

    def urlopen(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls
