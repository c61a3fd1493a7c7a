"""``adapt`` as a user runs it: a search on the tiny phone spec (eager, synthetic data, a few
fine-tune steps) killed with SIGKILL mid-step and continued by the same command; its variant
file, trace and table; and every bad input refused in one paragraph with nothing changed."""

from __future__ import annotations

import csv
import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from mnv3spec.adapt.proposal import REFERENCE
from mnv3spec.files import locked_folder

from . import fake_timing
from .conftest import ROOT, run_cli

TINY = str(ROOT / "tests" / "data" / "tiny_phone.yaml")
FAST = ["--backend", "eager", "--resolution", "64", "--latency-runs", "40", "--data", "synthetic"]
FAST += ["--epochs", "1", "--batch", "16", "--holdout", "50", "--steps-per-epoch", "2"]
FAST += ["--finetune-steps", "2", "--retrain-epochs", "1", "--device", "cpu", "--seed", "0"]


def adapt_args(out: Path, *more: str) -> list[str]:
    # δ 5 % of the start: one step meets 0.97, two meet 0.9 (timing faked by the searched fixture)
    return ["adapt", TINY, "--target-ratio", "0.97", "--step", "0.05", *FAST, "--out", str(out),
            *more]  # fmt: skip


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A search killed (SIGKILL, its workers too) once its first proposal is training, then
    continued by the same command; its latency faked (:mod:`.fake_timing`), so that its path
    does not hang on the machine's load."""
    out = tmp_path_factory.mktemp("adapt") / "tiny"
    args = adapt_args(out, "--no-baselines")
    site = fake_timing.site_folder(tmp_path_factory.mktemp("site"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    _kill_when(proc, lambda: any((out / "logs").glob("s01-*.log")))
    assert (out / "trace.csv").is_file()  # the start was trained before the kill
    with fake_timing.installed():
        return out, run_cli(*args)


def test_a_killed_search_continues_and_writes_a_variant_file(searched):
    out, r = searched
    assert r.returncode == 0, r.stderr
    assert "adapt tiny_phone:" in r.stdout
    # the timing's thread count on the start line (one, the paper's, by default): a ratio of
    # two networks depends on it, and adapt.json holds it
    assert re.search(r"at 64px, 1 thread → target", r.stdout)
    assert json.loads((out / "adapt.json").read_text())["threads"] == 1
    result = out / "tiny_phone-adapted.yaml"
    # its base is the input spec, outside the folder: trusted as the user trusts it
    allow = ("--allow-base", str(Path(TINY).parent))
    refused = run_cli("validate", str(result))
    assert refused.returncode == 1 and "--allow-base DIR" in refused.stdout + refused.stderr
    assert run_cli("validate", str(result), *allow).returncode == 0
    shown = run_cli("show", str(result), *allow)
    assert shown.returncode == 0 and "tiny_phone_adapted" in shown.stdout
    assert run_cli("diff", TINY, str(result), *allow).returncode == 0
    assert not (out / ".lock").exists()
    assert "adapt" in r.stdout and (out / "summary.csv").is_file()
    assert (out / "adapt.png").stat().st_size > 0
    assert len(_path_of(out)) >= 2  # the start and at least one step


def test_the_trace_holds_every_proposal_and_one_choice_per_step(searched):
    out, _ = searched
    with open(out / "trace.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["edit"] == "start" and rows[0]["chosen"] == "1"
    steps = {int(r["step"]) for r in rows}
    for step in steps:
        assert sum(r["chosen"] == "1" for r in rows if int(r["step"]) == step) == 1
    for r in rows:
        assert (out / r["run"] / "best.safetensors").is_file()
        assert float(r["latency_ms"]) > 0 and r["spread_ms"] and r["holdout_top1"]
        assert float(r["holdout_loss"]) > 0  # the figure that ranked it (--score loss)
    for step in steps - {0}:  # each step's reference: its parent fine-tuned as its proposals
        (ref,) = [r for r in rows if int(r["step"]) == step and r["edit"] == REFERENCE]
        parent = next(r for r in rows if int(r["step"]) == step - 1 and r["chosen"] == "1")
        assert ref["edits"] == parent["edits"] and ref["chosen"] == "0"
        assert ref["run"] == f"runs/s{step:02d}-parent"
        config = json.loads((out / ref["run"] / "config.json").read_text())
        assert config["lr"] == pytest.approx(0.01) and config["steps_per_epoch"] == 2  # seed's / 10
        assert config["init"] == str(out / parent["run"] / "best.safetensors")


def test_the_same_command_again_changes_nothing(searched, tmp_path):
    out, _ = searched
    before = (out / "trace.csv").read_bytes()
    r = run_cli(*adapt_args(out, "--no-baselines"))  # timed for real: it times nothing anew
    assert r.returncode == 0, r.stderr
    assert (out / "trace.csv").read_bytes() == before


def _unchanged(src: Path, tmp_path: Path, args: list[str], *needles: str) -> None:
    """``args`` refused (exit 2, the needles in its one paragraph), ``src`` left as it was."""
    copy = Path(tempfile.mkdtemp(dir=tmp_path)) / "copy"
    shutil.copytree(src, copy)
    r = run_cli(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for needle in needles:
        assert needle in r.stderr
    diff = filecmp.dircmp(src, copy)
    assert not diff.left_only and not diff.right_only and not diff.diff_files


def test_damaged_trace_and_cache_refused_on_resume(searched, tmp_path):
    out, _ = searched
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    trace = damaged / "trace.csv"
    trace.write_text(trace.read_text().replace(",1,", ",2,", 1))
    _unchanged(damaged, tmp_path, adapt_args(damaged, "--no-baselines"), "trace.csv", "damaged")
    shutil.rmtree(damaged)
    shutil.copytree(out, damaged)
    (damaged / "latency.json").write_text('{"x": {"median_ms": -1}}')
    _unchanged(damaged, tmp_path, adapt_args(damaged, "--no-baselines"), "latency.json")


def test_two_searches_never_share_a_folder(searched, tmp_path):
    out, _ = searched
    with locked_folder(out, "adapt"):
        _unchanged(out, tmp_path, adapt_args(out, "--no-baselines"), "in use by another adapt")
    step = [*adapt_args(out, "--no-baselines"), "--step", "0.1"]  # the last --step counts
    _unchanged(out, tmp_path, step, "holds another search", "step", "only the target")
    top1 = adapt_args(out, "--no-baselines", "--score", "top1")
    _unchanged(out, tmp_path, top1, "holds another search", "score")
    threads = adapt_args(out, "--no-baselines", "--threads", "2")  # its path timed at one
    _unchanged(out, tmp_path, threads, "holds another search", "threads")


def _path_of(folder: Path) -> list[dict[str, str]]:
    with open(folder / "trace.csv") as f:
        return [r for r in csv.DictReader(f) if r["chosen"] == "1"]


def _continued(searched, tmp_path: Path, *more: str):
    """The searched folder, copied, searched again with ``more`` (a target, retrain flags)."""
    out, _ = searched
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    args = [a for a in adapt_args(copy, "--no-baselines") if a not in ("--target-ratio", "0.97")]
    with fake_timing.installed():
        return copy, run_cli(*args, *more)


def test_a_higher_target_is_read_from_the_path_and_retrained(searched, tmp_path):
    out, _ = searched
    step1 = _path_of(out)[1]
    target = f"{float(step1['latency_ms']) + 1e-6:.9f}"
    copy, r = _continued(searched, tmp_path, "--target-ms", target, "--retrain-epochs", "2")
    assert r.returncode == 0, r.stderr
    assert (copy / "trace.csv").read_bytes() == (out / "trace.csv").read_bytes()  # no new step
    result = yaml.safe_load((copy / "tiny_phone-adapted.yaml").read_text())
    assert result["rows"] == json.loads(step1["edits"]) and "after 1 steps" in result["description"]
    assert (copy / "runs" / "final-adapt-s01-2ep-seed0" / "best.safetensors").is_file()
    assert json.loads((copy / "adapt.json").read_text())["target_ms"] == float(target)


def test_the_comparison_retrains_the_baselines_and_the_start(searched, tmp_path):
    """Without --no-baselines the folder's table holds the result, the width and resolution
    baselines that meet the same target, and the start (what the speed-up gave away), each
    trained from scratch with the same flags and epochs, at its measured latency."""
    out, _ = searched
    copy = tmp_path / "compared"
    shutil.copytree(out, copy)
    with fake_timing.installed():
        r = run_cli(*adapt_args(copy))
    assert r.returncode == 0, r.stderr
    with open(copy / "summary.csv") as f:
        rows = {row["network"]: row for row in csv.DictReader(f)}
    names = list(rows)
    assert names[0] == "adapt" and names[-1] == "start", names
    assert re.fullmatch(r"width 0\.\d+", names[1]), names
    assert re.fullmatch(r"resolution \d+ \(trained at \d+\)", names[2]), names
    path = _path_of(copy)
    start_ms = float(path[0]["latency_ms"])
    assert float(rows["start"]["latency_ms"]) == pytest.approx(start_ms, abs=1e-4)
    assert float(rows["adapt"]["latency_ms"]) == pytest.approx(float(path[-1]["latency_ms"]),
                                                               abs=1e-4)  # fmt: skip
    for name in names[:-1]:  # each at the target or under it; the start above it
        assert float(rows[name]["latency_ms"]) <= 0.97 * start_ms + 1e-4, rows[name]
    configs = {p.name: json.loads((p / "config.json").read_text())
               for p in (copy / "runs").glob("final-*-1ep-seed0")}  # fmt: skip
    start = configs.pop("final-start-1ep-seed0")
    assert start["overrides"] == {} and start["init"] is None and start["epochs"] == 1
    assert start["spec"] == str(Path(TINY).resolve())
    width = float(names[1].split()[1])
    assert configs[f"final-width-{width:g}-1ep-seed0"]["overrides"] == {"width": width}
    assert len(configs) == 3  # adapt's, and the two baselines'
    assert "start" in r.stdout and names[1] in r.stdout  # the table, printed


def test_a_lower_target_continues_the_path(searched, tmp_path):
    out, _ = searched
    copy, r = _continued(searched, tmp_path, "--target-ratio", "0.9")
    assert r.returncode == 0, r.stderr
    before = (out / "trace.csv").read_text().splitlines()
    after = (copy / "trace.csv").read_text().splitlines()
    assert after[: len(before)] == before  # the steps taken stay
    assert len(_path_of(copy)) > len(_path_of(out))  # and go on
    assert float(_path_of(copy)[-1]["latency_ms"]) <= 0.9 * float(_path_of(copy)[0]["latency_ms"])
    for step in {int(row["step"]) for row in _path_of(copy)} - {0}:
        assert any((copy / "runs").glob(f"s{step:02d}-parent"))


def test_a_folder_of_an_earlier_version_is_refused_saying_so(searched, tmp_path):
    out, _ = searched
    older = tmp_path / "older"
    shutil.copytree(out, older)
    settings = json.loads((older / "adapt.json").read_text())
    del settings["finetune_lr"]  # the setting an earlier version did not record
    (older / "adapt.json").write_text(json.dumps(settings))
    args = adapt_args(older, "--no-baselines")
    _unchanged(older, tmp_path, args, "earlier version of adapt", "finetune_lr", "another folder")


REFUSED = {
    "--finetune-lr": ["0", "-0.1", "nan", "inf", "1e400", "abc"],  # above 0, finite
    "--finetune-at-most": ["0", "-1", "1.5", "abc", "nan", "1e400"],  # a whole number above 0
    "--threads": ["0", "-1", "1.5", "two", "", "257", "1e400"],  # a whole number from 1 to 256
}


@pytest.mark.parametrize("flag, value", [(f, v) for f, values in REFUSED.items() for v in values])
def test_a_numeric_flag_out_of_its_range_is_refused_naming_it(tmp_path, flag, value):
    out = tmp_path / "adapt"
    r = run_cli("adapt", TINY, "--target-ratio", "0.5", flag, value, "--out", str(out))
    last = r.stderr.strip().splitlines()[-1]  # after argparse's usage
    assert r.returncode == 2 and last.startswith(f"mnv3spec adapt: error: argument {flag}: ")
    assert not out.exists()


def test_at_most_one_a_step_fine_tunes_one_proposal_ranked_by_its_inherited_weights(tmp_path):
    """The real screen (steps.screen): each proposal's held-out figures with the start's weights
    narrowed into it, evaluated in this process; one fine-tuned beside the parent, the others
    in trace.csv with those figures, tuned 0 and no run."""
    out = tmp_path / "tiny"
    with fake_timing.installed():
        r = run_cli(*adapt_args(out, "--no-baselines", "--finetune-at-most", "1"))
    assert r.returncode == 0, r.stderr
    rows = [row for row in csv.DictReader((out / "trace.csv").open()) if row["step"] == "1"]
    tuned = [row for row in rows if row["tuned"] == "1" and row["edit"] != REFERENCE]
    passed = [row for row in rows if row["tuned"] == "0"]
    assert len(tuned) == 1 and tuned[0]["chosen"] == "1" and passed
    assert all(row["run"] == "" and float(row["holdout_loss"]) > 0 for row in passed)
    assert sorted(p.name for p in (out / "runs").glob("s01-*")) == sorted(
        Path(row["run"]).name for row in rows if row["run"]
    )


@pytest.mark.parametrize("value", ["accuracy", "", "LOSS", "top-1"])
def test_a_score_other_than_loss_or_top1_is_refused(tmp_path, value):
    out = tmp_path / "adapt"
    r = run_cli("adapt", TINY, "--target-ratio", "0.5", "--score", value, "--out", str(out))
    last = r.stderr.strip().splitlines()[-1]  # after argparse's usage
    assert r.returncode == 2 and last.startswith("mnv3spec adapt: error: argument --score")
    assert "choose from" in last and "top1" in last and not out.exists()


def test_nothing_to_do_when_the_start_meets_the_target(tmp_path):
    out = tmp_path / "none"
    r = run_cli("adapt", TINY, "--target-ms", "1e6", *FAST, "--out", str(out))
    assert r.returncode == 2 and "nothing to do" in r.stderr
    assert not out.exists()


def test_a_spec_with_no_row_that_can_shrink(tmp_path):
    out = tmp_path / "v1"
    r = run_cli("adapt", "specs/mobilenet_v1.yaml", "--target-ratio", "0.5", *FAST, "--out",
                str(out))  # fmt: skip
    assert r.returncode == 2 and "no row can shrink" in r.stderr
    assert not out.exists()


def test_set_width_is_refused_naming_the_flag(tmp_path):
    out = tmp_path / "w"
    r = run_cli("adapt", TINY, "--target-ratio", "0.5", "--set", "width=0.5", "--out", str(out))
    assert r.returncode == 2 and "--set" in r.stderr and "differ" in r.stderr
    assert not out.exists()


def test_a_damaged_start_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    out = tmp_path / "init"
    r = run_cli(*adapt_args(out, "--init", str(bad)))
    assert r.returncode == 2 and "bad.safetensors" in r.stderr
    assert not out.exists()


def test_a_runtime_not_installed_names_its_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch", None)
    out = tmp_path / "et"
    r = run_cli("adapt", TINY, "--target-ratio", "0.5", "--backend", "executorch", "--out",
                str(out))  # fmt: skip
    assert r.returncode == 2 and "mobile extra" in r.stderr
    assert not out.exists()


def test_cluster_options_are_checked_before_any_work(tmp_path):
    out = tmp_path / "ray"
    r = run_cli(*adapt_args(out, "--gpus-per-training", "0.5"))
    assert r.returncode == 2 and "need --cluster" in r.stderr
    r = run_cli(*adapt_args(out, "--cluster", "127.0.0.1:1"))  # nothing listens on port 1
    assert r.returncode == 2 and "127.0.0.1:1" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_an_unreachable_target_keeps_the_best_and_exits_3(tmp_path):
    out = tmp_path / "far"
    r = run_cli("adapt", TINY, "--target-ratio", "0.5", "--step", "1000", *FAST, "--out", str(out))
    assert r.returncode == 3, r.stderr
    assert "no proposal lowers the latency" in r.stderr
    adapted = str(out / "tiny_phone-adapted.yaml")
    assert run_cli("validate", adapted, "--allow-base", str(Path(TINY).parent)).returncode == 0
