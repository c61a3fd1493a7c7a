"""LiteRT (`export --format tflite`, `quantize --to tflite`, `.tflite` in eval / infer / latency):
the model against PyTorch in LiteRT's interpreter, the metadata file beside it, the accuracy gate,
and bad input. A conversion takes tens of seconds per tiny model, so one export and one
quantization serve most tests."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mnv3spec.deploy import export, quantize
from mnv3spec.deploy.runtimes import RUNTIMES, load_any, phone, record
from mnv3spec.deploy.runtimes import litert as tflite
from mnv3spec.errors import CheckpointError, ExportError

from .conftest import (
    ROOT,
    TINY_PHONE,
    check_misdescribed_program,
    run_cli_process,
    tiny_checkpoint,
)

# one xdist worker runs this file: its module fixture converts programs for half a minute
pytestmark = pytest.mark.xdist_group("tflite")

CLASSES = [f"class{i}" for i in range(4)]  # the synthetic dataset's names
SLOW = 1800  # seconds: a command that converts a model on a busy 2-core machine
NOT_INSTALLED = "LiteRT is not installed (the litert extra)"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A tiny checkpoint exported to a float .tflite, and quantized to an int8 one."""
    pytest.importorskip("litert_torch", reason=NOT_INSTALLED)
    folder = tmp_path_factory.mktemp("tfl")
    model = tiny_checkpoint(folder / "best.safetensors", CLASSES, TINY_PHONE, width=1.0)
    fp32 = export.export(folder / "best.safetensors", "tflite")
    q = quantize.quantize_checkpoint(
        folder / "best.safetensors", force=True, calib=32, data="synthetic", to="tflite"
    )
    return folder, model.eval(), fp32, q


def test_export_writes_a_tflite_run_by_litert_within_tolerance(converted):
    folder, _, r, _ = converted
    assert r.path == folder / "best.tflite" and r.format == "tflite"
    assert r.path.read_bytes()[4:8] == b"TFL3"
    assert r.max_abs_diff <= 1e-4 and r.max_abs_diff <= 1e-3 * r.max_logit
    assert "run by LiteRT's XNNPACK delegate" in r.delegation


def test_the_tflite_loads_like_a_checkpoint_with_its_metadata(converted):
    _, model, r, _ = converted
    info = json.loads(phone.sidecar(r.path).read_text())
    assert info["sha256"] == phone.digest(r.path) and info["precision"] == "float32"
    assert info["runtime"] == "litert"
    model_file, meta = load_any(r.path)
    assert isinstance(model_file, phone.ProgramModel)
    assert meta["classes"] == CLASSES and meta["resolution"] == 32
    assert meta["mean"] == (0.5, 0.4, 0.3) and meta["std"] == (0.2, 0.25, 0.3)
    assert model_file.spec.to_yaml() == model.spec.to_yaml()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = model(x), model_file(x)  # a batch of 3 through a batch-1 model
    assert (want - got).abs().max().item() <= 1e-3 * want.abs().max().item()


def test_quantize_writes_an_int8_tflite_that_carries_its_measurements(converted):
    folder, model, _, q = converted
    assert q.path == folder / "best.int8.tflite" and q.runtime == "tflite"
    assert q.images == 128 and q.calib == 32 and 0 <= q.int8_top1 <= 100
    assert "ops run by LiteRT" in q.delegation
    model_file, meta = tflite.load_tflite(q.path)
    assert meta["extra"]["kept_float"] == [] and meta["extra"]["precision"] == "int8"
    assert meta["extra"]["int8_top1"] == pytest.approx(q.int8_top1, abs=1e-3)
    # every convolution int8 (what stays float is the converter's choice, and is reported)
    floats = tflite.op_counts(q.path.read_bytes(), float_only=True)
    assert "CONV_2D" not in floats and "DEPTHWISE_CONV_2D" not in floats
    assert q.float_ops == floats and q.path.stat().st_size < 0.6 * r_size(folder)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = model(x), model_file(x)
    assert (want - got).abs().max().item() <= 0.5 * want.abs().max().item()  # int8, roughly


def r_size(folder):
    return (folder / "best.tflite").stat().st_size


def test_eval_and_infer_take_the_tflite_as_they_take_a_checkpoint(converted, cli, tmp_path):
    _, _, _, q = converted
    result = cli("eval", q.path, "--data", "synthetic", timeout=SLOW)
    assert result.returncode == 0, result.stderr
    assert f"top-1 {q.int8_top1:.2f}%" in result.stdout  # the figure quantize measured
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 30, 30)).save(images / "red.png")
    result = cli("infer", "--models", q.path, "--images", images, "--topk", "2", timeout=SLOW)
    assert result.returncode == 0, result.stderr
    assert "red.png" in result.stdout and "class" in result.stdout


def test_latency_times_litert_float_and_int8_in_the_same_rounds(cli):
    pytest.importorskip("litert_torch", reason=NOT_INSTALLED)
    result = cli(
        *("latency", TINY_PHONE, "--widths", "1.0", "--devices", "cpu"),
        *("--resolution", "32", "--backends", "eager", "tflite", "tflite-int8"),
        *("--runs", "3", "--warmup", "1"),
        timeout=SLOW,
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[3]: line for line in result.stdout.splitlines() if "tiny_phone" in line}
    assert set(rows) == {"eager", "tflite", "tflite-int8"}
    assert float(rows["tflite-int8"].split()[7]) > 0  # median ms
    assert "LiteRT XNNPACK int8 (PT2E)" in result.stdout


# --- gate and parity, with the conversion of the fixture reused --------------------------------


@pytest.fixture
def reuse_conversion(converted, monkeypatch):
    """``tflite.convert`` answering with the fixture's float model: the gate and the parity
    check come after converting, and a fresh conversion costs a minute here."""
    _, _, r, _ = converted
    model = r.path.read_bytes()
    monkeypatch.setattr(tflite, "convert", lambda *a, **k: model)
    return model


def test_a_parity_failure_or_nan_writes_nothing(converted, reuse_conversion, monkeypatch, tmp_path):
    folder, _, _, _ = converted
    nan = lambda model, threads=None: lambda x: torch.full((x.shape[0], 4), float("nan"))  # noqa: E731
    monkeypatch.setitem(RUNTIMES, "litert", replace(RUNTIMES["litert"], runner=nan))
    out = tmp_path / "m.tflite"
    with pytest.raises(ExportError, match="nothing was written"):
        export.export(folder / "best.safetensors", "tflite", out)
    assert list(tmp_path.iterdir()) == []


def test_gate_refuses_a_model_that_loses_too_much_and_writes_nothing(
    converted, reuse_conversion, monkeypatch
):
    folder, _, _, _ = converted
    # the reused model is the float one: not its fake-quant graph's, which is checked first
    monkeypatch.setattr(phone, "check_program", lambda *a: None)
    out = folder / "gated.tflite"
    with pytest.raises(record.AccuracyGateError) as e:
        quantize.quantize_checkpoint(
            folder / "best.safetensors", out, max_drop=-100, calib=8, data="synthetic", to="tflite"
        )
    assert e.value.exit_code == 4 and "nothing was written" in e.value.message
    assert not out.exists() and not phone.sidecar(out).exists()


# --- bad input ----------------------------------------------------------------------------------


@pytest.fixture
def copies(converted, tmp_path):
    """The fixture's float model and metadata file copied, to be damaged."""
    _, _, r, q = converted
    model = tmp_path / "m.tflite"
    shutil.copy(r.path, model)
    shutil.copy(phone.sidecar(r.path), phone.sidecar(model))
    return model, q.path


def _rewrite_digest(model):
    beside = phone.sidecar(model)
    info = json.loads(beside.read_text())
    beside.write_text(json.dumps({**info, "sha256": phone.digest(model)}))


@pytest.mark.parametrize(
    "case, message",
    [
        ("truncated", "SHA-256 differs"),
        ("truncated, digest matching", "LiteRT cannot load this model"),
        ("another model", "SHA-256 differs"),
        ("no metadata", "has no metadata file beside it"),
        ("not a model", "is not a litert program"),
        ("an ExecuTorch program", "is not a litert program"),
        ("damaged metadata", "damaged metadata"),
    ],
)
def test_a_bad_tflite_is_refused_in_one_paragraph(copies, case, message, cli):
    model, other = copies
    if case.startswith("truncated"):
        model.write_bytes(model.read_bytes()[:2000])
        if "matching" in case:
            _rewrite_digest(model)
    elif case == "another model":
        shutil.copy(other, model)
    elif case == "no metadata":
        phone.sidecar(model).unlink()
    elif case == "not a model":
        model.write_text("classes: [a, b]\n" * 10)
    elif case == "an ExecuTorch program":
        model.write_bytes(b"\x1c\x00\x00\x00ET12" + bytes(64))
    else:
        phone.sidecar(model).write_text('{"format": "mnv3spec-mobile", "spec": "[1"}')
    with pytest.raises(CheckpointError, match=message):
        tflite.load_tflite(model)
    result = cli("eval", model, "--data", "synthetic", timeout=SLOW)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("target", ["checkpoint", "checkpoint named .tflite", "spec"])
def test_a_tflite_is_never_written_over_a_checkpoint_or_a_spec(converted, target, tmp_path, cli):
    folder, _, _, _ = converted
    source = folder / "best.safetensors" if "checkpoint" in target else ROOT / "specs/small.yaml"
    victim = tmp_path / (source.name if ".tflite" not in target else "victim.tflite")
    shutil.copy(source, victim)
    before = victim.read_bytes()
    for command in (
        ("export", folder / "best.safetensors", "--format", "tflite"),
        ("quantize", folder / "best.safetensors", "--data", "synthetic", "--to", "tflite"),
    ):
        result = cli(*command, "--out", victim)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and str(victim) in result.stderr
        assert victim.read_bytes() == before
    if ".tflite" not in target:
        assert "must end in .tflite" in result.stderr


@pytest.mark.parametrize("flags", [("--keep-float", "1"), ("--sensitivity",)])
def test_quantize_to_tflite_refuses_choosing_rows_before_any_work(converted, flags, cli):
    folder, _, _, _ = converted
    out = folder / "rows.tflite"
    result = cli(
        *("quantize", folder / "best.safetensors", "--data", "synthetic", "--to", "tflite"),
        *("--out", out, *flags),
    )
    assert result.returncode == 2 and "quantize for executorch" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_export_tflite_refuses_a_dynamic_batch(converted, cli):
    folder, _, _, _ = converted
    result = cli("export", folder / "best.safetensors", "--format", "tflite", "--dynamic-batch")
    assert result.returncode == 2 and "batch 1" in result.stderr, result.stderr


def test_without_litert_each_command_names_the_extra(tmp_path, monkeypatch):
    """LiteRT made unimportable (packages that raise ImportError first on the path), in a real
    process: this one may have imported them already."""
    for name in ("litert_torch", "ai_edge_litert"):
        fake = tmp_path / "path" / name
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text(f'raise ImportError("hidden", name="{name}")\n')
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "path"), str(ROOT)]))
    tiny_checkpoint(tmp_path / "best.safetensors", CLASSES)
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    spec = ROOT / "specs" / "small.yaml"
    for command in (
        ("export", spec, "--format", "tflite", "--out", tmp_path / "s.tflite"),
        ("quantize", tmp_path / "best.safetensors", "--data", "synthetic", "--to", "tflite"),
        ("latency", spec, "--widths", "0.25", "--backends", "tflite", "--runs", "1"),
        ("eval", tmp_path / "m.tflite", "--data", "synthetic"),
    ):
        result = run_cli_process(*command, timeout=SLOW)
        assert result.returncode == 2, (command, result.stderr)
        assert 'pip install -e ".[litert]"' in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "m.tflite", "path"]


@pytest.mark.parametrize("claim", ["resolution", "classes"])
@pytest.mark.parametrize("precision", ["float", "int8"])
def test_issue31_hunt10_16_metadata_claiming_another_program_is_refused_as_it_loads(
    converted, precision, claim, tmp_path, cli
):
    folder, _, r, q = converted
    source = Path(r.path if precision == "float" else q.path)
    check_misdescribed_program(source, folder, tflite.load_tflite, claim, tmp_path, cli, SLOW)


def test_issue31_a_fresh_process_converting_and_running_a_tflite_prints_only_our_lines(
    converted, tmp_path
):
    """The converter logs absl's INFO lines to stderr (from C++, below sys.stderr) and the
    interpreter a line as it applies its delegate; export does both, and prints only ours."""
    folder, _, _, _ = converted
    out = tmp_path / "m.tflite"
    result = run_cli_process(
        "export", folder / "best.safetensors", "--format", "tflite", "--out", out, timeout=SLOW
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    chatter = ("INFO: Created TensorFlow Lite", "WARNING: All log messages before absl", "I0")
    assert not [line for line in result.stderr.splitlines() if line.startswith(chatter)]
