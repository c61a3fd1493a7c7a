"""Static int8 quantization (`cli.py quantize`): the accuracy gate, the int8 file against its
fake-quant reference, the file's metadata, sensitivity / keep-float, and bad input."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch

from mnv3spec.data.batches import loader
from mnv3spec.data.datasets import load_dataset
from mnv3spec.deploy import quantize
from mnv3spec.deploy.runtimes import load_any, onnx_model
from mnv3spec.deploy.runtimes.onnx_model import OnnxModel, write_onnx
from mnv3spec.deploy.runtimes.onnxruntime import is_int8_model
from mnv3spec.deploy.runtimes.onnxruntime import time as time_onnxruntime
from mnv3spec.errors import CheckpointError, UserError
from mnv3spec.model.inference import optimize_for_inference
from mnv3spec.services.evaluate import evaluate

from .conftest import ROOT, tiny_checkpoint


def _load_int8(path):
    return onnx_model.load_onnx(path, formats=(onnx_model.INT8,))


CLASSES = [f"class{i}" for i in range(4)]  # the synthetic dataset's names
FAST = {"calib": 32, "data": "synthetic", "to": "onnxruntime"}  # ExecuTorch: test_executorch


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """One quantization of a tiny checkpoint, with a row kept float and the sensitivity table."""
    folder = tmp_path_factory.mktemp("quant")
    model = tiny_checkpoint(folder / "best.safetensors", CLASSES)
    result = quantize.quantize_checkpoint(
        folder / "best.safetensors", force=True, keep_float=["1"], sensitivity=True, **FAST
    )
    return folder, model, result


def test_writes_an_int8_onnx_beside_the_checkpoint_with_its_measurements(quantized):
    folder, _, r = quantized
    assert r.path == folder / "best.int8.onnx" and r.path.is_file()
    assert r.images == 128 and r.calib == 32
    assert 0 <= r.int8_top1 <= 100 and r.drop == pytest.approx(r.float_top1 - r.int8_top1)
    # hard-swish / hard-sigmoid have no int8 kernel in ONNX Runtime; convs, adds and SE muls
    # do, except in row 1, kept in float (a depthwise and a projection conv, SE's two, its pool)
    assert set(r.float_ops) <= {"HardSigmoid", "Mul", "Conv", "GlobalAveragePool", "Add"}
    assert r.float_ops["Conv"] == 4 and r.float_ops["GlobalAveragePool"] == 1


def test_int8_outputs_agree_with_the_fake_quant_graph_and_roughly_with_float(quantized):
    """The fused int8 kernels against the same QDQ graph run unfused (quantize → float op →
    dequantize, i.e. fake-quant), and both against the float model."""
    _, model, r = quantized
    int8, _ = _load_int8(r.path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    fake = ort.InferenceSession(str(r.path), options, providers=["CPUExecutionProvider"])
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, reference = int8(x), model.eval()(x)
    faked = torch.from_numpy(fake.run(None, {"input": x.numpy()})[0])
    scale = reference.abs().max().item()
    assert (got - faked).abs().max().item() <= 0.05 * scale
    assert (got - reference).abs().max().item() <= 0.5 * scale


def test_the_int8_file_carries_what_eval_and_infer_need(quantized):
    folder, model, r = quantized
    assert is_int8_model(r.path)
    assert not is_int8_model(folder / "best.safetensors")
    int8, meta = _load_int8(r.path)
    assert meta["classes"] == CLASSES and meta["resolution"] == 32
    assert meta["mean"] == (0.5, 0.4, 0.3) and meta["std"] == (0.2, 0.25, 0.3)
    assert meta["extra"]["kept_float"] == ["bneck1"]
    assert meta["extra"]["int8_top1"] == pytest.approx(r.int8_top1, abs=1e-3)
    assert int8.spec.to_yaml() == model.spec.to_yaml()
    ds = load_dataset("synthetic", resolution=32, num_classes=4)
    val = loader(ds.val_images, ds.val_labels, 64, shuffle=False)
    via_eval = evaluate(int8, val, mean=meta["mean"], std=meta["std"], device=torch.device("cpu"))
    assert via_eval.top1 == pytest.approx(r.int8_top1)
    model_any, _ = load_any(r.path)
    assert isinstance(model_any, OnnxModel)


def test_a_plain_onnx_file_is_not_an_int8_model(tmp_path, quantized):
    _, model, _ = quantized
    path = tmp_path / "plain.onnx"
    write_onnx(optimize_for_inference(model), path, torch.randn(1, 3, 32, 32), False)
    assert not is_int8_model(path)
    with pytest.raises(CheckpointError, match="not an mnv3spec int8 model"):
        _load_int8(path)


def test_a_runtimes_model_is_not_taken_for_its_checkpoint(quantized):
    _, _, r = quantized
    with pytest.raises(CheckpointError, match=r"is an ONNX model, not a checkpoint; give the"):
        quantize.quantize_checkpoint(r.path, data="synthetic", to="onnxruntime")


def test_sensitivity_lists_each_computing_row_and_keep_float_resolves_indices(quantized):
    _, model, r = quantized
    rows = [name for name, _ in r.sensitivity]
    assert rows[0] == "stem" and "bneck1" in rows  # the rows' names
    assert "dropout" not in rows  # no nodes in an eval export
    assert all(0 <= top1 <= 100 for _, top1 in r.sensitivity)
    assert r.kept_float == ["bneck1"]
    assert quantize.resolve_rows(model, ["bneck3", "4"]) == ["bneck3", "bneck4"]
    assert quantize.resolve_rows(model, ["03"]) == ["bneck3"]
    with pytest.raises(UserError, match=r"no row 'r03_bneck'; rows are 0\.\.16 or names like"):
        quantize.resolve_rows(model, ["r03_bneck"])
    with pytest.raises(UserError, match="no row '99'"):
        quantize.resolve_rows(model, ["99"])


def test_latency_runner_runs_the_int8_model(quantized):
    _, model, _ = quantized
    run, note = time_onnxruntime(model, torch.randn(1, 3, 32, 32), int8=True)
    assert run()[0].shape == (1, 4) and "int8" in note


def test_gate_refuses_a_model_that_loses_too_much_and_writes_nothing(tmp_path, cli):
    tiny_checkpoint(tmp_path / "best.safetensors", CLASSES)
    out = tmp_path / "q.onnx"
    # int8 would have to beat float by 100 points to pass: the gate must refuse
    r = cli("quantize", tmp_path / "best.safetensors", "--out", out, "--max-drop", "-100",
            "--calib", "16", "--data", "synthetic", "--to", "onnxruntime")  # fmt: skip
    assert r.returncode == 4, r.stderr
    assert "top-1 float" in r.stdout and "drop" in r.stdout
    left = next(line for line in r.stdout.splitlines() if line.startswith("ops left in float"))
    assert "Conv" not in left and "Add" not in left and "GlobalAveragePool" not in left
    assert "nothing was written" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "best.safetensors"]


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("spec", [ROOT / "specs" / "small.yaml"], "is a YAML spec"),
        ("calib", ["{ckpt}", "--calib", "0"], "--calib"),
        ("not ours", ["{junk}"], "not a safetensors weights file"),
        ("into itself", ["{ckpt}", "--out", "{ckpt}"], "is the checkpoint itself"),
        ("not onnx", ["{ckpt}", "--out", "{folder}/q.bin"], "must end in .onnx"),
        ("bad row", ["{ckpt}", "--keep-float", "x9", "--data", "synthetic"], "--keep-float"),
    ],
)
def test_bad_input_is_one_line_and_status_2(tmp_path, cli, case, args, message):
    ckpt = tmp_path / "best.safetensors"
    if "{ckpt}" in map(str, args):
        tiny_checkpoint(ckpt, CLASSES)
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not weights")
    names = {"ckpt": ckpt, "junk": junk, "folder": tmp_path}
    r = cli("quantize", *(str(a).format(**names) for a in args), "--to", "onnxruntime")
    assert r.returncode == 2, (case, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("*.onnx"))


def test_eval_and_infer_take_the_int8_file_as_they_take_a_checkpoint(quantized, cli, tmp_path):
    _, _, r = quantized
    result = cli("eval", r.path, "--data", "synthetic")
    assert result.returncode == 0, result.stderr
    assert f"top-1 {r.int8_top1:.2f}%" in result.stdout  # the figure quantize measured
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 30, 30)).save(images / "red.png")
    result = cli("infer", "--models", r.path, "--images", images, "--topk", "2")
    assert result.returncode == 0, result.stderr
    assert "red.png" in result.stdout and "class" in result.stdout


def test_latency_times_int8_beside_float_and_says_why_a_cuda_graph_did_not_run(cli):
    result = cli(
        *("latency", ROOT / "specs" / "small.yaml", "--widths", "0.25", "--devices", "cpu"),
        *("--backends", "onnxruntime", "onnxruntime-int8", "cuda-graph", "--runs", "3"),
        "--warmup",
        "1",
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[3]: line for line in result.stdout.splitlines() if "small" in line}
    assert set(rows) == {"onnxruntime", "onnxruntime-int8", "cuda-graph"}
    assert float(rows["onnxruntime-int8"].split()[7]) > 0  # median ms
    assert "note: cuda-graph on cpu: not run: cuda-graph runs on CUDA only" in result.stdout


def _damaged(path, out, change):
    """A copy of the int8 file at ``path`` with ``change(proto)`` applied."""
    import onnx

    proto = onnx.load(str(path))
    change(proto)
    onnx.save(proto, str(out))
    return out


def _set_prop(key, value):
    def change(proto):
        (prop,) = [p for p in proto.metadata_props if p.key == key]
        prop.value = value

    return change


def _rename_input(proto):
    for node in proto.graph.node:
        node.input[:] = ["x" if n == "input" else n for n in node.input]
    proto.graph.input[0].name = "x"


def _nan_weight(proto):
    from onnx import TensorProto, numpy_helper

    init = next(i for i in proto.graph.initializer if i.data_type == TensorProto.FLOAT)
    array = numpy_helper.to_array(init).copy()
    array.flat[0] = float("nan")
    init.CopyFrom(numpy_helper.from_array(array, init.name))


def _external(proto):
    from onnx import TensorProto

    init = next(i for i in proto.graph.initializer if i.data_type == TensorProto.FLOAT)
    init.data_location = TensorProto.EXTERNAL
    entry = init.external_data.add()
    entry.key, entry.value = "location", "weights.bin"


@pytest.mark.parametrize(
    "change, message",
    [
        (
            _set_prop("resolution", "64"),
            "its input is N×3×32×32, where the metadata says N×3×64×64",
        ),
        (_set_prop("classes", '["a", "b", "c", "d", "e"]'), "5 class names for a spec with"),
        (_rename_input, "its inputs are ['x'], not the one 'input'"),
        (_nan_weight, "holds NaN or infinite values"),
        (_external, "is stored in another file"),
        (_set_prop("classes", '["a", "a", "b", "c"]'), "lists 'a' more than once"),
    ],
)
def test_issue23_case11_18_int8_metadata_that_disagrees_with_the_graph(
    quantized, tmp_path, change, message
):
    _, _, r = quantized
    bad = _damaged(r.path, tmp_path / "bad.int8.onnx", change)
    with pytest.raises(CheckpointError) as e:
        _load_int8(bad)
    assert message in str(e.value) and str(bad) in str(e.value)


def test_issue23_case11_infer_skips_a_bad_int8_file_and_goes_on(quantized, tmp_path):
    from PIL import Image

    from mnv3spec.deploy.infer import classify

    folder, _, r = quantized
    bad = _damaged(r.path, tmp_path / "bad.int8.onnx", _set_prop("resolution", "64"))
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(images / "red.png")
    report = classify([bad, folder / "best.safetensors"], images, device="cpu")
    assert [m.checkpoint for m in report.models] == [str(folder / "best.safetensors")]
    assert report.skipped[0][0] == str(bad) and "where the metadata says" in report.skipped[0][1]


def test_out_names_the_runtime_when_to_is_not_given(tmp_path, cli):
    """Issue 31: ``quantize CK --out x.onnx`` writes ONNX Runtime's int8, not 'must end in .pte'."""
    tiny_checkpoint(tmp_path / "best.safetensors", CLASSES)
    out = tmp_path / "x.onnx"
    r = cli("quantize", tmp_path / "best.safetensors", "--out", out, "--calib", "16",
            "--data", "synthetic", "--force")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert is_int8_model(out) and f"wrote {out}" in r.stdout


def test_the_default_runtime_is_executorch_only_where_it_is_installed(monkeypatch):
    """ExecuTorch's int8 is the fast one, but quantize must work with the export extra alone."""
    import importlib.util

    real = importlib.util.find_spec
    for missing, expected in (((), "executorch"), (("executorch",), "onnxruntime")):
        present = {"executorch", "torchao"} - set(missing)

        def find_spec(name, *a, present=present, missing=missing):
            if name in missing:  # as if not installed, even where it is (CI installs it)
                return None
            return object() if name in present else real(name, *a)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        assert quantize.default_runtime() == expected


def test_issue31_hunt17_a_row_name_means_the_renamed_row_as_in_set(tmp_path, cli):
    """After a variant renames bneck1 to r5, ``--keep-float r5`` is that row, as ``--set
    layers.r5`` is; digits stay an index, and an ``r``-prefixed index is a name like any other."""
    from mnv3spec import build, load_spec

    variant = tmp_path / "renamed.yaml"
    variant.write_text("base: small\nname: small_r5\nrows:\n  bneck1: {name: r5}\n")
    model = build(load_spec(variant, width=0.25, resolution=16), device="meta")
    assert quantize.resolve_rows(model, ["r5", "5"]) == ["r5", "bneck5"]
    edited = load_spec(variant, **{"layers.r5.k": 7}).rows
    assert [row.name for row in edited if row.fields.get("k") == 7] == ["r5"]
    with pytest.raises(UserError, match="no row 'r3'"):
        quantize.resolve_rows(model, ["r3"])
    tiny_checkpoint(tmp_path / "best.safetensors", CLASSES, variant)
    r = cli("quantize", tmp_path / "best.safetensors", "--keep-float", "r5", "--to",
            "onnxruntime", "--calib", "8", "--data", "synthetic", "--force")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "rows kept in float: r5\n" in r.stdout
    _, meta = _load_int8(tmp_path / "best.int8.onnx")
    assert meta["extra"]["kept_float"] == ["r5"]
