"""Our .onnx files (deploy/runtimes/onnx_model.py): export's float file carries the metadata a
checkpoint carries, so eval and infer run it in ONNX Runtime with the checkpoint's results; a
foreign, truncated or tampered .onnx is one paragraph, exit 2, and left as it was."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from mnv3spec.deploy.runtimes import load_any, onnx_model
from mnv3spec.errors import CheckpointError
from mnv3spec.weights.checkpoint import read_metadata

from .conftest import run_cli


def test_export_writes_the_checkpoints_metadata_into_the_onnx(tiny_run, tiny_onnx):
    checkpoint = tiny_run.folder / "best.safetensors"
    assert tiny_onnx.stdout.startswith(f"wrote {tiny_onnx.path} (onnx, opset ")
    assert onnx_model.onnx_format(tiny_onnx.path) == onnx_model.FLOAT
    assert onnx_model.onnx_format(checkpoint) is None
    props = {p.key: p.value for p in onnx.load(str(tiny_onnx.path)).metadata_props}
    assert set(props) == {"format", "spec", "classes", "resolution", "mean", "std", "extra"}
    model, meta = onnx_model.load_onnx(tiny_onnx.path)
    want = read_metadata(checkpoint)
    for key in ("classes", "resolution", "mean", "std", "extra"):
        assert meta[key] == want[key], key
    assert meta["resolution"] == 16 and len(meta["classes"]) == 10
    assert model.spec.to_yaml() == props["spec"]
    assert isinstance(load_any(tiny_onnx.path)[0], onnx_model.OnnxModel)


def test_eval_of_the_float_onnx_gives_the_checkpoints_figures(tiny_run, tiny_onnx):
    results = [run_cli("eval", p) for p in (tiny_run.folder / "best.safetensors", tiny_onnx.path)]
    assert [r.returncode for r in results] == [0, 0], results[1].stderr
    figures = [r.stdout.split(": ", 1)[1].split("  loss")[0] for r in results]
    losses = [float(r.stdout.split("loss ")[1].split()[0]) for r in results]
    assert figures[0] == figures[1] and "top-1 " in figures[0] and "top-5 " in figures[0]
    assert losses[1] == pytest.approx(losses[0], abs=1e-3)
    assert "(128 validation images)" in results[1].stdout


def test_infer_of_the_float_onnx_gives_the_checkpoints_predictions(tiny_run, tiny_onnx, tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        image = rng.integers(0, 256, (24, 20 + i, 3), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / f"i{i}.png")
    runs = {}
    for path in (tiny_run.folder / "best.safetensors", tiny_onnx.path):
        r = run_cli("infer", "--models", path, "--images", tmp_path, "--json", "--topk", "3")
        assert r.returncode == 0, r.stderr
        (model,) = json.loads(r.stdout)["models"]
        runs[path.suffix] = model["predictions"]
    checkpoint, exported = runs[".safetensors"], runs[".onnx"]
    assert [p["image"] for p in exported] == [p["image"] for p in checkpoint]
    for ours, theirs in zip(exported, checkpoint, strict=True):
        assert [t["class"] for t in ours["top"]] == [t["class"] for t in theirs["top"]]
        assert np.allclose(
            [t["p"] for t in ours["top"]], [t["p"] for t in theirs["top"]], atol=1e-4
        )


def test_a_spec_exported_at_batch_1_carries_numbered_classes_and_runs_a_batch(tmp_path):
    out = tmp_path / "s.onnx"
    args = ("export", "small", "--format", "onnx", "--set", "width=0.25", "--set", "num_classes=4")
    result = run_cli(*args, "--resolution", "40", "--out", out)
    assert result.returncode == 0, result.stderr
    model, meta = onnx_model.load_onnx(out)
    assert meta["classes"] == ["0", "1", "2", "3"] and meta["resolution"] == 40  # as exported
    assert meta["mean"] == (0.0, 0.0, 0.0) and meta["std"] == (1.0, 1.0, 1.0)
    assert meta["extra"] == {"random_init": True} and model.spec.resolution == 32  # the spec's
    x = torch.randn(3, 3, 40, 40)  # the graph takes one image: the module runs them one by one
    one_by_one = torch.cat([model(image[None]) for image in x])
    assert model(x).shape == (3, 4) and torch.equal(model(x), one_by_one)


def _foreign(path):
    """An ONNX model of another tool: a graph with no metadata of ours."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 16, 16])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, producer_name="pytorch"), str(path))


def _tampered(key, value):
    def damage(path):
        proto = onnx.load(str(path))
        (prop,) = [p for p in proto.metadata_props if p.key == key]
        prop.value = value
        onnx.save(proto, str(path))

    return damage


def _truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BAD = {
    "foreign": (_foreign, "this is an ONNX model without mnv3spec's metadata (spec, class names"),
    "truncated": (_truncated, "not a readable ONNX file (DecodeError)"),
    "other format": (_tampered("format", "mnv3spec-int9"), "without mnv3spec's metadata"),
    "classes": (_tampered("classes", '["a", "b"]'), "damaged: 2 class names for a spec with num_"),
    "resolution": (_tampered("resolution", "32"), "its input is N×3×16×16, where the metadata"),
    "spec": (_tampered("spec", "layers: [nope"), "damaged metadata ("),
    "mean": (_tampered("mean", "[0.5]"), "damaged"),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    Image.new("RGB", (20, 16), (10, 200, 30)).save(folder / "green.png")
    return folder


@pytest.mark.parametrize("command", ["eval", "infer"])
@pytest.mark.parametrize("case", list(BAD))
def test_a_foreign_truncated_or_tampered_onnx_is_one_paragraph(
    tiny_onnx, images, tmp_path, case, command
):
    damage, message = BAD[case]
    path = tmp_path / "best.onnx"
    shutil.copyfile(tiny_onnx.path, path)
    damage(path)
    before = path.read_bytes()
    infer = ["infer", "--models", path, "--images", images]
    result = run_cli(*(infer if command == "infer" else ["eval", path]))
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and str(path) in result.stderr
    assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


def test_load_onnx_names_what_it_wants(tiny_onnx):
    with pytest.raises(CheckpointError, match="an ONNX file, but not an mnv3spec int8 model"):
        onnx_model.load_onnx(tiny_onnx.path, formats=(onnx_model.INT8,))
