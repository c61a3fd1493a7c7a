"""Files written for the user: checked before the work, written atomically, errors as UserError."""

from __future__ import annotations

import errno
import json
import os
import stat
import warnings

import pytest

from mnv3spec import UserError
from mnv3spec.files import atomic_path, check_output, check_output_folder, kind_of, writing

from .conftest import ROOT


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
    assert check_output(tmp_path / "lat.png", "image", suffix=".png") == tmp_path / "lat.png"
    with pytest.raises(UserError, match=r"lat\.txt: plot: must end in \.png"):
        check_output(tmp_path / "lat.txt", "image", suffix=".png", field="plot")
    with pytest.raises(UserError, match="is a folder; give a file name"):
        check_output(tmp_path, "csv")
    with pytest.raises(UserError, match="does not exist"):
        check_output(tmp_path / "missing" / "x.csv", "csv")


def test_an_output_is_never_an_input_whatever_the_path_says(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: mine\n")
    (tmp_path / "link.csv").symlink_to(spec)
    os.link(spec, tmp_path / "hard.csv")
    (tmp_path / "sub").mkdir()
    for same in (spec, tmp_path / "sub" / ".." / "s.yaml", tmp_path / "link.csv"):
        with pytest.raises(UserError, match=r"is also an input of this command \(.*s\.yaml\)"):
            check_output(same, "spec", inputs=[spec], field="csv")
    with pytest.raises(UserError, match="is also an input"):
        check_output(tmp_path / "hard.csv", "csv", inputs=[spec])
    assert spec.read_text() == "name: mine\n"


@pytest.mark.parametrize(
    "name, content, kind",
    [
        ("w.safetensors", (8).to_bytes(8, "little") + b'{"a": 1}', "safetensors"),
        ("plot.png", b"\x89PNG\r\n\x1a\n....", "image"),
        ("s.yaml", b"name: x\n", "spec"),
        ("rows.csv", b"a,b\n1,2\n", "csv"),
        ("m.onnx", b"\x08\x08\x12\x07pytorch", "onnx"),
        ("odd.xyz", b"something", None),
        ("m.pt", b"not a zip", None),  # .pt is TorchScript or torch.save: the bytes must tell
    ],
)
def test_kind_of_reads_signatures_then_suffixes(tmp_path, name, content, kind):
    (tmp_path / name).write_bytes(content)
    assert kind_of(tmp_path / name) == kind


def test_torch_save_and_torchscript_are_told_apart(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(2)}, tmp_path / "state.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still wanted
        torch.jit.save(torch.jit.script(torch.nn.ReLU()), tmp_path / "script.pt")
    assert kind_of(tmp_path / "state.pt") == "torch-save"
    assert kind_of(tmp_path / "script.pt") == "torchscript"
    with pytest.raises(UserError, match=r"exists and is a PyTorch file \(torch\.save\), not a "):
        check_output(tmp_path / "state.pt", "torchscript")
    assert check_output(tmp_path / "script.pt", "torchscript") == tmp_path / "script.pt"


def test_an_existing_file_of_another_kind_is_not_replaced(tmp_path):
    spec = tmp_path / "other.yaml"
    spec.write_bytes((ROOT / "specs" / "small.yaml").read_bytes())
    with pytest.raises(
        UserError, match=r"other\.yaml: csv: exists and is a spec \(YAML\), not a CSV"
    ):
        check_output(spec, "csv", field="csv")
    (tmp_path / "junk.onnx").write_bytes(b"\x00" * 10)  # an onnx suffix is enough to replace it
    assert check_output(tmp_path / "junk.onnx", "onnx") == tmp_path / "junk.onnx"
    (tmp_path / "mystery").write_bytes(b"data")
    with pytest.raises(UserError, match="a file of a kind not recognised, not an ONNX model"):
        check_output(tmp_path / "mystery", "onnx")
    (tmp_path / "empty.pt").touch()  # nothing to lose
    assert check_output(tmp_path / "empty.pt", "onnx") == tmp_path / "empty.pt"
    with pytest.raises(UserError, match="not a regular file"):
        check_output("/dev/null", "csv")


@pytest.mark.parametrize("name", ["table.csv", "m.pte.json", "notes.txt"])
def test_a_spec_is_known_by_its_bytes_whatever_its_name(tmp_path, name):
    """Issue 31: a spec named like a CSV or a sidecar JSON is a spec, and is not replaced."""
    spec = tmp_path / name
    spec.write_bytes((ROOT / "specs" / "small.yaml").read_bytes())
    kind = {".csv": "csv", ".json": "json", ".txt": "text"}[spec.suffix]
    with pytest.raises(UserError, match=r"exists and is a spec \(YAML\), not a"):
        check_output(spec, kind)
    assert kind_of(spec) == "spec"
    plain = tmp_path / "config.yaml"  # YAML that is no spec is the user's, not replaced by one
    plain.write_text("colour: red\n")
    with pytest.raises(UserError, match="is named like a spec \\(YAML\\) but is not one"):
        check_output(plain, "spec")


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


def test_check_path_refuses_what_the_system_cannot_take(tmp_path):
    from mnv3spec.files import check_path

    assert check_path(tmp_path / ("a" * 255)) == tmp_path / ("a" * 255)
    with pytest.raises(UserError, match="has a name of 256 bytes"):
        check_path(tmp_path / ("a" * 256))
    with pytest.raises(UserError, match="has a name of 256 bytes"):  # bytes, not characters
        check_path("é" * 128)
    with pytest.raises(UserError, match=r"caf\\xe9: out: holds bytes that are not UTF-8"):
        check_path("caf\udce9", field="out")


def test_claim_folder_takes_a_new_or_own_folder_only(tmp_path):
    from mnv3spec.files import LOCK_FILE, claim_folder

    assert claim_folder(tmp_path / "new", "m.json", "sweep folder") is True
    assert claim_folder(tmp_path / "new", "m.json", "sweep folder") is False  # empty: free
    (tmp_path / "new" / LOCK_FILE).write_text("")
    assert claim_folder(tmp_path / "new", "m.json", "sweep folder") is False
    (tmp_path / "new" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is a folder that is not a sweep folder"):
        claim_folder(tmp_path / "new", "m.json", "sweep folder")
    (tmp_path / "new" / "m.json").write_text("{}")
    assert claim_folder(tmp_path / "new", "m.json", "sweep folder") is False
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is not a folder"):
        claim_folder(tmp_path / "file", "m.json", "sweep folder")


def test_read_regular_refuses_pipes_folders_and_huge_files(tmp_path):
    from mnv3spec.files import read_regular

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UserError, match="is not a regular file"):
        read_regular(tmp_path / "fifo", 10, what="a table")
    with pytest.raises(UserError, match="is not a regular file"):
        read_regular(tmp_path, 10, what="a table")
    (tmp_path / "big").write_bytes(b"x" * 11)
    with pytest.raises(UserError, match="is 11 bytes, more than a table may be"):
        read_regular(tmp_path / "big", 10, what="a table")
    assert read_regular(tmp_path / "big", 11, what="a table") == b"x" * 11


def test_a_text_file_named_like_a_png_is_not_replaced(tmp_path):
    (tmp_path / "plot.png").write_text("my notes")
    with pytest.raises(UserError, match="is named like a PNG image but is not one"):
        check_output(tmp_path / "plot.png", "image")


def test_a_metadata_json_of_the_users_beside_a_program_is_not_replaced(tmp_path):
    """Issue 31 hunt 4: ``export --format executorch --out mine.pte`` must not replace an unrelated
    ``mine.pte.json``; one that export wrote (it starts with our format key) may be."""
    from mnv3spec.deploy.runtimes import RUNTIMES
    from mnv3spec.deploy.runtimes.phone import FORMAT, check_outputs

    out, runtime = tmp_path / "mine.pte", RUNTIMES["executorch"]
    (tmp_path / "mine.pte.json").write_text('{"my": "notes"}\n')
    with pytest.raises(UserError, match="this command did not write"):
        check_outputs(out, runtime, [])
    assert (tmp_path / "mine.pte.json").read_text() == '{"my": "notes"}\n'
    (tmp_path / "mine.pte.json").write_text(json.dumps({"format": FORMAT, "x": 1}, indent=1))
    assert check_outputs(out, runtime, []) == out
