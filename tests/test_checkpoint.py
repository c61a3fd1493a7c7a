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
    assert "weights do not fit the embedded spec, the first being layers.r02_bneck" in message
    assert "\n" not in message
