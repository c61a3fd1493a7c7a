"""Files written for the user: checked before the work, written atomically, errors as UserError."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from mnv3spec import UserError
from mnv3spec.files import atomic_path, check_output, check_output_folder, writing


def test_atomic_path_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "last.safetensors"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]


def test_atomic_path_gives_the_usual_permissions(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
        os.chmod(tmp, 0o600)  # what some writers (safetensors) leave
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_check_output_names_what_is_wrong(tmp_path):
    assert check_output(tmp_path / "lat.png", suffix=".png") == tmp_path / "lat.png"
    with pytest.raises(UserError, match=r"lat\.txt: --plot: must end in \.png"):
        check_output(tmp_path / "lat.txt", suffix=".png", field="--plot")
    with pytest.raises(UserError, match="is a folder; give a file name"):
        check_output(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        check_output(tmp_path / "missing" / "x.csv")


def test_check_output_folder_accepts_folders_it_can_create(tmp_path):
    assert check_output_folder(tmp_path / "runs" / "deeper") == tmp_path / "runs" / "deeper"
    (tmp_path / "afile").write_text("")
    with pytest.raises(UserError, match="is a file; give a folder"):
        check_output_folder(tmp_path / "afile")
    with pytest.raises(UserError, match=r"is inside .*afile, a file"):
        check_output_folder(tmp_path / "afile" / "runs")


def test_writing_turns_disk_errors_into_user_errors(tmp_path):
    target = tmp_path / "metrics.csv"
    full = r"metrics\.csv: cannot write: No space left on device"
    with pytest.raises(UserError, match=full), writing(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert not target.exists() and list(tmp_path.iterdir()) == []
