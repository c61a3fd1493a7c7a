"""``cli.py train`` and ``cli.py eval`` run the way a user runs them: a CIFAR-format archive, a run
killed mid-epoch and resumed, two gloo processes under torchrun, and the errors of bad input."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from cli import main
from mnv3spec.data.cifar import CIFAR100_MEAN, CIFAR100_STD
from mnv3spec.services.device import state_digest
from mnv3spec.services.run_folder import METRICS
from mnv3spec.spec.load import load_spec
from mnv3spec.weights.checkpoint import read_metadata

from .conftest import ROOT, TINY, kill_during_epoch_2, run_cli, tiny_checkpoint
from .test_cifar import CLASSES, make_cifar100
from .test_folders import write_image

RUN_FILES = {
    "metrics.csv",
    "best.safetensors",
    "last.safetensors",
    "resume.pt",
    "spec.yaml",
    "curves.png",
    "command.txt",
    "config.json",
}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One OpenMP thread per process: the tests share two cores with other test runs."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def metrics(run) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_train_on_a_cifar_archive_writes_the_run_folder_and_eval_agrees(tmp_path):
    make_cifar100(tmp_path / "data", n_train=96, n_test=32)
    args = ["specs/small.yaml", "--width", "0.25", "--epochs", "2", "--batch", "32"]
    args += ["--data-dir", tmp_path / "data", "--out", tmp_path / "runs", "--name", "r"]
    result = run_cli("train", *args, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^epoch 1/2 .*loss [\d.]+ acc [\d.]+%", result.stdout, re.M)
    assert re.search(r"^epoch 2/2 ", result.stdout, re.M)

    run = tmp_path / "runs" / "r"
    assert {p.name for p in run.iterdir()} == RUN_FILES
    rows = metrics(run)
    assert list(rows[0]) == list(METRICS) and [r["epoch"] for r in rows] == ["1", "2"]
    meta = read_metadata(run / "last.safetensors")
    assert meta["classes"] == CLASSES and meta["resolution"] == 32  # num_classes follows the data
    assert meta["mean"] == CIFAR100_MEAN and meta["std"] == CIFAR100_STD
    assert meta["extra"]["epoch"] == 2
    spec = load_spec(run / "spec.yaml")
    assert (spec.params["num_classes"], spec.params["width"]) == (3, 0.25)
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cli.py train specs/small.yaml --width 0.25" in (run / "command.txt").read_text()

    best = max(float(r["val_top1"]) for r in rows)
    assert read_metadata(run / "best.safetensors")["extra"]["val_top1"] == pytest.approx(best)
    evaluated = run_cli("eval", run / "best.safetensors", "--data-dir", tmp_path / "data")
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"top-1 {best:.2f}%" in evaluated.stdout and "(32 validation images)" in evaluated.stdout
    # with 3 classes, "top-5" is top-3: always right, and named for what it is
    assert "top-3 100.00%" in evaluated.stdout and "top-5" not in evaluated.stdout
    assert re.search(r"^epoch 2/2 .* top3 100\.00% ", result.stdout, re.M)


def test_killed_during_epoch_2_and_resumed_equals_an_uninterrupted_run(tmp_path):
    straight = run_cli("train", *TINY, "--epochs", "3", "--out", tmp_path, "--name", "straight")
    assert straight.returncode == 0, straight.stderr

    killed = kill_during_epoch_2(tmp_path, *TINY, "--epochs", "3")
    assert len(metrics(killed)) == 1, "the run was not killed during epoch 2"
    assert torch.load(killed / "resume.pt", weights_only=True)["epoch"] == 1

    resumed = run_cli("train", "--resume", killed)
    assert resumed.returncode == 0, resumed.stderr
    assert "after epoch 1 of 3" in resumed.stdout and "epoch 1/3" not in resumed.stdout
    a, b = (
        load_file(tmp_path / "straight" / "last.safetensors"),
        load_file(killed / "last.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    same = ["epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5"]
    assert [[r[k] for k in same] for r in metrics(tmp_path / "straight")] == [
        [r[k] for k in same] for r in metrics(killed)
    ]
    assert (killed / "command.txt").read_text().splitlines()[1].endswith(f"--resume {killed}")


def test_torchrun_two_gloo_processes_end_with_identical_weights(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    cmd += [str(ROOT / "cli.py"), "train", *TINY, "--epochs", "2", "--out", str(tmp_path)]
    result = subprocess.run([*cmd, "--name", "ddp"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "ddp"
    assert {p.name for p in run.iterdir()} == RUN_FILES
    assert len(metrics(run)) == 2
    assert result.stdout.count("epoch 1/2") == 1  # rank 0 alone prints
    digests = re.search(r"weights sha256 per rank: (\w+) (\w+)$", result.stdout, re.M).groups()
    assert digests == (state_digest(load_file(run / "last.safetensors")),) * 2
    assert "under torchrun, 2 processes" in (run / "command.txt").read_text()


def test_resume_from_another_folder_rebuilds_a_run_killed_before_epoch_1(tmp_path):
    """Paths are stored absolute, a dataset name beats a folder of that name, and a run with no
    resume file yet is rebuilt from its own spec.yaml (the spec it started from may be gone)."""
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    (start / "synthetic").mkdir(parents=True)  # an empty folder named like the dataset
    elsewhere.mkdir()
    (start / "mine.yaml").write_text((ROOT / "specs" / "small.yaml").read_text())
    args = ["mine.yaml", *TINY[1:], "--epochs", "1", "--out", "runs", "--name", "r"]
    first = run_cli("train", *args, cwd=start)
    assert first.returncode == 0, first.stderr
    run = start / "runs" / "r"
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == "synthetic"
    assert (config["spec"], config["out"]) == (str(start / "mine.yaml"), str(start / "runs"))
    trained = (run / "spec.yaml").read_text()
    for name in ("resume.pt", "metrics.csv", "last.safetensors", "best.safetensors"):
        (run / name).unlink()  # as if killed during epoch 1
    (start / "mine.yaml").unlink()

    resumed = run_cli("train", "--resume", "../start/runs/r", cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert len(metrics(run)) == 1 and (run / "spec.yaml").read_text() == trained
    assert load_spec(read_metadata(run / "last.safetensors")["spec"]).to_yaml() == trained


def test_torchrun_bad_input_stops_every_rank_before_they_wait_for_each_other(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "metrics.csv").write_text("")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    cmd += [str(ROOT / "cli.py"), "train", *TINY, "--out", str(tmp_path), "--name", "taken"]
    # A rank that waited for its peer would hang until the 120 s timeout. Once one rank
    # exits with 2, torchrun stops the other, which may or may not have printed yet.
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.count("error: " + str(tmp_path / "taken") + " already holds a run") >= 1
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["metrics.csv"]
    assert (tmp_path / "taken" / "metrics.csv").read_text() == ""


def test_nan_loss_exits_3_naming_epoch_and_step(tmp_path):
    result = run_cli("train", *TINY, "--epochs", "2", "--lr", "1e30", "--out", tmp_path)
    assert result.returncode == 3
    assert re.match(
        r"error: the training loss became (nan|inf|NaN/inf) at epoch 1, step \d+ of 16",
        result.stderr,
    )
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*/last.safetensors"))


def image_folder(root, *, val_classes=("cat", "dog"), images=True):
    for split, classes in (("train", ("cat", "dog")), ("val", val_classes)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            if images:
                write_image(root / split / c / "a.png", (200, 10, 10))
    return root


@pytest.mark.parametrize(
    "args, message",
    [
        (["--width", "0.5", "--set", "width=0.25"], "--width 0.5 and --set width=0.25 disagree"),
        (["--set", "num_classes=2"], "num_classes is 2 but the data has 3 classes"),
        (["--recipe", "fast"], "unknown recipe 'fast'; known: seed"),
        (["--data", "{tmp}/nowhere"], "unknown dataset"),
        (["--data", "{folder_missing_val}"], "classes of train/ missing from val/: dog"),
        (["--data", "{folder_empty}"], "classes with no images in train/: cat, dog"),
        (["--init", "{tmp}/none.pth"], "none.pth: no such file"),
    ],
)
def test_bad_training_input_is_one_message_and_exit_2(tmp_path, capsys, args, message):
    make_cifar100(tmp_path / "data", n_train=6, n_test=3)
    image_folder(tmp_path / "missing_val", val_classes=("cat",))
    image_folder(tmp_path / "empty", images=False)
    where = {"tmp": tmp_path, "folder_missing_val": tmp_path / "missing_val"}
    where["folder_empty"] = tmp_path / "empty"
    args = [a.format(**where) for a in args]
    code = main(
        [
            "train",
            "specs/small.yaml",
            "--data-dir",
            str(tmp_path / "data"),
            *args,
            "--out",
            str(tmp_path / "runs"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err
    assert not list((tmp_path / "runs").glob("*/*.safetensors"))


def test_bad_spec_names_file_and_line(capsys):
    assert main(["train", "tests/bad_specs/unknown_key.yaml"]) == 2
    assert re.match(r"error: tests/bad_specs/unknown_key.yaml, line \d+", capsys.readouterr().err)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["specs/small.yaml", "--out", "{tmp}", "--name", "taken"], "already holds a run"),
        (["specs/small.yaml", "--resume", "{tmp}/taken"], "--resume takes no SPEC"),
        (
            ["--resume", "{tmp}/taken", "--lr", "0.2"],
            "drop --lr (only --device, --compile and --no-graph",
        ),
        (["--resume", "{tmp}/nothing"], "nothing: --resume: no such folder; give a run folder"),
        (["--resume", "{tmp}/empty"], "empty is not a run folder (no config.json, which a run"),
        ([], "give the SPEC to train"),
    ],
)
def test_run_folder_and_resume_rules(tmp_path, capsys, argv, message):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "metrics.csv").write_text("")
    (tmp_path / "empty").mkdir()
    assert main(["train", *(a.format(tmp=tmp_path) for a in argv)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("name", ["spec.yaml", "command.txt"])
def test_a_folder_holding_only_a_file_of_the_users_is_never_taken(tmp_path, capsys, name):
    """A run folder's file names are common ones: a folder given as --name that holds only a
    spec.yaml or command.txt of the user's holds no run of ours, but is refused all the same."""
    mine = tmp_path / "mine" / name
    mine.parent.mkdir()
    mine.write_bytes(b"the user's own\n\x00")
    assert main(["train", *TINY, "--out", str(tmp_path), "--name", "mine"]) == 2
    assert f"{mine.parent} already holds a run" in capsys.readouterr().err
    assert [p.name for p in mine.parent.iterdir()] == [name]
    assert mine.read_bytes() == b"the user's own\n\x00"


def test_bad_flag_value_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "specs/small.yaml", "--epochs", "0"])
    assert e.value.code == 2 and "--epochs: must be >= 1: 0" in capsys.readouterr().err


def test_eval_of_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not weights")
    assert main(["eval", str(junk)]) == 2
    assert "junk.safetensors: not a safetensors weights file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["{grey}", *TINY[1:]], "in_channels is 1 but synthetic has 3-channel images; allowed: 3"),
        ([*TINY, "--out", "{tmp}/afile"], "afile: --out: is a file; give a folder"),
        ([*TINY, "--out", "{tmp}/afile/runs"], "--out: is inside {tmp}/afile, a file"),
        ([*TINY, "--name", "../../etc/x"], "--name ../../etc/x: must be a plain folder name"),
        ([*TINY, "--name", ".."], "--name ..: must be a plain folder name"),
        ([*TINY, "--set", "resolution=40000"], "found 40000; allowed: an integer >= 1, at most"),
        ([*TINY, "--set", "resolution=8192"], "synthetic images at 8192×8192 take"),
        ([*TINY, "--init", "/dev/null"], "/dev/null: not a file (a folder or a device)"),
        (["--resume", "{tmp}/afile"], "afile: --resume: is a file; give a run folder"),
    ],
)
def test_train_refuses_before_starting(tmp_path, args, message):
    """Each fails in the pre-launch checks, as a user sees it: one message, exit 2, no run."""
    (tmp_path / "afile").write_text("")
    grey = (
        (ROOT / "specs" / "small.yaml")
        .read_text()
        .replace("params:\n", "params:\n  in_channels: 1\n")
    )
    (tmp_path / "grey.yaml").write_text(grey)
    where = {"tmp": tmp_path, "grey": tmp_path / "grey.yaml"}
    out = [] if "--out" in args or "--resume" in args else ["--out", tmp_path / "runs"]
    result = run_cli("train", *(str(a).format(**where) for a in args), *out)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and message.format(**where) in result.stderr
    # --out is tmp_path/runs, so ../../etc/x would have landed in tmp_path.parent/etc
    assert not list(tmp_path.rglob("*.safetensors")) and not (tmp_path.parent / "etc").exists()


def test_init_from_a_narrower_checkpoint_names_the_file_and_row_not_torchvision(tmp_path):
    tiny_checkpoint(tmp_path / "ours.safetensors", ["a", "b"])  # width 0.25
    args = [*TINY, "--width", "0.5", "--init", tmp_path / "ours.safetensors", "--out", tmp_path]
    args += ["--set", "num_classes=2"]  # the parent's classes: only the widths differ
    result = run_cli("train", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {tmp_path / 'ours.safetensors'}: the child is not a")
    # at width 0.25 bneck2 keeps its 8 channels and adds its input; at 0.5 it widens to 16
    assert (
        "row bneck2 adds its input to its output in the parent but not in the child"
        in result.stderr
    )
    assert "torchvision" not in result.stderr


def test_eval_of_a_run_folder_asks_for_its_file(tmp_path):
    result = run_cli("eval", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    example = tmp_path / "best.safetensors"
    assert (
        result.stderr
        == f"error: {tmp_path}: is a folder; give a .safetensors file (e.g. {example})\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nesterov", "--momentum", "0"], "--nesterov: Nesterov momentum needs a momentum above"),
        (["--label-smoothing", "1"], "--label-smoothing: must be in [0, 1), got 1.0"),
        (["--recipe", "fast"], "--recipe fast: unknown recipe 'fast'; known: seed"),
        (["--name", "a/b"], "--name a/b: must be a plain folder name"),
        (["--set", "num_classes=2", "--data", "cifar100"], "--set: num_classes is 2 but the data"),
    ],
)
def test_library_errors_name_the_flag_the_user_typed(tmp_path, capsys, args, message):
    """The library names parameters (field "label_smoothing"); the CLI names flags."""
    make_cifar100(tmp_path / "data", n_train=6, n_test=3)  # 3 classes
    argv = ["train", *TINY, *args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not list(tmp_path.glob("*/config.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_device_names_the_flag(capsys):
    assert main(["train", *TINY, "--device", "cuda"]) == 2
    assert capsys.readouterr().err == (
        "error: --device: cuda is not available on this machine; use auto\n"
    )


def test_a_default_folder_left_by_a_start_stopped_before_its_settings_is_named_as_such(
    tmp_path, capsys
):
    """A start killed before config.json leaves NAME with its lock: the next takes NAME-2 (a
    start under way looks the same) and says NAME holds no run, rather than one to resume."""
    taken = tmp_path / "small-w0.25-synthetic"
    taken.mkdir()
    (taken / ".lock").write_text("")
    assert main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path)]) == 0
    start = next(line for line in capsys.readouterr().out.splitlines() if "| " in line)
    assert start.endswith(f"| {taken}-2 (new: {taken} holds no run's settings; delete it if no "
                          "run is starting there)")  # fmt: skip
    assert [p.name for p in taken.iterdir()] == [".lock"]  # left as it was


def test_a_rerun_says_on_its_start_line_that_the_default_folder_holds_a_run(tiny_run, tmp_path):
    """Re-running a command makes NAME-2 beside NAME (never overwrites it) and says so."""
    assert "(new: " not in tiny_run.stdout
    taken = tmp_path / "small-w0.25-synthetic"
    shutil.copytree(tiny_run.folder, taken)  # as the first run of the command left it
    again = run_cli("train", *TINY, "--epochs", "1", "--out", tmp_path)
    assert again.returncode == 0, again.stderr
    start = next(line for line in again.stdout.splitlines() if line.startswith("mobilenet"))
    assert start.endswith(f"| {taken}-2 (new: {taken} holds a run; resume it to continue that one)")
    assert sorted(p.name for p in tmp_path.iterdir()) == [taken.name, f"{taken.name}-2"]
