"""Issue 23, case by case: sweep, latency tables, int8 files and paths given by a careless or
hostile user. Each either works or ends with one paragraph and exit status 2 (3: diverged,
130: interrupted); no file of the user's changes, nothing hangs."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli import main
from mnv3spec import UserError, build, load_spec
from mnv3spec.deploy.quantize import resolve_rows
from mnv3spec.explore import sweep_folder as state
from mnv3spec.files import locked_folder
from mnv3spec.latency import predict
from mnv3spec.weights.checkpoint import metadata_problem

from .conftest import ROOT

FAST = ["--latency-runs", "1", "--latency-warmup", "1", "--devices", "cpu"]
TINY = ["--set", "width=0.25", "--set", "resolution=16"]
SWEEP = ["sweep", "small", *TINY, "--no-train", *FAST]


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One finished --no-train sweep of two variants, to copy and damage."""
    out = tmp_path_factory.mktemp("swept")
    assert main([*SWEEP, "--grid", "layers.3.k=3,5", "--out", str(out), "--name", "s"]) == 0
    return out / "s"


def copy_of(swept: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "s"
    shutil.copytree(swept, folder)
    return folder


# --- 1, 15, 16: the folder a sweep writes into ------------------------------------------------


@pytest.mark.parametrize("name", ["/project", "..", ".", "a/b"])
def test_case1_sweep_name_must_be_a_plain_folder_name(tmp_path, capsys, name):
    project = tmp_path / "project"
    project.mkdir()
    (project / "sweep.csv").write_text("note\n")
    (project / "pareto.png").write_text("my text\n")
    before = snapshot(tmp_path)
    name = str(project) if name == "/project" else name
    assert main([*SWEEP, "--grid", "width=0.25", "--out", str(project), "--name", name]) == 2
    assert "must be a plain folder name" in one_error(capsys)
    assert snapshot(tmp_path) == before


def test_case1_a_folder_of_the_users_is_never_written_into(tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "pareto.png").write_text("my text\n")
    before = snapshot(tmp_path)
    assert main([*SWEEP, "--grid", "width=0.25", "--out", str(tmp_path), "--name", "project"]) == 2
    assert "is a folder that is not a sweep folder (it has no sweep.json)" in one_error(capsys)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "file, content, message",
    [
        # a spec is known by its bytes (issue 31): refused as one before the table is read
        ("sweep.csv", b"name: mine\nlayers: []\n", "is a spec (YAML), not a CSV table"),
        ("pareto.png", b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 16, "is safetensors"),
        ("pareto.png", b"my notes\n", "is named like a PNG image but is not one"),
    ],
)
def test_case1_files_of_another_kind_inside_a_sweep_folder_are_kept(
    swept, tmp_path, capsys, file, content, message
):
    folder = copy_of(swept, tmp_path)
    (folder / file).write_bytes(content)
    before = snapshot(folder)
    argv = [*SWEEP, "--grid", "layers.3.k=3,5", "--out", str(tmp_path), "--name", "s"]
    assert main(argv) == 2
    assert message in one_error(capsys) and snapshot(folder) == before


def test_case15_a_second_sweep_into_a_folder_in_use_is_refused(swept, tmp_path, capsys):
    folder = copy_of(swept, tmp_path)
    before = snapshot(folder)
    with locked_folder(folder, "sweep"):
        argv = [*SWEEP, "--grid", "layers.3.k=3,5", "--out", str(tmp_path), "--name", "s"]
        assert main(argv) == 2
    assert f"is in use by another sweep (pid {os.getpid()} on " in one_error(capsys)
    assert snapshot(folder) == before


def test_case15_a_locked_variant_says_in_use_not_an_old_epoch_line(tmp_path):
    from mnv3spec.explore.grid import variants
    from mnv3spec.explore.launch import run_trainings
    from mnv3spec.explore.training import Training
    from mnv3spec.services.run_folder import RunFolder
    from mnv3spec.train.config import TrainConfig

    (v,) = variants(["small"], {"width": 0.25, "resolution": 16}, [])
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    (runs / v.id).mkdir(parents=True)
    logs.mkdir()
    (logs / f"{v.id}.log").write_text("epoch 3/20  loss 1.2 (an orphaned run's last line)\n")
    cfg = TrainConfig(v.spec, v.overrides, data="synthetic", epochs=1, batch=128, device="cpu")
    cfg = dataclasses.replace(cfg, out=str(runs), name=v.id)
    with locked_folder(runs / v.id, "training"):
        errors = run_trainings(
            [Training(v, RunFolder(runs / v.id), cfg)], logs, 0, lambda line: None
        )
    code, error = errors[v.id]
    assert code == 2 and f"in use by another training (pid {os.getpid()}" in error
    assert "epoch 3/20" not in error


@pytest.mark.parametrize("refused", [["--predict", "nosuch.csv"], ["--print-commands"]])
def test_case16_a_refused_or_printing_sweep_writes_nothing(tmp_path, capsys, refused):
    argv = [*SWEEP, "--grid", "width=0.25", "--out", str(tmp_path), "--name", "s", *refused]
    assert main(argv) == (2 if "--predict" in refused else 0)
    assert not (tmp_path / "s").exists()


# --- 3, 5, 10, 18: latency tables --------------------------------------------------------------


def table_text(rows: list[list[str]], extra: tuple[str, ...] = ()) -> str:
    lines = [",".join([*predict.COLUMNS, *extra])] + [",".join(r) for r in rows]
    return "\n".join(lines) + "\n"


ROW = ["cpu", "eager", "1", "1", "bneck", "16x8x8", "16x8x8", "3", "1", "16", "false", "RE"]
ROW += ["true", "1", "", "0.05", "0.001", "a row"]


def test_case3_a_users_own_column_is_kept(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(table_text([[*ROW, "my note"]], ("note",)))
    table = predict.read_table(path)
    table.add(("cpu", "eager", "1", "1", "pool", *[""] * 10), 0.01, 0.0, "new")
    predict.write_table(table)
    rows = read(path)
    assert [r["note"] for r in rows] == ["my note", ""]


@pytest.mark.parametrize(
    "row, message",
    [
        ([*ROW[:15], "abc", *ROW[16:]], "median_ms 'abc' is not a positive number"),
        ([*ROW[:15], "", *ROW[16:]], "median_ms '' is not a positive number"),
        ([*ROW[:15], "nan", *ROW[16:]], "median_ms 'nan'"),
        ([*ROW[:15], "1e308", *ROW[16:]], "median_ms '1e308'"),
        ([*ROW[:15], "-18000", *ROW[16:]], "median_ms '-18000'"),
        ([*ROW[:16], "inf", ROW[17]], "iqr_ms 'inf'"),
        (ROW[:10], "a row of"),
        ([*ROW, "x"], "a row of"),
        ([*ROW[:3], "two", *ROW[4:]], "threads 'two' is not a whole number"),
    ],
)
def test_case10_18_a_damaged_table_row_is_named_by_line(tmp_path, row, message):
    path = tmp_path / "t.csv"
    path.write_text(table_text([[*ROW[:4], "pool", *([""] * 10), "0.01", "0", "x"], row]))
    with pytest.raises(UserError, match="line 3") as e:
        predict.read_table(path)
    assert message in str(e.value) and "latency --table" in str(e.value)


def test_case10_a_row_twice_and_a_table_with_no_rows(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text(table_text([ROW, ROW]))
    with pytest.raises(UserError, match="appears twice"):
        predict.read_table(path)
    path.write_text(table_text([]))
    assert main([*SWEEP, "--grid", "width=0.25", "--out", str(tmp_path), "--predict", str(path)])
    assert "holds no rows" in one_error(capsys)


def test_case5_a_fifo_given_as_a_table_is_refused_without_waiting(tmp_path, capsys):
    fifo = tmp_path / "t.csv"
    os.mkfifo(fifo)
    argv = [*SWEEP, "--grid", "width=0.25", "--out", str(tmp_path), "--predict", str(fifo)]
    assert main(argv) == 2
    assert "is not a regular file" in one_error(capsys)
    assert main(["latency", "small", "--table", str(fifo), "--widths", "0.25"]) == 2
    assert "is not a regular file" in one_error(capsys)  # refused as an output too


def test_case8_a_table_for_another_thread_count_ends_in_a_summary(tmp_path, capsys):
    table = tmp_path / "t.csv"
    argv = ["latency", "small", *TINY[2:], "--widths", "0.25", "--devices", "cpu"]
    assert main([*argv, "--runs", "1", "--warmup", "1", "--table", str(table)]) == 0
    rows = list(csv.DictReader(table.open()))  # timed with this process's thread count
    assert rows and all(r["threads"] != "64" for r in rows)
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "threads": "64"} for r in rows)
    before = table.read_bytes()
    capsys.readouterr()
    argv = [*SWEEP, "--grid", "width=0.25", "--out", str(tmp_path), "--predict", str(table)]
    assert main(argv) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "no variant succeeded: all 1 failed" in out.out
    assert "rows are not in the table" in out.out and table.read_bytes() == before


# --- 7, 8, 14: the grid and the variants -------------------------------------------------------


def test_case7_a_huge_grid_is_refused_with_its_count_and_the_flag(tmp_path, capsys):
    grids = [f"--grid=layers.{i}.k=3,5,7,9,11,13,15,1,3,5" for i in range(1, 11)]
    grids = [g.replace("=3,5,7,9,11,13,15,1,3,5", "=1,3,5,7,9,11,13,15,17,19") for g in grids]
    assert main([*SWEEP, *grids, "--out", str(tmp_path), "--print-commands"]) == 2
    err = one_error(capsys)
    assert "--max-variants 256: 10,000,000,000 variants" in err
    assert "raise this bound to 10000000000" in err
    assert not any(tmp_path.iterdir())


def test_case8_nothing_compiles_ends_in_a_summary_with_exit_2(tmp_path, capsys):
    argv = [*SWEEP, "--grid", "layers.3.k=4,6", "--out", str(tmp_path)]
    assert main(argv) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "slice step" not in out.err
    assert "no variant succeeded: all 2 failed" in out.out
    assert (tmp_path / "small" / "pareto.png").stat().st_size > 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--devices", "cuda"], "CUDA is not available"),
        (["--backends", "nosuch"], "unknown nosuch"),
    ],
)
def test_case8_devices_and_backends_are_refused_before_any_work(tmp_path, capsys, flags, message):
    if "cuda" in flags:
        pytest.importorskip("torch").cuda.is_available() and pytest.skip("CUDA is here")
    argv = [*SWEEP[:-2], "--grid", "width=0.25", "--out", str(tmp_path), *flags]
    assert main(argv) == 2
    assert message in one_error(capsys) and not any(tmp_path.iterdir())


def test_case8_a_diverging_variant_exits_3(tmp_path, capsys):
    argv = ["sweep", "small", *TINY, *FAST, "--grid", "width=0.25", "--out", str(tmp_path)]
    argv += ["--data", "synthetic", "--epochs", "1", "--lr", "1e30", "--device", "cpu"]
    assert main(argv) == 3
    out = capsys.readouterr().out
    assert "train exited with 3" in out and "no variant succeeded" in out


def test_case8_a_data_folder_that_does_not_exist_ends_in_a_summary(tmp_path, capsys):
    argv = ["sweep", "small", *TINY, *FAST, "--grid", "width=0.25", "--out", str(tmp_path)]
    assert main([*argv, "--data", str(tmp_path / "nosuchfolder"), "--device", "cpu"]) == 2
    out = capsys.readouterr().out
    assert "train exited with 2" in out and "nosuchfolder" in out
    assert "no variant succeeded: all 1 failed" in out


def test_case14_two_specs_with_one_stem_are_kept_apart(tmp_path, capsys):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(ROOT / "specs" / "small.yaml", tmp_path / sub / "small.yaml")
    specs = [str(tmp_path / "a" / "small.yaml"), str(tmp_path / "b" / "small.yaml")]
    argv = ["sweep", *specs, *TINY, "--no-train", *FAST, "--grid", "layers.3.k=3"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    rows = read(tmp_path / "small-small-2" / "sweep.csv")
    assert [r["variant"] for r in rows] == ["small-L3.k=3", "small-2-L3.k=3"]
    assert all(float(r["latency_ms cpu eager"]) > 0 for r in rows)
    assert main([*argv[:2], specs[0], *argv[3:], "--out", str(tmp_path)]) == 2
    assert "is given twice" in one_error(capsys)


# --- 9: sweep state ----------------------------------------------------------------------------


def text_latency(text: str) -> str:
    measured = json.loads(text)
    for entry in measured.values():
        entry["latency_ms"] = {column: "fast" for column in entry["latency_ms"]}
    return json.dumps(measured)


@pytest.mark.parametrize(
    "file, damage, message",
    [
        ("measured.json", lambda t: t[: len(t) // 2], "damaged: not JSON"),
        ("measured.json", lambda t: "[1, 2]", "not a mapping of variants"),
        ("measured.json", text_latency, "are not"),
        (
            "measured.json",
            lambda t: json.dumps({"v": {"settings": "x", "latency_ms": {"c": -1}}}),
            "finite, positive milliseconds",
        ),
        ("sweep.json", lambda t: "{not json", "damaged: not JSON"),
        ("sweep.json", lambda t: "[]", "not the mapping of specs, grids, set, train"),
    ],
)
def test_case9_damaged_sweep_state_is_one_paragraph(swept, tmp_path, capsys, file, damage, message):
    folder = copy_of(swept, tmp_path)
    (folder / file).write_text(damage((folder / file).read_text()))
    before = snapshot(folder)
    argv = [*SWEEP, "--grid", "layers.3.k=3,5", "--out", str(tmp_path), "--name", "s"]
    assert main(argv) == 2
    err = one_error(capsys)
    assert message in err and file in err and snapshot(folder) == before


# --- 12, 13: paths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["show", "a" * 300 + ".yaml"], "has a name of 305 bytes"),
        (["train", "small", "--name", "n" * 256], "has a name of 256 bytes"),
        (["export", "small", "--format", "onnx", "--out", "TMP/" + "x" * 260 + ".onnx"], "265 b"),
        (["train", "small", "--name", "caf\udce9"], "bytes that are not UTF-8"),
        (["train", "sm\udcffall.yaml"], "bytes that are not UTF-8"),
        (["sweep", "small", "--grid", "width=0.25", "--name", "\udcff"], "not UTF-8"),
    ],
)
def test_case12_13_paths_the_system_cannot_take_leave_nothing(tmp_path, capsys, argv, message):
    argv = [a.replace("TMP", str(tmp_path)) for a in argv]
    assert main([*argv, "--out", str(tmp_path)] if argv[0] in ("train", "sweep") else argv) == 2
    assert message in one_error(capsys)
    assert not any(tmp_path.iterdir())


def test_case12_long_variant_ids_are_cut_and_kept_apart():
    from mnv3spec.explore.grid import Grid, variants

    grid = Grid("description", ("x" * 300, "y" * 300))
    ids = [v.id for v in variants(["small"], {}, [grid])]
    assert len(set(ids)) == 2 and all(len(i.encode()) <= 120 for i in ids)


# --- 4, 17: class lists and --keep-float -------------------------------------------------------


def test_case4_a_huge_class_list_with_one_repeat_is_answered_at_once():
    spec = {"params": {"num_classes": 60_000}}
    meta = {"classes": [f"c{i}" for i in range(60_000)], "resolution": 32}
    meta["classes"][-1] = "c0"
    started = time.perf_counter()  # quadratic counting took minutes here; now milliseconds
    assert metadata_problem(spec, meta) == "classes lists 'c0' more than once"
    assert time.perf_counter() - started < 30
    meta["classes"] = [f"c{i}" for i in range(1_000_000)]
    assert "more than the 100,000 a spec allows" in metadata_problem(spec, meta)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([""], "an empty entry"),
        (["r"], "no row 'r'"),
        ([" "], "an empty entry"),
        (["1", "1"], "is given twice"),
        (["1", "01"], "is given twice"),
        (["x1"], "no row"),
        (["r3"], "no row 'r3'"),  # a name, as in --set (issue 31 hunt 17): no row has it
    ],
)
def test_case17_keep_float_takes_rows_only(rows, message):
    model = build(load_spec("small", width=0.25, resolution=16), device="meta")
    with pytest.raises(UserError, match=message):
        resolve_rows(model, rows)
    assert resolve_rows(model, ["1", "3", "bneck5"]) == ["bneck1", "bneck3", "bneck5"]


def test_case17_keep_float_flag_with_only_commas_is_refused(tmp_path, capsys):
    from .conftest import tiny_checkpoint

    tiny_checkpoint(tmp_path / "best.safetensors", ["a", "b"])
    argv = ["quantize", str(tmp_path / "best.safetensors"), "--keep-float", ",", "--force"]
    assert main([*argv, "--data", "synthetic", "--calib", "8"]) == 2
    assert "an empty entry" in one_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors"]


# --- 6: Ctrl-C ---------------------------------------------------------------------------------


def test_case6_ctrl_c_ends_the_sweep_with_130_and_starts_no_other_variant(tmp_path):
    cmd = [sys.executable, str(ROOT / "cli.py"), "sweep", "small", *TINY, *FAST]
    cmd += ["--grid", "layers.12.se=true,false", "--out", str(tmp_path), "--data", "synthetic"]
    cmd += ["--epochs", "50", "--batch", "64", "--device", "cpu"]
    runs = tmp_path / "small" / "runs"
    first, second = runs / "small-L12.se=true", runs / "small-L12.se=false"
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a terminal's Ctrl-C even where the suite itself runs in the background (`cmd &`), which
        # starts its children with SIGINT ignored, and Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 600
        while not (first / "resume.pt").exists():  # the first variant is training
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C at a terminal: the whole group
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert not second.exists()  # no variant started after it
    assert (first / "config.json").is_file() and (first / "resume.pt").is_file()  # resumable
    assert not (tmp_path / "small" / ".lock").exists()


def test_case19_sweep_help_says_whose_batch_and_warmup(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--batch and --warmup are training's; latency's are --latency-batch" in out


def test_sweep_state_round_trips(tmp_path):
    measured = {"v": state.Measured("k", {"cpu eager": 1.5}, {"cpu eager": 0.1})}
    state.write_measured(tmp_path, measured)
    assert state.read_measured(tmp_path) == measured


# --- issue 31: a spec from a pull request, validated in CI as a workflow would --------------------


def test_a_hostile_pull_request_cannot_read_files_or_inject_workflow_commands(tmp_path):
    """In a subprocess, as a GitHub workflow runs it: a variant whose base is a file outside the
    checkout and another named with a newline and ``::warning::``. Every line printed is ours, no
    file outside is read, and the answer comes at once."""
    secret = tmp_path / "secret.yaml"
    secret.write_text("name: s3cr3t-token\nparams: s3cr3t-token\n")
    repo = tmp_path / "repo"
    (repo / "specs").mkdir(parents=True)
    (repo / "specs" / "v.yaml").write_text(f"base: {secret}\nname: v\n")
    (repo / "specs" / "w.yaml").write_text("base: ../../secret.yaml\nname: w\n")
    hostile = repo / "specs" / "x\n::warning file=a::owned\n.yaml"
    hostile.write_text("base: small\nname: x\nrows: {bneck1: {name: forward}}\n")
    names = ["specs/v.yaml", "specs/w.yaml", str(hostile.relative_to(repo)), "specs/gone.yaml"]
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mnv3spec", "validate", "--format", "github", *names],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2 and time.monotonic() - start < 30
    lines = (done.stdout + done.stderr).splitlines()
    assert lines[0].startswith("::error file=specs/gone.yaml::no such file"), lines
    assert all(line.startswith(("::error ", "error: ")) for line in lines), lines
    assert "s3cr3t" not in done.stdout + done.stderr
    names.remove("specs/gone.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "mnv3spec", "validate", "--format", "github", *names],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 1 and "s3cr3t" not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(",")[0] for line in lines[:3]] == [
        "::error file=specs/v.yaml",
        "::error file=specs/w.yaml",
        "::error file=specs/x%0A%3A%3Awarning file=a%3A%3Aowned%0A.yaml",
    ]
    assert "lies outside the folder" in lines[0] and "taken by PyTorch" in lines[2]
    assert lines[-1] == "3 specs: 0 valid, 3 invalid (3 errors)"
