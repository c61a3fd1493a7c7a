"""ExecuTorch (`export --format executorch`, `quantize --to executorch`, `.pte` in eval / infer /
latency): the program against PyTorch in ExecuTorch's runtime, every row delegated, the metadata
file beside it, the accuracy gate, and bad input. Lowering takes seconds per tiny model, so one
export and one quantization serve most tests."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mnv3spec.deploy import export, quantize
from mnv3spec.deploy.runtimes import RUNTIMES, executorch, load_any, phone, record
from mnv3spec.errors import CheckpointError, ExportError
from mnv3spec.model.inference import for_xnnpack

from .conftest import (
    ROOT,
    TINY_PHONE,
    check_misdescribed_program,
    run_cli_process,
    tiny_checkpoint,
)

# one xdist worker runs this file: its module fixture lowers programs for minutes
pytestmark = pytest.mark.xdist_group("executorch")

CLASSES = [f"class{i}" for i in range(4)]  # the synthetic dataset's names
SLOW = 1800  # seconds: a subprocess that lowers a program on a busy 2-core machine
NOT_INSTALLED = "ExecuTorch is not installed (the mobile extra)"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny checkpoint exported to a float .pte, and quantized to an int8 one."""
    pytest.importorskip("executorch.runtime", reason=NOT_INSTALLED)
    folder = tmp_path_factory.mktemp("et")
    model = tiny_checkpoint(folder / "best.safetensors", CLASSES, TINY_PHONE, width=1.0)
    fp32 = export.export(folder / "best.safetensors", "executorch")
    q = quantize.quantize_checkpoint(
        folder / "best.safetensors", force=True, keep_float=["1"], calib=32, data="synthetic"
    )
    return folder, model.eval(), fp32, q


def _convs(model: torch.nn.Module, rows: list[str] | None = None) -> list[torch.nn.Module]:
    layers = model.layers.named_children()
    return [
        m
        for n, row in layers
        if rows is None or n in rows
        for m in row.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]


def test_export_writes_a_pte_run_by_executorch_within_tolerance_every_row_delegated(exported):
    folder, model, r, _ = exported
    assert r.path == folder / "best.pte" and r.format == "executorch"
    assert r.path.read_bytes()[4:6] == b"ET"
    assert r.max_abs_diff <= 1e-4 and r.max_abs_diff <= 1e-3 * r.max_logit
    assert r.delegation.endswith("none fall back to portable kernels")
    rows = [n for n, _ in model.layers.named_children() if "dropout" not in n]  # identity in eval
    assert r.delegation.startswith(f"{len(rows)} rows delegated")
    assert f"(convolutions: {len(_convs(model))} float)" in r.delegation


def test_the_pte_loads_like_a_checkpoint_with_its_metadata(exported):
    _, model, r, _ = exported
    info = json.loads(phone.sidecar(r.path).read_text())
    assert info["sha256"] == phone.digest(r.path) and info["precision"] == "float32"
    pte, meta = load_any(r.path)
    assert isinstance(pte, phone.ProgramModel)
    assert meta["classes"] == CLASSES and meta["resolution"] == 32
    assert meta["mean"] == (0.5, 0.4, 0.3) and meta["std"] == (0.2, 0.25, 0.3)
    assert pte.spec.to_yaml() == model.spec.to_yaml()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = model(x), pte(x)  # a batch of 3 through a batch-1 program
    assert (want - got).abs().max().item() <= 1e-3 * want.abs().max().item()


def test_quantize_writes_an_int8_pte_that_carries_its_measurements(exported):
    folder, model, _, q = exported
    assert q.path == folder / "best.int8.pte" and q.runtime == "executorch"
    assert q.images == 128 and q.calib == 32 and 0 <= q.int8_top1 <= 100
    # no quantize / dequantize left outside the delegate, and every convolution XNNPACK runs
    # int8 except those of the row kept float
    assert q.delegation.endswith("none fall back to portable kernels")
    kept = len(_convs(model, quantize.resolve_rows(model, ["1"])))
    int8_convs = len(_convs(model)) - kept
    assert kept > 0 and f"(convolutions: {kept} float, {int8_convs} int8)" in q.delegation
    pte, meta = executorch.load_pte(q.path)
    assert meta["extra"]["kept_float"] == quantize.resolve_rows(model, ["1"])
    assert meta["extra"]["precision"] == "int8"
    assert meta["extra"]["int8_top1"] == pytest.approx(q.int8_top1, abs=1e-3)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = model(x), pte(x)
    assert (want - got).abs().max().item() <= 0.5 * want.abs().max().item()  # int8, roughly


def test_rows_named_for_pt2e_get_their_convolutions_quantized():
    """--keep-float and --sensitivity name rows. The XNNPACK quantizer's ``set_module_name``
    never matched a convolution (it also asks about the weight, which has no module stack), so
    a named row's convolutions stayed float: the converted graph, no lowering, in seconds."""
    pytest.importorskip("executorch.runtime", reason=NOT_INSTALLED)
    from mnv3spec import build, load_spec

    model = build(load_spec(TINY_PHONE)).eval()
    fast, x = for_xnnpack(model), torch.zeros(1, 3, 32, 32)
    calib = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def int8_convs(**rows) -> int:
        graph = executorch.quantize_pt2e(fast, x, calib, **rows).graph
        convs = [n for n in graph.nodes if n.target == torch.ops.aten.conv2d.default]
        return sum("dequantize_per_channel" in str(n.args[1].target) for n in convs)

    row = len(_convs(model, ["bneck3"]))  # expand, depthwise, SE's two, project
    assert row == 5
    assert int8_convs(only_rows=["bneck3"]) == row
    assert int8_convs(exclude_rows=["bneck3"]) == len(_convs(model)) - row


def test_eval_and_infer_take_the_pte_as_they_take_a_checkpoint(exported, cli, tmp_path):
    _, _, _, q = exported
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


def test_a_program_renamed_bin_is_run_as_a_program_not_read_as_weights(exported, cli, tmp_path):
    """Issue 31 hunt 19: a .pte renamed .bin was read as safetensors ("its header claims
    3,616,764,631,084,695,612 bytes"); its bytes say what it is, its metadata is beside it."""
    _, _, _, q = exported
    renamed = tmp_path / "m.bin"
    shutil.copy(q.path, renamed)
    shutil.copy(phone.sidecar(q.path), phone.sidecar(renamed))
    result = cli("eval", renamed, "--data", "synthetic", timeout=SLOW)
    assert result.returncode == 0, result.stderr
    assert f"top-1 {q.int8_top1:.2f}%" in result.stdout


def test_latency_times_executorch_float_and_int8_in_the_same_rounds(cli):
    pytest.importorskip("executorch.runtime", reason=NOT_INSTALLED)
    result = cli(
        *("latency", TINY_PHONE, "--widths", "1.0", "--devices", "cpu"),
        *("--resolution", "32", "--backends", "eager", "executorch", "executorch-int8"),
        *("--runs", "3", "--warmup", "1"),
        timeout=SLOW,
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[3]: line for line in result.stdout.splitlines() if "tiny_phone" in line}
    assert set(rows) == {"eager", "executorch", "executorch-int8"}
    assert float(rows["executorch-int8"].split()[7]) > 0  # median ms
    assert "XNNPACK int8 (PT2E)" in result.stdout


# --- gate and parity, with the lowering of the fixture reused ----------------------------------


@pytest.fixture
def reuse_lowering(exported, monkeypatch):
    """``executorch.lower`` answering with the fixture's program: the gate and the parity check
    come after lowering, and a fresh one costs minutes here."""
    _, _, r, _ = exported
    program = r.path.read_bytes()
    delegation = executorch.Delegation(["r00_conv2d"])
    monkeypatch.setattr(executorch, "lower", lambda *a, **k: (program, delegation))
    return program


def test_a_parity_failure_or_nan_writes_nothing(exported, reuse_lowering, monkeypatch, tmp_path):
    folder, _, _, _ = exported
    nan = lambda program, threads=None: lambda x: torch.full((x.shape[0], 4), float("nan"))  # noqa: E731
    monkeypatch.setitem(RUNTIMES, "executorch", replace(RUNTIMES["executorch"], runner=nan))
    out = tmp_path / "m.pte"
    with pytest.raises(ExportError, match="nothing was written"):
        export.export(folder / "best.safetensors", "executorch", out)
    assert list(tmp_path.iterdir()) == []


def test_gate_refuses_a_model_that_loses_too_much_and_writes_nothing(
    exported, reuse_lowering, monkeypatch
):
    folder, _, _, _ = exported
    # the reused program is the float one: not its fake-quant graph's, which is checked first
    monkeypatch.setattr(phone, "check_program", lambda *a: None)
    out = folder / "gated.pte"
    with pytest.raises(record.AccuracyGateError) as e:
        quantize.quantize_checkpoint(
            folder / "best.safetensors", out, max_drop=-100, calib=8, data="synthetic"
        )
    assert e.value.exit_code == 4 and "nothing was written" in e.value.message
    assert not out.exists() and not phone.sidecar(out).exists()


# --- bad input ----------------------------------------------------------------------------------


@pytest.fixture
def copies(exported, tmp_path):
    """The fixture's float program and metadata file copied, to be damaged."""
    _, _, r, q = exported
    pte = tmp_path / "m.pte"
    shutil.copy(r.path, pte)
    shutil.copy(phone.sidecar(r.path), phone.sidecar(pte))
    return pte, q.path


def _rewrite_digest(pte):
    beside = phone.sidecar(pte)
    info = json.loads(beside.read_text())
    beside.write_text(json.dumps({**info, "sha256": phone.digest(pte)}))


@pytest.mark.parametrize(
    "case, message",
    [
        ("truncated", "SHA-256 differs"),
        ("truncated, digest matching", "ExecuTorch cannot load this program"),
        ("another program", "SHA-256 differs"),
        ("no metadata", "has no metadata file beside it"),
        ("not a program", "is not a executorch program"),
        ("damaged metadata", "damaged metadata"),
    ],
)
def test_a_bad_pte_is_refused_in_one_paragraph(copies, case, message, cli):
    pte, other = copies
    if case.startswith("truncated"):
        pte.write_bytes(pte.read_bytes()[:2000])
        if "matching" in case:
            _rewrite_digest(pte)
    elif case == "another program":
        shutil.copy(other, pte)
    elif case == "no metadata":
        phone.sidecar(pte).unlink()
    elif case == "not a program":
        pte.write_text("classes: [a, b]\n" * 10)
    else:
        phone.sidecar(pte).write_text('{"format": "mnv3spec-mobile", "spec": "[1"}')
    with pytest.raises(CheckpointError, match=message):
        executorch.load_pte(pte)
    result = cli("eval", pte, "--data", "synthetic", timeout=SLOW)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("target", ["checkpoint", "checkpoint named .pte", "spec", "spec .pte"])
def test_a_pte_is_never_written_over_a_checkpoint_or_a_spec(exported, target, tmp_path, cli):
    folder, _, _, _ = exported
    source = folder / "best.safetensors" if "checkpoint" in target else ROOT / "specs/small.yaml"
    victim = tmp_path / (source.name if ".pte" not in target else "victim.pte")
    shutil.copy(source, victim)
    before = victim.read_bytes()
    for command in (
        ("export", folder / "best.safetensors", "--format", "executorch"),
        ("quantize", folder / "best.safetensors", "--data", "synthetic"),
    ):
        result = cli(*command, "--out", victim)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and str(victim) in result.stderr
        assert victim.read_bytes() == before
    if ".pte" not in target:
        assert "must end in .pte" in result.stderr


def test_export_executorch_refuses_a_dynamic_batch(exported, cli):
    folder, _, _, _ = exported
    result = cli("export", folder / "best.safetensors", "--format", "executorch", "--dynamic-batch")
    assert result.returncode == 2 and "batch 1" in result.stderr, result.stderr


def test_without_executorch_each_command_names_the_extra(tmp_path, monkeypatch):
    """ExecuTorch made unimportable (a package that raises ImportError first on the path), in a
    real process: this one may have imported it already."""
    fake = tmp_path / "path" / "executorch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("hidden", name="executorch")\n')
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake.parent), str(ROOT)]))
    tiny_checkpoint(tmp_path / "best.safetensors", CLASSES)
    (tmp_path / "m.pte").write_bytes(b"\0\0\0\0ET12" + bytes(64))
    spec = ROOT / "specs" / "small.yaml"
    for command in (
        ("export", spec, "--format", "executorch", "--out", tmp_path / "s.pte"),
        ("quantize", tmp_path / "best.safetensors", "--data", "synthetic", "--to", "executorch"),
        ("latency", spec, "--widths", "0.25", "--backends", "executorch", "--runs", "1"),
        ("eval", tmp_path / "m.pte", "--data", "synthetic"),
    ):
        result = run_cli_process(*command, timeout=SLOW)
        assert result.returncode == 2, (command, result.stderr)
        assert 'pip install -e ".[mobile]"' in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "m.pte", "path"]


@pytest.mark.parametrize("claim", ["resolution", "classes"])
@pytest.mark.parametrize("precision", ["float", "int8"])
def test_issue31_hunt10_16_metadata_claiming_another_program_is_refused_as_it_loads(
    exported, precision, claim, tmp_path, cli
):
    folder, _, r, q = exported
    source = Path(r.path if precision == "float" else q.path)
    check_misdescribed_program(source, folder, executorch.load_pte, claim, tmp_path, cli, SLOW)


def test_issue31_a_fresh_process_running_a_pte_prints_no_cpuinfo_lines(exported):
    """ExecuTorch's runtime logs its CPU probe to stderr (from C++, below sys.stderr) as its
    thread pool starts: ``[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version``
    and four more here, ``Error in cpuinfo: ...`` elsewhere. Only ours are printed."""
    _, _, _, q = exported
    result = run_cli_process("eval", q.path, "--data", "synthetic", timeout=SLOW)
    assert result.returncode == 0, result.stderr
    assert f"top-1 {q.int8_top1:.2f}%" in result.stdout
    chatter = ("[cpuinfo", "Error in cpuinfo", "Warning in cpuinfo", "[threadpool")
    assert not [line for line in result.stderr.splitlines() if line.startswith(chatter)]
