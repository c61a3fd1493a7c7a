"""What ``train --resume`` trusts, and what a start loads: a run folder whose files disagree is
refused with exit 2 before any file in it changes; a run stopped between any two of its writes is
continued (by a resume, the same command, or a sweep's or adapt's worker) to the weights of a run
never stopped; the spec is parsed once per start; two runs never share a folder; a run too large
for memory leaves no folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli import main
from mnv3spec.adapt import trainings
from mnv3spec.explore import worker
from mnv3spec.model import builder, memory
from mnv3spec.services.run_folder import RunFolder
from mnv3spec.spec import variant
from mnv3spec.weights.checkpoint import read_metadata

from .conftest import ROOT, run_cli
from .test_cli_train import RUN_FILES, TINY, metrics


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # TINY names specs/small.yaml as a user in the repo would
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def run(tiny_run, tmp_path):
    """The session's run of one finished epoch, copied for a test that damages it."""
    shutil.copytree(tiny_run.folder, tmp_path / "r")
    return tmp_path / "r"


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_start_and_a_resume_each_parse_the_spec_once(tmp_path, monkeypatch, capsys):
    calls = []
    real = variant.read_yaml  # where spec files are read (a variant's bases too)

    def counting(text, file):
        calls.append(file)
        return real(text, file)

    monkeypatch.setattr(variant, "read_yaml", counting)
    assert main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path), "--name", "r"]) == 0
    assert len(calls) == 1, calls
    assert "| cpu, 1 thread, batch 32" in capsys.readouterr().out  # the thread count, on CPU
    calls.clear()
    assert main(["train", "--resume", str(tmp_path / "r")]) == 0
    assert calls == [str(tmp_path / "r" / "spec.yaml")]


def damage_config(run, change):
    config = json.loads((run / "config.json").read_text())
    change(config)
    (run / "config.json").write_text(json.dumps(config))


def other_run(run, tmp_path):
    """resume.pt of a run of another width."""
    args = [*TINY, "--width", "0.5", "--epochs", "1", "--out", tmp_path, "--name", "other"]
    assert main(["train", *map(str, args)]) == 0
    shutil.copy(tmp_path / "other" / "resume.pt", run / "resume.pt")


def edit_resume(run, change):
    saved = torch.load(run / "resume.pt", weights_only=True)
    change(saved)
    torch.save(saved, run / "resume.pt")


def edit_metrics(run, change):
    lines = (run / "metrics.csv").read_text().splitlines()
    (run / "metrics.csv").write_text("\n".join(change(lines)) + "\n")


def edit_spec(run, _tmp_path):
    spec = run / "spec.yaml"
    spec.write_text(spec.read_text().replace("width: 0.25", "width: 0.5"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda run, _: (run / "resume.pt").unlink(), "resume.pt is missing, but metrics.csv "),
        (
            lambda run, _: (run / "resume.pt").write_bytes(b""),
            "resume.pt: is empty (0 bytes)",
        ),
        (
            lambda run, _: damage_config(run, lambda c: c.pop("epochs")),
            "config.json: the field 'epochs' is missing",
        ),
        (
            lambda run, _: damage_config(run, lambda c: c.update(epochs="3")),
            "config.json: the field 'epochs' is '3', expected a whole number",
        ),
        (
            lambda run, _: damage_config(run, lambda c: c.update(batch=True)),
            "config.json: the field 'batch' is True",
        ),
        (
            lambda run, _: damage_config(run, lambda c: c.update(lr="fast")),
            "config.json: the field 'lr' is 'fast', expected a number",
        ),
        (  # issue 31: values SGD or torch would raise a bare ValueError or overflow on
            lambda run, _: damage_config(run, lambda c: c.update(lr=-1)),
            "config.json: the field 'lr' must be a finite number above 0, got -1",
        ),
        (
            lambda run, _: damage_config(run, lambda c: c.update(momentum=-1)),
            "config.json: the field 'momentum' must be a finite number at least 0, got -1",
        ),
        (
            lambda run, _: damage_config(run, lambda c: c.update(seed=2**70)),
            "config.json: the field 'seed' is 1180591620717411303424, expected a whole number",
        ),
        (
            lambda run, _: (run / "config.json").write_text("[" * 100_000),
            "config.json: --resume: damaged: JSON nested thousands of levels deep",
        ),
        (
            lambda run, _: ((run / "config.json").unlink(), (run / "config.json").mkdir()),
            "config.json: --resume: is not a regular file",
        ),
        (
            lambda run, _: ((run / "config.json").unlink(), os.mkfifo(run / "config.json")),
            "config.json: --resume: is not a regular file",
        ),
        (
            lambda run, _: (run / "metrics.csv").write_text(
                (run / "metrics.csv").read_text() + "2,oops\n"
            ),
            "metrics.csv, line 3: not the row of epoch 2",
        ),
        (
            lambda run, _: edit_metrics(run, lambda lines: [*lines, "2" + lines[1][1:]]),
            "resume.pt is after epoch 1 but metrics.csv records 2 epoch(s)",
        ),
        (
            lambda run, _: edit_metrics(run, lambda lines: [lines[0], "1,0.2" + lines[1][5:]]),
            "metrics.csv's row of epoch 1 is not the one resume.pt holds",
        ),
        (
            lambda run, _: edit_resume(run, lambda s: s["files"].update(rows="x")),
            "resume.pt: a damaged resume file (its metrics rows)",
        ),
        (
            lambda run, _: edit_resume(run, lambda s: s["files"].update(rows=[])),
            "resume.pt: holds epoch 1 but the metrics of 0",
        ),
        (other_run, "metrics.csv's row of epoch 1 is not the one resume.pt holds"),
        (edit_spec, "resume.pt: layers."),
        (lambda run, _: (run / "spec.yaml").unlink(), "spec.yaml is missing"),
    ],
)
def test_resume_refuses_a_folder_whose_files_disagree(run, tmp_path, capsys, damage, message):
    damage(run, tmp_path)
    before = snapshot(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert "restore" in err.lower()  # and what to do about it
    assert snapshot(run) == before  # best/last.safetensors, metrics.csv: not a byte changed


def test_resume_of_a_run_folder_in_use_fails_at_once_naming_the_holder(run):
    before = snapshot(run)
    with RunFolder(run).locked():
        result = run_cli("train", "--resume", run)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"is in use by another training (pid {os.getpid()} on " in result.stderr
    assert snapshot(run) == before  # and the lock file is gone with its holder


def test_a_new_run_in_a_named_folder_in_use_fails_at_once(tmp_path):
    (tmp_path / "x").mkdir()
    with RunFolder(tmp_path / "x").locked():
        result = run_cli("train", *TINY, "--epochs", "1", "--out", tmp_path, "--name", "x")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"(pid {os.getpid()} on " in result.stderr
    assert not list((tmp_path / "x").iterdir())


def test_two_runs_started_at_once_with_one_name_never_share_the_folder(tmp_path):
    cmd = [sys.executable, str(ROOT / "cli.py"), "train", *TINY, "--epochs", "1"]
    cmd += ["--out", str(tmp_path), "--name", "same"]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert sorted(code for code, _, _ in results) == [0, 2]
    (_, out, _), (_, _, err) = sorted(results)
    assert "already holds a run" in err or "is in use by another training" in err
    assert "Traceback" not in err
    run = tmp_path / "same"
    assert {p.name for p in run.iterdir()} == RUN_FILES
    assert str(run) in out and len((run / "command.txt").read_text().splitlines()) == 1


def test_a_run_too_large_for_memory_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(memory, "available", lambda device="cpu": 2**20)  # 1 MiB free
    # Refused from the network's shapes, before its weights are made (seconds at a large width).
    monkeypatch.setattr(builder, "init_weights", lambda _: pytest.fail("weights made first"))
    args = [*TINY, "--epochs", "1", "--out", str(tmp_path / "runs"), "--name", "big"]
    assert main(["train", *args]) == 2
    assert "training would need about" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "big").exists()


def test_resume_never_restarts_a_finished_epoch_from_its_weights_alone(run):
    """Without resume.pt and metrics.csv, last.safetensors still records a finished epoch."""
    (run / "resume.pt").unlink()
    (run / "metrics.csv").unlink()
    before = snapshot(run)
    result = run_cli("train", "--resume", run)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "last.safetensors exists" in result.stderr
    assert snapshot(run) == before


def test_resume_of_a_folder_written_before_resume_pt_held_the_metrics(run):
    """Such a resume.pt came after metrics.csv and the weights: the csv's rows are its epochs'."""
    edit_resume(run, lambda s: s.pop("files"))
    rows = metrics(run)
    result = run_cli("train", "--resume", run, "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert metrics(run)[0] == rows[0] and len(metrics(run)) == 2


# --- a run stopped between any two of its writes ------------------------------------------------
# A start writes config.json, spec.yaml, command.txt (appended, after them); each epoch's end
# resume.pt, last and best.safetensors (both epochs of TWO improve), metrics.csv, curves.png.
START = ["config.json", "spec.yaml"]
EPOCH_END = ["resume.pt", "last.safetensors", "best.safetensors", "metrics.csv", "curves.png"]
STOPS = [(name, 1) for name in START] + [(name, e) for e in (1, 2) for name in EPOCH_END]
TWO = [*TINY, "--epochs", "2"]


@contextmanager
def stopped_before(name: str, nth: int):
    """Ctrl-C just before the ``nth`` write of the run folder's file ``name`` lands (each is
    renamed into place)."""
    real, seen = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            seen.append(dst)
            if len(seen) == nth:
                raise KeyboardInterrupt
        return real(src, dst, *args, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(os, "replace", replace)
        yield
    assert len(seen) >= nth, f"{name} was written {len(seen)} time(s), never stopped"


def left_as_killed(run: Path, name: str) -> None:
    """What kill -9 leaves beside Ctrl-C's: the lock file, and the temporary file of the write."""
    (run / ".lock").write_text("pid 1 on gone, since long ago")
    (run / f".{name}.0123abcd.tmp").write_bytes(b"half written")


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """TWO, never stopped."""
    out = tmp_path_factory.mktemp("straight")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("OMP_NUM_THREADS", "1")
        result = run_cli("train", *TWO, "--out", out, "--name", "r")
    assert result.returncode == 0, result.stderr
    return out / "r"


def assert_same_run(run: Path, straight: Path) -> None:
    """``run`` ended as ``straight`` did: weights bit for bit, metrics but for the timings."""
    assert {p.name for p in run.iterdir()} == RUN_FILES
    for name in RunFolder.WEIGHTS:
        a, b = load_file(run / name), load_file(straight / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        assert read_metadata(run / name) == read_metadata(straight / name)
    a, b = (torch.load(r / "resume.pt", weights_only=True)["model"] for r in (run, straight))
    assert all(torch.equal(a[k], b[k]) for k in a)
    timings = ("seconds", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in timings} for r in metrics(run)] == [
        {k: v for k, v in r.items() if k not in timings} for r in metrics(straight)
    ]


@pytest.mark.parametrize("name, nth", STOPS)
def test_a_run_stopped_between_any_two_writes_continues_to_the_same_weights(
    tmp_path, straight, name, nth
):
    """resume.pt is the commit point of an epoch and config.json that of the start: a folder
    with config.json resumes (after the last epoch whose resume.pt is there, or from the start,
    without its spec.yaml too), and one without is taken again by the same command."""
    command = ["train", *TWO, "--out", tmp_path, "--name", "r"]
    run = tmp_path / "r"
    with stopped_before(name, nth):
        assert run_cli(*command).returncode == 130
    left_as_killed(run, name)
    assert RunFolder(run).holds_run() is (name != "config.json")  # the first file of a start
    again = ["train", "--resume", run] if RunFolder(run).holds_run() else command
    result = run_cli(*again)
    assert result.returncode == 0, result.stderr
    assert_same_run(run, straight)
    lines = (run / "command.txt").read_text().splitlines()
    assert len(lines) == (2 if name not in START else 1)  # the start's line, once; the resume's
    done = 0 if name in START else nth - (name == "resume.pt")  # epochs whose resume.pt landed
    resuming = f"resuming {run} after epoch {done} of 2"
    assert resuming in result.stdout if done else "resuming" not in result.stdout


FLAGS = {"data": "synthetic", "batch": 32, "seed": 0, "device": "cpu", "epochs": 2}


def worker_training(job: trainings.Job, runs: Path, request: Path) -> int:
    """What adapt does with ``job`` (and a sweep with a variant, alike): a new run, or the
    resume of the one started in ``runs``, handed to a worker (in this process)."""
    training = trainings._training(job, runs, FLAGS)
    assert training is not None, "taken for finished"
    request.write_text(json.dumps(training.request()))
    return worker.main([str(request)])


@pytest.mark.parametrize(
    "name, nth",
    [
        ("config.json", 1),
        ("spec.yaml", 1),
        ("resume.pt", 1),
        ("metrics.csv", 1),
        ("last.safetensors", 2),
    ],
)
def test_adapt_and_a_sweep_continue_a_training_stopped_between_two_writes(
    tmp_path, tiny_run, name, nth
):
    """A fine-tune starts from its init's weights, also when it starts over (no resume.pt)."""
    init = {"init": str(tiny_run.folder / "best.safetensors")}
    job = trainings.Job("r", "specs/small.yaml", {"width": 0.25, "resolution": 16}, init)
    assert worker_training(job, tmp_path / "straight", tmp_path / "s.json") == 0
    with stopped_before(name, nth):
        assert worker_training(job, tmp_path / "runs", tmp_path / "r.json") == 130
    left_as_killed(tmp_path / "runs" / "r", name)
    assert worker_training(job, tmp_path / "runs", tmp_path / "r.json") == 0
    assert RunFolder(tmp_path / "runs" / "r").finished()
    assert_same_run(tmp_path / "runs" / "r", tmp_path / "straight" / "r")
