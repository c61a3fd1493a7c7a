"""optimize_for_inference, ONNX / TorchScript export with verification, and `cli.py export`."""

from __future__ import annotations

import dataclasses
import sys

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import cli
from mnv3spec import optimize_for_inference
from mnv3spec.deploy import export
from mnv3spec.deploy.runtimes import RUNTIMES
from mnv3spec.errors import ExportError, UserError
from mnv3spec.weights.checkpoint import load_model

from .conftest import ROOT, tiny_checkpoint

SMALL = ROOT / "specs" / "small.yaml"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "best.safetensors"
    model = tiny_checkpoint(path, ["cat", "dog", "bird"])
    return path, model


def test_optimize_for_inference_folds_every_bn_and_keeps_the_function(checkpoint):
    _, model = checkpoint
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model.train())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert not fast.training
    assert fast.layers.bneck1.dw.conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model.eval()(x)
        assert (fast(x) - expected).abs().max() < 1e-5
        assert expected.abs().max() > 0.1  # a real comparison, not of near-zero logits
    # the original is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_a_file_that_does_not_reproduce_the_model_is_refused_and_not_kept(
    checkpoint, tmp_path, monkeypatch
):
    path, _ = checkpoint
    _off_by_one_percent(monkeypatch)
    out = tmp_path / "m.pt"
    with pytest.raises(ExportError, match=r"differs from the PyTorch model by up to [0-9.e-]+"):
        export.export(path, "torchscript", out)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def _off_by_one_percent(monkeypatch) -> None:
    """TorchScript's runner reading its program back 1 % off."""
    rt = RUNTIMES["torchscript"]
    off = dataclasses.replace(rt, runner=lambda p, threads=None: lambda x: rt.runner(p)(x) * 1.01)
    monkeypatch.setitem(RUNTIMES, "torchscript", off)


def test_the_relative_limit_catches_errors_in_tiny_random_logits(tmp_path, monkeypatch):
    _off_by_one_percent(monkeypatch)
    with pytest.raises(ExportError, match="largest logit"):
        export.export(SMALL, "torchscript", tmp_path / "m.pt", overrides={"width": 0.25})


def test_onnx_without_the_extra_names_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    code = cli.main(["export", str(SMALL), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2
    assert 'pip install -e ".[export]"' in err and "onnxruntime is not installed" in err
    assert not (tmp_path / "m.onnx").exists()


def test_set_on_a_checkpoint_is_refused(checkpoint):
    with pytest.raises(UserError, match="a checkpoint carries its own"):
        export.export(checkpoint[0], "onnx", overrides={"width": 0.5})


def test_cli_export_onnx_beside_the_checkpoint_any_batch(tiny_onnx):
    out = tiny_onnx.path  # exported without --out (the session's fixture: one ONNX export)
    model, _ = load_model(out.with_suffix(".safetensors"))
    line = tiny_onnx.stdout.strip()
    assert line.startswith(f"wrote {out} (onnx, opset 20, ") and "BN folded" in line
    assert "max abs diff vs PyTorch" in line and "random" not in tiny_onnx.stdout
    onnx.checker.check_model(onnx.load(str(out)))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    assert abs(session.run(None, {"input": x.numpy()})[0] - expected).max() < 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_cli_export_torchscript_of_a_spec_says_the_weights_are_random(tmp_path, cli):
    result = cli(
        "export",
        SMALL,
        "--format",
        "torchscript",
        "--set",
        "width=0.25",
        "--resolution",
        "48",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "weights are random" in result.stdout
    assert f"wrote {tmp_path / 'small.pt'} (torchscript, " in result.stdout
    loaded = torch.jit.load(str(tmp_path / "small.pt"))
    assert loaded(torch.randn(2, 3, 48, 48)).shape == (2, 100)


def test_export_bad_checkpoint_is_one_error_line(tmp_path, capsys):
    junk = tmp_path / "best.safetensors"
    junk.write_bytes(b"not weights")
    assert cli.main(["export", str(junk), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {junk}: not a safetensors weights file")
    assert not (tmp_path / "best.pt").exists()


def test_cli_export_to_a_folder_fails_before_exporting(tmp_path, cli):
    result = cli(
        "export", "small", "--format", "torchscript", "--set", "width=0.25", "--out", tmp_path
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == f"error: {tmp_path}: --out: is a folder; give a file name\n"
    missing = cli("export", "small", "--format", "torchscript", "--out", tmp_path / "no" / "m.pt")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"--out: the folder {tmp_path / 'no'} does not exist" in missing.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_export_never_writes_over_its_input(checkpoint, tmp_path, cli):
    path, _ = checkpoint
    weights = tmp_path / "b.safetensors"
    weights.write_bytes(path.read_bytes())
    (tmp_path / "link.onnx").symlink_to(weights)
    for out in (weights, tmp_path / "link.onnx"):
        result = cli("export", weights, "--format", "onnx", "--out", out)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr == (
            f"error: {out}: --out: is also an input of this command ({weights}); writing there "
            "would destroy it: give another file name\n"
        )
    assert weights.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.safetensors", "link.onnx"]


def test_cli_export_does_not_replace_a_file_of_another_kind(checkpoint, tmp_path, cli):
    path, _ = checkpoint
    other = tmp_path / "other.safetensors"
    other.write_bytes(path.read_bytes())
    spec = tmp_path / "s.yaml"
    spec.write_bytes(SMALL.read_bytes())
    torch.save({"w": torch.zeros(1)}, tmp_path / "state.pt")
    cases = [
        (other, "onnx", "exists and is safetensors weights, not an ONNX model"),
        (tmp_path / "state.pt", "torchscript", "is a PyTorch file (torch.save), not a TorchScript"),
        (spec, "torchscript", "exists and is a spec (YAML), not a TorchScript model"),
    ]
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    for out, fmt, message in cases:
        result = cli("export", path, "--format", fmt, "--out", out)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert message in result.stderr
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.filterwarnings("ignore:`torch.jit.(load|save|script)` is deprecated:FutureWarning")
def test_an_earlier_export_of_the_same_kind_is_replaced(checkpoint, tmp_path):
    out = tmp_path / "m.pt"  # an earlier TorchScript file there (scripted: no export's tracing)
    torch.jit.save(torch.jit.script(nn.Identity()), str(out))
    again = export.export(checkpoint[0], "torchscript", out)
    assert again.path == out and [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    assert torch.jit.load(str(out))(torch.randn(1, 3, 32, 32)).shape == (1, 3)  # the new one


@pytest.mark.parametrize(
    "value, message",
    [
        (float("nan"), "NaN or infinite values"),  # refused as it is read
        (3e38, "the model's outputs are not finite ("),  # finite weights whose products overflow
    ],
)
def test_a_model_with_non_finite_weights_or_outputs_exports_nothing(
    checkpoint, tmp_path, cli, value, message
):
    from mnv3spec.weights.checkpoint import load_model, save_weights

    model, _ = load_model(checkpoint[0])
    with torch.no_grad():
        model.layers.bneck3.dw.conv.weight[0].fill_(value)
    bad = tmp_path / "bad.safetensors"
    save_weights(bad, model.eval(), classes=["cat", "dog", "bird"])
    saved = bad.read_bytes()
    for fmt in ("onnx", "torchscript"):
        result = cli("export", bad, "--format", fmt)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.startswith(f"error: {bad}: ") and message in result.stderr
        assert "0.00e+00" not in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["bad.safetensors"]
    assert bad.read_bytes() == saved


def test_an_export_too_large_for_memory_is_refused_before_allocating(tmp_path, cli):
    result = cli(
        "export", "small", "--format", "torchscript", "--resolution", "100000", cwd=tmp_path
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: this export would need about ")
    assert "a forward pass at batch 1, 100000×100000" in result.stderr
    assert list(tmp_path.iterdir()) == []
