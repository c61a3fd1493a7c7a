"""``sweep``: grids, variant rows, the look-up table, the Pareto front, bad grids, and a trained
sweep killed with SIGKILL and run again."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from cli import main
from mnv3spec.explore.grid import Grid, parse_grid
from mnv3spec.explore.sweep_report import pareto_front
from mnv3spec.latency import predict

from .conftest import ROOT

FAST = ["--latency-runs", "2", "--latency-warmup", "1", "--devices", "cpu"]
TINY = ["--set", "width=0.25", "--set", "resolution=16"]


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_grid_values_are_read_as_set_reads_them():
    assert parse_grid("width=0.5, 1") == Grid("width", (0.5, 1))
    assert parse_grid("layers.12.se=true,false") == Grid("layers.12.se", (True, False))


def test_pareto_front_keeps_points_nothing_beats_on_both_axes():
    points = [(1, 50, "a"), (2, 60, "b"), (3, 55, "c"), (4, 70, "d"), (2.5, 60, "e")]
    assert [p[2] for p in pareto_front(points)] == ["a", "b", "d"]
    assert [p[2] for p in pareto_front(points, more_x_is_better=True)] == ["d"]


@pytest.mark.parametrize(
    "grid, message",
    [
        ("width=abc", "'abc' is not a number, as width is"),
        ("nosuchkey=1", "unknown parameter 'nosuchkey'"),
        ("width=", "no values for width"),
        ("width", "not KEY=V1,V2"),
        ("layers.nosuch.k=3,5", "no row named 'nosuch'; its rows are 0..16, named: stem, bneck1"),
        # issue 31: a number of 5,000 digits, refused before it is converted, and cut short
        (f"layers.{'9' * 5000}.k=3,5", "is no row's index: a spec has at most 256 rows"),
        (f"width={'9' * 5000}", "is not a number, as width is"),
    ],
)
def test_bad_grid_fails_before_any_work_in_one_line(cli, tmp_path, grid, message):
    r = cli("sweep", "small", "--grid", grid, "--no-train", "--out", tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and message in r.stderr and "--grid" in r.stderr
    assert not any(tmp_path.iterdir()) and len(r.stderr) < 600


def test_no_train_sweep_has_a_row_per_variant_even_one_that_does_not_compile(tmp_path, capsys):
    argv = ["sweep", "small", *TINY, "--grid", "layers.3.k=3,4", "--grid", "layers.12.se=true"]
    argv += ["--no-train", "--out", str(tmp_path), *FAST]
    assert main(argv) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "small"
    rows = read(folder / "sweep.csv")
    assert [r["layers.3.k"] for r in rows] == ["3", "4"]
    assert float(rows[0]["latency_ms cpu eager"]) > 0 and int(rows[0]["macs"]) > 0
    assert "does not compile" in rows[1]["error"] and "odd integer" in rows[1]["error"]
    assert "measured as latency does" in rows[0]["latency_method"]
    assert (folder / "pareto.png").stat().st_size > 10_000
    assert "timing" in out and "error: small-L3.k=4-L12.se=true" in out

    assert main(argv) == 0  # again: the latency is reused, the table and plot redrawn
    again = capsys.readouterr().out
    assert "timing" not in again and read(folder / "sweep.csv") == rows

    assert main([*argv[:8], "--grid", "layers.12.se=false", *argv[10:]]) == 2
    assert "holds another sweep" in capsys.readouterr().err


def test_latency_table_then_predicted_sweep(tmp_path, capsys):
    table = tmp_path / "t.csv"
    argv = ["latency", "small", *TINY[2:], "--widths", "0.25", "--devices", "cpu"]
    assert main([*argv, "--runs", "2", "--warmup", "1", "--table", str(table)]) == 0
    rows = read(table)
    assert (
        sum(r["op"] == predict.OVERHEAD for r in rows) == 1 and len(rows) == 15
    )  # 14 distinct of 17 rows
    capsys.readouterr()

    before = table.read_bytes()
    argv = ["sweep", "small", *TINY, "--grid", "layers.3.k=3,5", "--no-train"]
    assert main([*argv, "--predict", str(table), "--out", str(tmp_path), *FAST]) == 0
    swept = read(tmp_path / "small" / "sweep.csv")
    assert float(swept[0]["latency_ms cpu eager"]) > 0
    assert float(swept[0]["iqr_ms cpu eager"]) >= 0
    assert "look-up table" in swept[0]["latency_method"]
    # the 5×5 row 3 is not in the table: that variant says so, and the table is only read
    assert "1 rows are not in the table" in swept[1]["error"] and "--table" in swept[1]["error"]
    assert table.read_bytes() == before
    assert "predicted: sum of the rows' medians" in capsys.readouterr().out


def test_print_commands_are_ordinary_train_commands(tmp_path, capsys):
    argv = ["sweep", "small", *TINY, "--grid", "layers.12.se=true,false", "--out", str(tmp_path)]
    assert main([*argv, "--data", "synthetic", "--epochs", "3", "--print-commands"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(
        line.startswith("python -m mnv3spec.cli train ") for line in lines
    )
    assert "--set layers.12.se=true --epochs 3 --data synthetic --out" in lines[0]
    assert (
        lines[1].endswith("--name small-L12.se=false")
        and str(tmp_path / "small" / "runs") in lines[1]
    )


def test_sweep_killed_with_sigkill_resumes_without_redoing_finished_variants(tmp_path):
    cmd = [sys.executable, str(ROOT / "cli.py"), "sweep", "small", *TINY]
    cmd += ["--grid", "layers.12.se=true,false", "--out", str(tmp_path), *FAST]
    cmd += ["--data", "synthetic", "--epochs", "2", "--batch", "256", "--seed", "0"]
    cmd += ["--device", "cpu"]
    runs = tmp_path / "small" / "runs"
    first, second = runs / "small-L12.se=true", runs / "small-L12.se=false"
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not (second / "metrics.csv").exists():  # epoch 1 of the second variant is saved
            assert proc.poll() is None and time.monotonic() < deadline, "sweep ended too soon"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(read(first / "metrics.csv")) == 2 and len(read(second / "metrics.csv")) == 1
    before = {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in first.iterdir()}

    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert (
        "1 variants already trained" in again.stdout
        and "resuming small-L12.se=false" in again.stdout
    )
    assert {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in first.iterdir()} == before
    assert "after epoch 1 of 2" in (tmp_path / "small" / "logs" / f"{second.name}.log").read_text()
    rows = read(tmp_path / "small" / "sweep.csv")
    assert [r["error"] for r in rows] == ["", ""]
    assert all(float(r["val_top1"]) >= 0 and float(r["train_seconds"]) > 0 for r in rows)
    assert [r["run_folder"] for r in rows] == [str(first), str(second)]
    assert (tmp_path / "small" / "pareto.png").is_file()


def test_a_grid_names_rows_and_a_variant_sweeps_like_any_spec(tmp_path):
    argv = ["sweep", "small-no-se", *TINY, "--grid", "layers.bneck3.k=3,5", "--no-train"]
    assert main([*argv, "--out", str(tmp_path), *FAST]) == 0
    rows = read(tmp_path / "small-no-se" / "sweep.csv")
    assert [r["layers.bneck3.k"] for r in rows] == ["3", "5"] and not any(r["error"] for r in rows)
    assert int(rows[1]["macs"]) > int(rows[0]["macs"])  # a 5×5 depthwise costs more
