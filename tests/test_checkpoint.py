"""Weights files carry their spec; nothing but our safetensors files is accepted."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from mnv3spec import CheckpointError, build, load_spec
from mnv3spec.weights.checkpoint import load_model, read_metadata, save_weights

from .conftest import ROOT


def test_round_trip_rebuilds_the_model_from_the_file_alone(tmp_path):
    model = build(load_spec(ROOT / "specs" / "small.yaml", width=0.25, num_classes=3)).eval()
    path = tmp_path / "best.safetensors"
    save_weights(path, model, classes=["cat", "dog", "fox"], mean=(0.1, 0.2, 0.3), std=(1, 2, 3))
    loaded, meta = load_model(path)
    assert meta["classes"] == ["cat", "dog", "fox"]
    assert meta["mean"] == (0.1, 0.2, 0.3) and meta["resolution"] == 32
    assert loaded.spec.params["width"] == 0.25
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]  # no temporary left


def test_foreign_files_are_refused(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not an mnv3spec checkpoint"):
        read_metadata(plain)
    pickle_file = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickle_file)
    with pytest.raises(CheckpointError, match="not a safetensors weights file"):
        read_metadata(pickle_file)
    with pytest.raises(CheckpointError, match="no such file"):
        read_metadata(tmp_path / "missing.safetensors")


def _tampered(tmp_path, **changes: str):
    """A real checkpoint whose metadata fields are replaced by ``changes`` (raw strings)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    good = tmp_path / "good.safetensors"
    save_weights(good, build(load_spec(ROOT / "specs" / "small.yaml", width=0.25, num_classes=2)))
    with safe_open(str(good), framework="pt") as f:
        metadata = {**f.metadata(), **changes}
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(good)), str(bad), metadata=metadata)
    return bad


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mean": '"5"'}, "mean is not a list of finite numbers"),
        ({"std": "[0, 1, 1]"}, "std must be positive"),
        ({"spec": "[1, 2]"}, "the embedded spec is not a mapping"),
        ({"spec": "small"}, "the embedded spec is not a mapping"),
        ({"classes": "3"}, "classes is not a list of names"),
        ({"classes": '["a", "b", "c"]'}, "3 class names for a spec with num_classes 2"),
        ({"resolution": "0"}, r"resolution 0 is outside 1\.\.8192"),
        ({"resolution": "100000"}, r"resolution 100000 is outside 1\.\.8192"),
        ({"mean": "[0.5, 0.5]"}, "mean has 2 values for 3 input channels"),
        ({"resolution": "nope"}, "damaged metadata"),
        ({"spec": "a: &x [1]\nb: *x\n"}, "aliases"),
        ({"version": "99"}, r"metadata has version '99'; this release reads version 1 "),
        ({"classes": '["a", "a"]'}, "classes lists 'a' more than once"),
        ({"mean": "[1" + "0" * 400 + ", 1, 1]"}, "mean is not a list of finite numbers"),
        ({"extra": "[" * 100000}, "damaged metadata"),
        ({"extra": '{"data": 5}'}, "extra.data 5 is not a dataset name or folder"),
        ({"extra": '{"data": "a\\u0000b"}'}, r"extra.data 'a.{4}b' is not a dataset name"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_metadata_from_a_file_is_checked_before_use(tmp_path, changes, message):
    with pytest.raises(CheckpointError, match=message):
        load_model(_tampered(tmp_path, **changes))


def test_weights_that_do_not_fit_the_embedded_spec_are_named_in_one_line(tmp_path):
    wider = build(load_spec(ROOT / "specs" / "small.yaml", width=0.5, num_classes=2)).spec.to_yaml()
    with pytest.raises(CheckpointError) as info:
        load_model(_tampered(tmp_path, spec=wider))
    message = str(info.value)
    assert "weights do not fit the embedded spec, the first being layers.bneck2" in message
    assert "\n" not in message


def test_a_file_without_a_version_is_refused(tmp_path):
    from safetensors import safe_open

    good = tmp_path / "good.safetensors"
    save_weights(good, build(load_spec(ROOT / "specs" / "small.yaml", width=0.25, num_classes=2)))
    with safe_open(str(good), framework="pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k != "version"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match="metadata has no version; this release reads"):
        read_metadata(tmp_path / "old.safetensors")


def _with_tensors(tmp_path, change) -> str:
    """A real checkpoint whose tensors are passed through ``change`` (a dict -> None)."""
    from safetensors import safe_open

    good = tmp_path / "good.safetensors"
    save_weights(good, build(load_spec(ROOT / "specs" / "small.yaml", width=0.25, num_classes=2)))
    with safe_open(str(good), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    change(tensors)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=metadata)
    return str(bad)


def _first_float(tensors: dict) -> str:
    return next(k for k, v in tensors.items() if v.is_floating_point())


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_the_file_and_tensor(tmp_path, value):
    def poison_last(tensors):
        name = [k for k in sorted(tensors) if tensors[k].is_floating_point()][-1]
        flat = tensors[name].clone().reshape(-1)
        flat[-1] = value
        tensors[name] = flat.reshape(tensors[name].shape)

    path = _with_tensors(tmp_path, poison_last)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(info.value).startswith(f"{path}: weight ")
    assert "NaN or infinite values" in str(info.value)


def test_weights_of_the_wrong_kind_of_number_are_refused(tmp_path):
    def to_int(tensors):
        name = _first_float(tensors)
        tensors[name] = tensors[name].to(torch.int32)

    with pytest.raises(
        CheckpointError, match=r"weight \S+ is torch\.int32, expected torch\.float32"
    ):
        load_model(_with_tensors(tmp_path, to_int))


def test_truncated_file_is_refused(tmp_path):
    good = tmp_path / "good.safetensors"
    save_weights(good, build(load_spec(ROOT / "specs" / "small.yaml", width=0.25, num_classes=2)))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a safetensors weights file"):
        load_model(cut)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"not a safetensors weights file \(0 bytes\)"):
        load_model(tmp_path / "empty.safetensors")


def test_files_that_are_not_regular_are_refused_before_reading(tmp_path):
    import os

    (tmp_path / "best.safetensors").mkdir()
    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint file$"):
        read_metadata(tmp_path / "best.safetensors")
    with pytest.raises(CheckpointError, match=r"is a folder; give a \.safetensors file \(e\.g\."):
        read_metadata(tmp_path)
    os.mkfifo(tmp_path / "pipe.safetensors")  # opening it would wait for a writer forever
    with pytest.raises(CheckpointError, match="is not a regular file"):
        read_metadata(tmp_path / "pipe.safetensors")
    (tmp_path / "zero.safetensors").symlink_to("/dev/zero")  # reading it would never end
    with pytest.raises(CheckpointError, match="is not a regular file"):
        read_metadata(tmp_path / "zero.safetensors")


def test_a_header_longer_than_the_limit_or_the_file_is_refused_unread(tmp_path):
    import struct

    from mnv3spec.weights.checkpoint import MAX_HEADER

    (tmp_path / "a.safetensors").write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(CheckpointError, match="header claims 1,152,921,504,606,846,976 bytes"):
        read_metadata(tmp_path / "a.safetensors")
    big = tmp_path / "b.safetensors"
    with open(big, "wb") as f:  # sparse: a big file that takes no disk
        f.write(struct.pack("<Q", MAX_HEADER + 1))
        f.truncate(MAX_HEADER + 100)
    with pytest.raises(CheckpointError, match=f"at most {MAX_HEADER:,} are read"):
        read_metadata(big)


def test_an_embedded_spec_that_does_not_compile_is_named_as_the_files_own(tmp_path):
    """Issue 31: the error names the checkpoint and the row, never a ``<dict>``."""
    from safetensors import safe_open

    good = _tampered(tmp_path)
    with safe_open(str(good), framework="pt") as f:
        spec = f.metadata()["spec"].replace("name: bneck3", "name: forward")
    with pytest.raises(CheckpointError) as info:
        load_model(_tampered(tmp_path, spec=spec))
    message = str(info.value)
    assert "<dict>" not in message and "is taken by PyTorch" in message
    assert message.startswith(f"{tmp_path / 'bad.safetensors'}: its embedded spec does not compile")
