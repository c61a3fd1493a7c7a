"""`latency`: backends, torchvision's twin, alternating timing rounds, table / CSV / plot."""

from __future__ import annotations

import csv
import os
import sys

import pytest
import torch

import cli
from mnv3spec import build, load_spec, summarize
from mnv3spec.errors import ExportError, UserError
from mnv3spec.latency import measure
from mnv3spec.latency.files import time_file

from .conftest import ROOT

SMALL = ROOT / "specs" / "small.yaml"


def test_percentiles_are_median_p90_and_iqr():
    assert measure.percentiles([float(i) for i in range(1, 11)]) == pytest.approx((5.5, 9.1, 4.5))


def test_rounds_alternate_so_no_runner_always_goes_first():
    calls = []
    runners = {k: (lambda k=k: calls.append(k)) for k in "ab"}
    times = measure.time_rounds(runners, runs=3, warmup=2, device="cpu")
    assert calls == ["a", "a", "b", "b", "a", "b", "b", "a", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in times.values() for t in v)


def test_specs_share_the_rounds_so_a_machine_slowing_down_slows_each_alike(monkeypatch):
    """Two networks timed one after the other on a machine that slows down (each call takes a
    tick longer than the last) would differ by the whole drift; in the same rounds, by a tick."""
    ticks = iter(range(10_000))
    monkeypatch.setattr(measure, "_time_one", lambda run, device: float(next(ticks)))
    rows = measure.measure(
        [SMALL, SMALL], widths=(0.25,), devices=["cpu"], backends=("eager", "channels_last"),
        resolution=32, runs=40, warmup=1,
    )  # fmt: skip
    assert [(r.spec, r.backend) for r in rows] == [
        ("mobilenet_v3_small", "eager"), ("mobilenet_v3_small", "channels_last")
    ] * 2  # fmt: skip
    medians = [r.median_ms for r in rows]
    assert max(medians) - min(medians) <= 3  # 4 runners: one round is 4 ticks, 40 rounds 160


def test_time_model_times_one_network_on_a_runtime_as_export_lowers_it():
    """The entry a search calls: a built network, a backend or runtime, an example; median and
    spread in ms."""
    model = build(load_spec(SMALL, width=0.25, resolution=32))
    x = torch.randn(1, 3, 32, 32)
    eager = measure.time_model(model, "eager", x, runs=3, warmup=1)
    assert eager.median_ms > 0 and eager.iqr_ms >= 0 and eager.note == ""
    pytest.importorskip("onnxruntime")
    ort = measure.time_model(model, "onnxruntime", x, runs=3, warmup=1)
    assert ort.median_ms > 0 and ort.note == "CPUExecutionProvider"
    with pytest.raises(UserError, match="unknown cuda-graph-int8"):
        measure.time_model(model, "cuda-graph", x, int8=True)


def test_compiled_falls_back_to_torchscript_and_says_why(monkeypatch):
    def broken(model):
        raise RuntimeError("no working C++ compiler\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    model = build(load_spec(SMALL, width=0.25)).eval()
    x = torch.randn(1, 3, 32, 32)
    run, note = measure.prepare(model, "compiled", x)
    assert note == "torch.compile failed (no working C++ compiler); used TorchScript freeze"
    with torch.inference_mode():
        assert torch.allclose(run(), model(x), rtol=1e-4, atol=1e-9)


def test_compiled_runs_the_bn_folded_channels_last_model(monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "compile", lambda m: seen.append(m) or m)
    model = build(load_spec(SMALL, width=0.25)).eval()
    run, note = measure.prepare(model, "compiled", torch.randn(1, 3, 32, 32))
    assert note == "torch.compile"
    [compiled] = seen
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in compiled.modules())
    assert run().shape == (1, 100)


def test_measure_rows_with_reference_csv_and_plot(tmp_path):
    rows = measure.measure(
        [SMALL],
        widths=(0.25,),
        devices=["cpu"],
        backends=("eager", "channels_last", "onnxruntime"),
        reference="torchvision",
        runs=3,
        warmup=1,
        overrides={"si": 2},
        resolution=64,
    )
    assert [r.backend for r in rows] == ["eager", "channels_last", "onnxruntime"]
    summary = summarize(build(load_spec(SMALL, width=0.25, si=2, resolution=64)))
    for r in rows:
        assert (r.spec, r.width, r.device, r.batch, r.resolution) == (
            "mobilenet_v3_small",
            0.25,
            "cpu",
            1,
            64,
        )
        assert (r.params, r.macs) == (summary.params, summary.macs)
        assert 0 < r.median_ms <= r.p90_ms and r.iqr_ms >= 0
        assert r.speedup == pytest.approx(r.torchvision_ms / r.median_ms)
    assert rows[2].note == "CPUExecutionProvider"
    table = measure.format_latency(rows)
    assert table.splitlines()[0].split()[:4] == ["spec", "width", "device", "backend"]
    assert "note: onnxruntime on cpu: CPUExecutionProvider" in table

    measure.write_csv(rows, tmp_path / "rows.csv")
    with open(tmp_path / "rows.csv") as f:
        written = list(csv.DictReader(f))
    assert [w["backend"] for w in written] == ["eager", "channels_last", "onnxruntime"]
    assert float(written[0]["median_ms"]) == pytest.approx(rows[0].median_ms)
    measure.plot(rows, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_torchvision_and_timm_twins_are_timed_in_the_same_rounds():
    pytest.importorskip("timm")
    rows = measure.measure(
        [SMALL], widths=(0.25, 1.0), devices=["cpu"], reference=("torchvision", "timm"), runs=3,
        warmup=1, resolution=32,
    )  # fmt: skip
    small, full = rows  # timm has no Small at width 0.25; torchvision builds any width
    assert small.torchvision_ms > 0 and small.timm_ms is None and small.timm_speedup is None
    assert full.torchvision_ms > 0 and full.timm_ms > 0
    assert full.timm_speedup == pytest.approx(full.timm_ms / full.median_ms)
    table = measure.format_latency(rows, ("torchvision", "timm")).splitlines()
    assert table[0].split()[-6:] == ["tv", "ms", "×tv", "timm", "ms", "×timm"]
    assert table[2].split()[-2:] == ["-", "-"] and "-" not in table[3].split()[-4:]
    assert "tv ms" not in measure.format_latency(rows)  # columns only for the references asked
    assert "timm ms = timm's eager model" in measure.header(1, 3, 1, ("timm",))


def test_bad_requests_are_user_errors(monkeypatch):
    with pytest.raises(UserError, match="unknown fast; use eager"):
        measure.measure([SMALL], backends=("fast",), devices=["cpu"])
    with pytest.raises(UserError, match="unknown tensorflow; use torchvision, timm"):
        measure.measure([SMALL], reference="tensorflow", devices=["cpu"])
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(UserError, match="timm is not installed; pip install timm"):
        measure.measure([SMALL], reference="timm", devices=["cpu"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="CUDA is not available"):
        measure.measure([SMALL], devices=["cuda"])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExportError, match=r'pip install -e "\.\[export\]"'):
        measure.measure([SMALL], backends=("onnxruntime",), devices=["cpu"])


def test_cli_latency_table_and_csv(tmp_path, cli):
    result = cli(
        "latency", SMALL, "--widths", "0.25", "--devices", "cpu", "--runs", "3", "--warmup", "1",
        "--backends", "eager", "channels_last", "--reference", "torchvision",
        "--csv", tmp_path / "rows.csv",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith(f"batch 1, {torch.get_num_threads()} CPU threads")
    rows = [line.split() for line in out if line.startswith("mobilenet_v3_small")]
    assert [r[3] for r in rows] == ["eager", "channels_last"]
    assert all(r[1] == "0.25" and r[2] == "cpu" and r[-1] != "-" for r in rows)
    assert (tmp_path / "rows.csv").is_file()
    assert "timing mobilenet_v3_small width 0.25 on cpu" in result.stderr


def test_cli_latency_unknown_backend_exits_2(capsys):
    assert cli.main(["latency", str(SMALL), "--backends", "tensorrt", "--devices", "cpu"]) == 2
    assert capsys.readouterr().err.startswith("error: --backends: unknown tensorrt; use eager")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--csv", "{tmp}/missing/rows.csv"], "--csv: the folder {tmp}/missing does not exist"),
        (["--csv", "{tmp}"], "{tmp}: --csv: is a folder; give a file name"),
        (["--plot", "{tmp}/plot.txt"], "plot.txt: --plot: must end in .png"),
        (["--set", "width=0.5"], "--set width: the width comes from the widths"),
        (["--loads", "2", "--table", "{tmp}/rows.csv"], "--loads 2: a latency table times rows"),
    ],
)
def test_cli_latency_bad_output_or_width_fails_before_timing(tmp_path, cli, args, message):
    result = cli(
        "latency", "small", "--widths", "0.25", "--devices", "cpu", "--runs", "1",
        "--warmup", "1", *(a.format(tmp=tmp_path) for a in args),
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and message.format(tmp=tmp_path) in result.stderr
    assert "timing" not in result.stderr  # nothing was timed
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "flag, value, message",
    [("--loads", "0", "must be >= 1: 0"), ("--loads", "2.5", "not an integer"),
     ("--loads", "nan", "not an integer"), ("--loads", "", "not an integer"),
     ("--loads", "33", "must be <= 32: 33"), ("--loads", "10000000", "must be <= 32"),
     ("--threads", "0", "must be >= 1: 0"), ("--threads", "1.5", "not an integer"),
     ("--threads", "-2", "must be >= 1: -2"), ("--threads", "", "not an integer"),
     ("--threads", "257", "must be <= 256: 257"), ("--threads", "inf", "not an integer")],
)  # fmt: skip
def test_cli_latency_counts_that_are_not_a_count_exit_2(capsys, flag, value, message):
    before = torch.get_num_threads()
    with pytest.raises(SystemExit) as e:  # argparse's own refusal
        cli.main(["latency", str(SMALL), "--devices", "cpu", flag, value])
    assert e.value.code == 2 and torch.get_num_threads() == before
    err = capsys.readouterr().err
    assert f"argument {flag}: {message}" in err and "Traceback" not in err


@pytest.mark.parametrize("threads", [1, 2])
def test_cli_latency_times_at_the_threads_asked_then_torchs_count_is_back(capsys, threads):
    """--threads is the count the rows are timed with (the header states it; a runtime's program
    takes torch's count as it loads), whatever torch had before: set to the other one here."""
    before, other = torch.get_num_threads(), 3 - threads
    torch.set_num_threads(other)
    seen = []
    real = measure.time_rounds

    def time_rounds(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    try:
        with pytest.MonkeyPatch.context() as m:
            m.setattr(measure, "time_rounds", time_rounds)
            argv = ["latency", str(SMALL), "--widths", "0.25", "--devices", "cpu", "--runs", "1",
                    "--warmup", "1", "--resolution", "32", "--threads", str(threads)]  # fmt: skip
            assert cli.main(argv) == 0
        assert torch.get_num_threads() == other
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {threads}
    assert capsys.readouterr().out.startswith(f"batch 1, {threads} CPU threads")


def test_write_errors_are_user_errors(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)  # as atomic_path renames the finished file
    with pytest.raises(UserError, match=r"rows\.csv: csv: cannot write: No space left on device"):
        measure.write_csv([], tmp_path / "rows.csv")
    assert list(tmp_path.iterdir()) == []


def test_cli_latency_never_writes_over_its_spec_or_another_kind(tmp_path, cli):
    spec = tmp_path / "s.yaml"
    spec.write_bytes(SMALL.read_bytes())
    other = tmp_path / "other.yaml"
    other.write_bytes(SMALL.read_bytes())
    for args, message in [
        (["--csv", spec], "--csv: is also an input of this command"),
        (["--plot", tmp_path / "link.png"], "--plot: is also an input of this command"),
        (["--csv", other], "--csv: exists and is a spec (YAML), not a CSV table"),
        (["--csv", tmp_path / "x.png", "--plot", tmp_path / "x.png"], "--plot: is also an input"),
    ]:
        if not (tmp_path / "link.png").exists():
            (tmp_path / "link.png").symlink_to(spec)
        result = cli("latency", spec, "--widths", "0.25", "--devices", "cpu", "--runs", "1",
                     "--warmup", "1", *args)  # fmt: skip
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert message in result.stderr and "timing" not in result.stderr
    assert spec.read_bytes() == SMALL.read_bytes() == other.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.png", "other.yaml", "s.yaml"]


def test_cli_latency_a_batch_too_large_for_memory_is_refused_before_allocating(cli):
    result = cli("latency", "small", "--widths", "0.25", "--devices", "cpu", "--batch", "100000",
                 "--runs", "1", "--warmup", "1")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1  # one paragraph, no progress line: nothing was timed
    assert result.stderr.startswith("error: timing mobilenet_v3_small width 0.25 on cpu would need")
    assert "a forward pass at batch 100000, 32×32" in result.stderr


def test_timing_warnings_say_busy_and_noisy_once(monkeypatch):
    monkeypatch.setattr(measure.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    monkeypatch.setattr(measure.os, "cpu_count", lambda: 2)
    lines = measure.timing_warnings([(10.0, 0.5), (10.0, 2.0), (5.0, 1.0), (None, None)])
    assert len(lines) == 2
    assert "load average (9.0) exceeds the 2 cores" in lines[0]
    assert "2 of 4 timings have a spread (IQR) above 10% of their median (up to 20%)" in lines[1]
    monkeypatch.setattr(measure.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert measure.timing_warnings([(10.0, 0.5)]) == []


def test_a_slow_compile_says_when_it_starts_and_ends_and_torch_noise_is_kept_quiet(caplog):
    import logging

    lines = []
    with measure._compiling("compiled", lines.append):
        logging.getLogger("torch.utils.cpp_extension").warning("No CUDA runtime is found")
    assert lines[0].startswith("compiling with torch.compile (this can take minutes")
    assert lines[1].startswith("compiled with torch.compile in ") and lines[1].endswith(" s")
    assert "No CUDA runtime" not in caplog.text
    with measure._compiling("eager", lines.append):
        pass
    assert len(lines) == 2


def test_cli_latency_times_an_exported_file_as_it_is(tmp_path, cli):
    """Issue 31: ``latency FILE.onnx`` (and .pte, .tflite) times the file at its metadata's
    resolution in the runtime that reads it; a spec beside it, or a checkpoint, is refused."""
    out = tmp_path / "tiny.onnx"
    assert cli("export", ROOT / "tests" / "data" / "tiny_phone.yaml", "--format", "onnx",
               "--out", out).returncode == 0  # fmt: skip
    r = cli("latency", out, "--runs", "3", "--warmup", "1")
    assert r.returncode == 0, r.stderr
    (line,) = [line for line in r.stdout.splitlines() if line.startswith(str(out))]
    assert line.split()[-1] == "onnxruntime" and float(line.split()[1]) > 0
    timed = time_file(out, runs=2, warmup=1)
    assert timed.runtime == "onnxruntime" and timed.timing.median_ms > 0
    assert time_file(out, runs=2, warmup=1, loads=3).timing.median_ms > 0  # loaded 3 times
    loaded = cli("latency", ROOT / "tests" / "data" / "tiny_phone.yaml", "--widths", "1",
                 "--backends", "onnxruntime", "--runs", "3", "--warmup", "1",
                 "--loads", "2")  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert "each runtime's file loaded 2 times, run in turn" in loaded.stdout
    mixed = cli("latency", out, "small")
    assert mixed.returncode == 2 and "not both" in mixed.stderr
    foreign = tmp_path / "foreign.onnx"  # an ONNX model without our metadata: nothing timed
    foreign.write_bytes(out.read_bytes().replace(b"mnv3spec", b"notours!"))
    r = cli("latency", foreign)
    assert r.returncode == 2 and r.stdout == "" and "not an mnv3spec" in r.stderr


def test_cli_latency_never_replaces_a_csv_of_the_users(tmp_path, cli):
    """Issue 31 hunt 4: a CSV of the same suffix is not ours unless it starts with our header;
    ours (from an earlier run) is replaced."""
    mine = tmp_path / "mine.csv"
    mine.write_text("name,score\nalice,3\n")
    r = cli("latency", "small", "--widths", "0.25", "--runs", "1", "--warmup", "1", "--csv", mine)
    assert r.returncode == 2 and "this command did not write" in r.stderr and r.stdout == ""
    assert mine.read_text() == "name,score\nalice,3\n"
    ours = tmp_path / "ours.csv"
    args = ("latency", "small", "--widths", "0.25", "--runs", "1", "--warmup", "1", "--csv", ours)
    assert cli(*args).returncode == 0 and cli(*args).returncode == 0  # the second replaces ours
