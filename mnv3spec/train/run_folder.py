"""The run folder of ``train``: created exclusively, locked for the run's life, every file in it
written atomically, and read back by ``resume``.

``runs/NAME/`` holds metrics.csv, last/best.safetensors, resume.pt, curves.png, spec.yaml,
config.json and command.txt, plus ``.lock`` while a process trains in it. A file is only ever
replaced whole (a temporary file, then a rename), so a run killed at any moment resumes from its
last finished epoch.
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from ..errors import CheckpointError, UserError
from ..files import LOCK_FILE, atomic_path, check_path, locked_folder, os_errors, writing
from ..model.builder import SpecNet
from ..weights.checkpoint import save_weights

RESUME_FILE = "resume.pt"
CONFIG_FILE = "config.json"
SPEC_FILE = "spec.yaml"
METRICS_FILE = "metrics.csv"
# Percentages; val_top5 is top-k with k = min(5, classes), so always 100 with 5 classes or fewer.
METRICS = ("epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5")
METRICS += ("seconds", "images_per_s")


def check_run_name(name: str) -> str:
    """``name`` if it names a folder directly inside the output folder, not one elsewhere."""
    if "/" in name or "\\" in name or name in ("", ".", "..") or "\0" in name:
        raise UserError(
            "must be a plain folder name (no '/' or '\\', not '.' or '..'); "
            "choose the parent folder as the output folder instead",
            field="name",
        )
    check_path(name, field="name")
    return name


def check_free(run_dir: Path) -> None:
    """Refuse a folder that already holds a run: it is never overwritten. A folder holding only
    the lock of a run killed before it wrote anything is free."""
    if run_dir.is_dir() and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        raise UserError(
            f"{run_dir} already holds a run; resume it, or choose another name for the new one"
        )


def create_run_dir(out: Path, name: str | None, base: str) -> Path:
    """Create the run folder with an exclusive ``mkdir``: ``out/name``, or without a name the
    first of ``out/base``, ``out/base-2``, ... that this process creates itself (two runs started
    at once never get the same one). A named folder that exists may be taken only while empty;
    :func:`locked` then settles a race for it."""
    with os_errors(out, field="out"):
        out.mkdir(parents=True, exist_ok=True)
    if name:
        path = out / name
        with os_errors(path):
            try:
                path.mkdir()
            except FileExistsError:
                check_free(path)
        return path
    check_path(out / f"{base}-99", field="name")  # a default name from a long spec file name
    for path in itertools.chain([out / base], (out / f"{base}-{i}" for i in itertools.count(2))):
        try:
            with os_errors(path, kinds=(PermissionError,)):
                path.mkdir()
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def locked(run_dir: Path):
    """Hold ``run_dir/.lock`` for the block (:func:`~mnv3spec.files.locked_folder`): a second
    run or resume of the folder fails at once naming the holder."""
    return locked_folder(run_dir, "training")


def write_start(run_dir: Path, spec: SpecNet, config: dict[str, Any], command: str) -> None:
    """At every start or resume: the spec as built, the settings, and one more command line."""
    _write_text(run_dir / SPEC_FILE, spec.spec.to_yaml())
    _write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2))
    command_file = run_dir / "command.txt"
    with os_errors(command_file), open(command_file, "a") as f:  # a torn append loses one line
        f.write(command + "\n")


def read_config(run_dir: Path) -> dict[str, Any]:
    """config.json's mapping (its fields are checked by :func:`~.config.config_from_json`)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(
            "is a file; give a run folder (the one holding config.json, e.g. runs/s1)",
            file=str(run_dir),
            field="resume",
        )
    try:
        config = json.loads((run_dir / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a run folder (no {CONFIG_FILE})") from None
    except ValueError as e:
        raise UserError(f"damaged {CONFIG_FILE} ({e})", file=str(run_dir / CONFIG_FILE)) from None
    if not isinstance(config, dict):
        raise UserError(f"damaged {CONFIG_FILE} (not a mapping)", file=str(run_dir / CONFIG_FILE))
    return config


def save_epoch(
    run_dir: Path,
    net: SpecNet,
    rows: list[dict],
    state: dict[str, Any],
    *,
    improved: bool,
    **meta: Any,
) -> None:
    """After an epoch: metrics and weights (``meta``: :func:`save_weights`' keywords), then the
    resume file, then the plot.

    The resume file holds the weights too and comes after the other files, so a run killed
    between them resumes from the previous epoch and rewrites them.
    """
    write_metrics(run_dir / METRICS_FILE, rows)
    for name in ["last.safetensors"] + (["best.safetensors"] if improved else []):
        with os_errors(run_dir / name, kinds=(OSError, SafetensorError)):
            save_weights(run_dir / name, net, **meta)
    resume_file = run_dir / RESUME_FILE  # torch.save reports a full disk as a RuntimeError
    with os_errors(resume_file, kinds=(OSError, RuntimeError)), atomic_path(resume_file) as tmp:
        torch.save(state, tmp)
    plot_curves(rows, run_dir / "curves.png")


def load_state(path: Path) -> dict:
    """The resume file, loaded with ``weights_only=True`` (nothing in it is executed)."""
    if path.is_file() and path.stat().st_size == 0:
        raise CheckpointError(
            "is empty (0 bytes), so the run cannot continue from it; restore it, or start a new "
            "run",
            file=str(path),
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged or foreign file fails in many ways; all mean the same
        raise CheckpointError(f"cannot read the resume file ({e})", file=str(path)) from None
    if not isinstance(state, dict) or not state.keys() >= STATE_KEYS:
        raise CheckpointError("is not a resume file written by train", file=str(path))
    return state


STATE_KEYS = {"epoch", "best", "model", "optimizer", "scheduler", "scaler", "rng"}


def _write_text(path: Path, text: str) -> None:
    with writing(path) as tmp:
        tmp.write_text(text)


def write_metrics(path: Path, rows: list[dict]) -> None:
    with writing(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRICS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


def read_metrics(path: Path) -> list[dict]:
    """The rows of metrics.csv (none when it is absent), epochs 1, 2, ... in order; anything
    else is refused naming the file and line."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return []
        if tuple(reader.fieldnames) != METRICS:
            raise UserError(f"the header is not {','.join(METRICS)}", file=str(path), line=1)
        rows = []
        for row in reader:
            try:
                parsed = {k: int(v) if k == "epoch" else float(v) for k, v in row.items()}
            except (TypeError, ValueError):
                parsed = None
            if parsed is None or parsed["epoch"] != len(rows) + 1:
                raise UserError(
                    f"not the row of epoch {len(rows) + 1}: {','.join(map(str, row.values()))!r}"
                    " (damaged or edited?); restore the file, or start a new run",
                    file=str(path),
                    line=reader.line_num,
                )
            rows.append(parsed)
    return rows


def plot_curves(rows: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, train and validation, as a PNG (no display needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    loss, acc = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in rows]
    for ax, curves, ylabel in (
        (loss, {"train": "train_loss", "val": "val_loss"}, "loss"),
        (
            acc,
            {"train top-1": "train_top1", "val top-1": "val_top1", "val top-5": "val_top5"},
            "accuracy (%)",
        ),
    ):
        for label, key in curves.items():
            ax.plot(epochs, [r[key] for r in rows], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    loss.set_yscale("log")  # an early spike of the validation loss would flatten the rest
    fig.tight_layout()
    with writing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
