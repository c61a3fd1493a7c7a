"""The run folder's files: a full disk or a bad name is a user error, never a traceback."""

from __future__ import annotations

import errno
import os

import pytest
from safetensors import SafetensorError

from mnv3spec import build, load_spec
from mnv3spec.errors import UserError
from mnv3spec.services import run_folder
from mnv3spec.weights import checkpoint

from .conftest import ROOT

ROW = run_folder.MetricsRow(**dict.fromkeys(run_folder.METRICS, 1.0))


def disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("name", ["../../etc/x", "a/b", "a\\b", ".", "..", ""])
def test_a_run_name_is_one_folder_inside_out(name):
    with pytest.raises(UserError, match="must be a plain folder name"):
        run_folder.check_run_name(name)


def test_a_full_disk_while_writing_metrics_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", disk_full)  # as the finished file is renamed into place
    with pytest.raises(UserError, match=r"metrics\.csv: cannot write: No space left on device"):
        run_folder.RunFolder(tmp_path).write_metrics([ROW])
    assert not list(tmp_path.iterdir())  # no temporary file left behind


def test_a_full_disk_while_saving_weights_names_the_file(tmp_path, monkeypatch):
    def full(*_args, **_kwargs):  # safetensors wraps the operating system's error in its own
        raise SafetensorError("I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full)
    net = build(load_spec(ROOT / "specs" / "small.yaml", width=0.25, num_classes=2))
    with pytest.raises(UserError, match=r"last\.safetensors: cannot write: .*No space left"):
        run_folder.RunFolder(tmp_path).save_epoch(net, run_folder.EpochFiles([ROW], True), {})


def test_resume_of_a_file_says_it_takes_a_folder(tmp_path):
    (tmp_path / "best.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="is a file; give a run folder") as e:
        run_folder.RunFolder(tmp_path / "best.safetensors").read_config()
    assert e.value.field == "resume"


def test_a_locked_run_folder_refuses_a_second_holder_and_is_left_clean(tmp_path):
    with run_folder.RunFolder(tmp_path).locked():
        assert f"pid {os.getpid()} on " in (tmp_path / ".lock").read_text()
        held = pytest.raises(UserError, match=r"is in use by another training \(pid \d+ on ")
        with held, run_folder.RunFolder(tmp_path).locked():
            pass
    assert not list(tmp_path.iterdir())
    with run_folder.RunFolder(tmp_path).locked():  # free again once its holder has gone
        pass


def test_run_folders_are_created_exclusively(tmp_path):
    made = [run_folder.RunFolder.create(tmp_path / "out", None, "small").path for _ in range(3)]
    assert [p.name for p in made] == ["small", "small-2", "small-3"]
    (made[0] / ".lock").write_text("")  # a run killed before it wrote anything: free
    assert run_folder.RunFolder.create(tmp_path / "out", "small", "-").path == made[0]
    (made[1] / "metrics.csv").write_text("")
    with pytest.raises(UserError, match="small-2 already holds a run"):
        run_folder.RunFolder.create(tmp_path / "out", "small-2", "-")


@pytest.mark.parametrize(
    "left, free",
    [
        ([".lock", ".config.json.0123abcd.tmp"], True),  # a start stopped before config.json
        ([".lock", "config.json"], False),  # a run started: resume it
        (["spec.yaml"], False),  # it may be a user's own: never taken by its name
        (["command.txt"], False),
        (["spec.yaml", "notes.txt"], False),
        ([".notes.tmp"], False),  # named like none of ours
    ],
)
def test_only_a_folder_left_by_a_start_stopped_before_its_settings_is_free(tmp_path, left, free):
    """config.json is the first file a start writes: without it, only the lock and temporary
    files can be ours, and the same command starts again."""
    (tmp_path / "out" / "r").mkdir(parents=True)
    for name in left:
        (tmp_path / "out" / "r" / name).write_text("x")
    if free:
        assert run_folder.RunFolder.create(tmp_path / "out", "r", "-").path.name == "r"
    else:
        with pytest.raises(UserError, match="r already holds a run"):
            run_folder.RunFolder.create(tmp_path / "out", "r", "-")


def test_a_start_writes_its_settings_first_and_removes_a_killed_process_temporaries(tmp_path):
    folder = run_folder.RunFolder(tmp_path)
    (tmp_path / ".resume.pt.0123abcd.tmp").write_bytes(b"left by kill -9")
    net = build(load_spec(ROOT / "specs" / "small.yaml", width=0.25, num_classes=2))
    written = []
    real = os.replace

    def replace(src, dst):
        written.append(os.path.basename(dst))
        real(src, dst)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(os, "replace", replace)
        folder.write_start(net, {"epochs": 1}, "new")
    assert written == ["config.json", "spec.yaml"] and folder.holds_run()
    folder.write_start(net, {"epochs": 2}, "resumed")  # a resume adds its line
    assert (tmp_path / "command.txt").read_text() == "new\nresumed\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["command.txt", "config.json", "spec.yaml"]


@pytest.mark.parametrize(
    "lines, line, message",
    [
        (["epoch,lr"], 1, "the header is not epoch,lr,"),
        ([",".join(run_folder.METRICS), "1" + ",1" * 8, "2,x" + ",1" * 7], 3, "epoch 2"),
        ([",".join(run_folder.METRICS), "2" + ",1" * 8], 2, "not the row of epoch 1"),
        ([",".join(run_folder.METRICS), "1,1"], 2, "not the row of epoch 1"),
    ],
)
def test_a_damaged_metrics_file_names_its_line(tmp_path, lines, line, message):
    path = tmp_path / "metrics.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=message) as e:
        run_folder.RunFolder(tmp_path).read_metrics()
    assert (e.value.file, e.value.line) == (str(path), line)
