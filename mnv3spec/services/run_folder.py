"""The run folder of ``train``, as one object: :class:`RunFolder` names every file in it, takes
its lock, writes each file atomically and reads them back; :class:`MetricsRow` is one line of
its metrics.csv.

``runs/NAME/`` holds metrics.csv, last/best.safetensors, resume.pt, curves.png, spec.yaml,
config.json and command.txt, plus ``.lock`` while a process trains in it. No other module spells
these names. A file is only ever replaced whole (a temporary file, then a rename), and two files
are commit points, so a run stopped at any moment (Ctrl-C, kill -9, a lost node) leaves a folder
that the same command, or a resume, continues:

- config.json is the first file a start writes (:meth:`RunFolder.write_start`), and what makes
  a folder a run's (:meth:`RunFolder.holds_run`): a folder with it resumes, even without the
  spec.yaml and command.txt that follow it. A folder without it, holding only the lock and
  temporary files of a start stopped before it, is free for the same command
  (:meth:`RunFolder.check_free`); any other file, a user's own spec.yaml included, makes it not
  free, so nothing a user owns is ever overwritten.
- resume.pt is the first file an epoch's end writes (:meth:`RunFolder.save_epoch`), and holds
  what the files after it are made of (:class:`EpochFiles`): the epoch is finished once it is
  there, and a resume writes those files again from it. Without it no epoch finished, and a
  resume starts the run from its beginning, with its settings and seed. metrics.csv comes after
  the weights, so a row there means its epoch's weights are on disk (:meth:`RunFolder.finished`).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError

from ..errors import CheckpointError, UserError
from ..files import (
    LOCK_FILE,
    atomic_path,
    check_output_folder,
    check_path,
    is_temporary,
    locked_folder,
    os_errors,
    read_json,
    remove_temporaries,
    shown,
    writing,
)
from ..model.builder import SpecNet
from ..weights.checkpoint import save_weights
from .device import World


@dataclass(frozen=True)
class MetricsRow:
    """One finished epoch, as metrics.csv holds it (percentages; ``val_top5`` is top-k with
    k = min(5, classes), the column's name since the first release, so always 100 with 5 classes
    or fewer)."""

    epoch: int
    lr: float
    train_loss: float
    train_top1: float
    val_loss: float
    val_top1: float
    val_top5: float
    seconds: float
    images_per_s: float

    def cells(self) -> dict[str, Any]:
        """The row as written: floats to 6 significant digits."""
        values = dataclasses.asdict(self)
        return {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in values.items()}

    @classmethod
    def parse(cls, cells: dict[str, str]) -> MetricsRow:
        """A row read back; ValueError or TypeError when a cell is not a number."""
        return cls(**{k: int(v) if k == "epoch" else float(v) for k, v in cells.items()})

    @staticmethod
    def write(path: Path, rows: list[MetricsRow]) -> None:
        with writing(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRICS)
            writer.writeheader()
            writer.writerows(row.cells() for row in rows)

    @classmethod
    def read(cls, path: Path) -> list[MetricsRow]:
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
            rows: list[MetricsRow] = []
            for cells in reader:
                try:
                    row = cls.parse(cells)
                except (TypeError, ValueError):
                    row = None
                if row is None or row.epoch != len(rows) + 1:
                    raise UserError(
                        f"not the row of epoch {len(rows) + 1}: "
                        f"{','.join(map(str, cells.values()))!r} (damaged or edited?); restore the "
                        "file, or start a new run",
                        file=str(path),
                        line=reader.line_num,
                    )
                rows.append(row)
        return rows


METRICS = tuple(f.name for f in dataclasses.fields(MetricsRow))  # metrics.csv's header


@dataclass(frozen=True)
class EpochFiles:
    """What resume.pt records of the files an epoch's end writes after it: the rows of
    metrics.csv, and whether best.safetensors is that epoch's (the weights are resume.pt's own)."""

    rows: list[MetricsRow]
    improved: bool

    KEY: ClassVar[str] = "files"  # its key in resume.pt

    def pack(self) -> dict[str, Any]:
        return {"rows": [dataclasses.asdict(r) for r in self.rows], "improved": self.improved}

    @classmethod
    def unpack(cls, saved: dict, file: str) -> EpochFiles | None:
        """The record in ``saved`` (a loaded resume.pt); None in one written before resume.pt
        held it, when it came after the other files."""
        if cls.KEY not in saved:
            return None
        try:
            rows = [MetricsRow.parse(r) for r in saved[cls.KEY]["rows"]]
            improved = saved[cls.KEY]["improved"]
        except (AttributeError, KeyError, TypeError, ValueError):
            rows, improved = [], None
        if not isinstance(improved, bool) or [r.epoch for r in rows] != [*range(1, len(rows) + 1)]:
            raise CheckpointError(
                "a damaged resume file (its metrics rows); restore it, or start a new run",
                file=file,
            )
        return cls(rows, improved)


HOLDER = "training"  # who holds a run folder's lock, as a second run is told


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


def check_new_run(out: str | Path, name: str | None) -> None:
    """Before anything is built: ``name``, when given, a plain folder name that holds no run yet in
    ``out``, a folder files can be written in (or made)."""
    if name:
        check_run_name(name)
    check_output_folder(out, field="out")
    if name:
        RunFolder(Path(out) / name).check_free()


class RunFolder:
    """One run's folder: its files by name, its lock, and every read and write of them."""

    CONFIG = "config.json"
    SPEC = "spec.yaml"
    METRICS = "metrics.csv"
    LAST = "last.safetensors"
    BEST = "best.safetensors"
    RESUME = "resume.pt"
    COMMAND = "command.txt"
    CURVES = "curves.png"
    WEIGHTS = (LAST, BEST)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    @classmethod
    def create(cls, out: Path, name: str | None, base: str) -> RunFolder:
        """Create the folder with an exclusive ``mkdir``: ``out/name``, or without a name the
        first of ``out/base``, ``out/base-2``, ... that this process creates itself (two runs
        started at once never get the same one). A named folder that exists may be taken only
        while free (:meth:`check_free`); :meth:`locked` then settles a race for it."""
        with os_errors(out, field="out"):
            out.mkdir(parents=True, exist_ok=True)
        if name:
            folder = cls(out / name)
            with os_errors(folder.path):
                try:
                    folder.path.mkdir()
                except FileExistsError:
                    folder.check_free()
            return folder
        check_path(out / f"{base}-99", field="name")  # a default name from a long spec file name
        for path in itertools.chain(
            [out / base], (out / f"{base}-{i}" for i in itertools.count(2))
        ):
            try:
                with os_errors(path, kinds=(PermissionError,)):
                    path.mkdir()
                return cls(path)
            except FileExistsError:
                continue
        raise AssertionError("unreachable")

    def check_free(self) -> None:
        """Refuse a folder that already holds a run, or any file but ours: it is never
        overwritten. A folder holding only the lock and temporary files of a run stopped before
        its config.json landed (the first file a start writes) is free: the same command takes it
        again. Taken by name, a spec.yaml or command.txt could be a user's own."""
        names = {p.name for p in self.path.iterdir()} if self.path.is_dir() else set()
        if any(n != LOCK_FILE and not is_temporary(n) for n in names):
            raise UserError(
                f"{self.path} already holds a run; resume it, or choose another name for the new "
                "one"
            )

    def holds_run(self) -> bool:
        """A run started here: its settings, the first file its start writes, exist."""
        return (self / self.CONFIG).is_file()

    def locked(self):
        """Hold ``.lock`` for the block (:func:`~mnv3spec.files.locked_folder`): a second run or
        resume of the folder fails at once naming the holder."""
        return locked_folder(self.path, HOLDER)

    def write_start(self, net: SpecNet, config: dict[str, Any], command: str) -> None:
        """At every start or resume: first the settings (a training's config as JSON values),
        which make the folder a run's, then the spec as built, then one more command line."""
        remove_temporaries(self.path)  # a killed process's
        with writing(self / self.CONFIG) as tmp:
            tmp.write_text(json.dumps(config, indent=2))
        with writing(self / self.SPEC) as tmp:
            tmp.write_text(net.spec.to_yaml())
        command_file = self / self.COMMAND
        with os_errors(command_file), open(command_file, "a") as f:  # a torn append loses a line
            f.write(command + "\n")

    def read_config(self) -> dict[str, Any]:
        """config.json's settings as JSON values (training checks every field:
        :func:`~mnv3spec.train.config.config_from_json`)."""
        file = self / self.CONFIG
        if not self.path.is_dir():
            problem = "is a file" if os.path.lexists(self.path) else "no such folder"
            give = f"give a run folder (the one holding {self.CONFIG}, e.g. runs/s1)"
            raise UserError(f"{problem}; {give}", file=str(self.path), field="resume")
        if not os.path.lexists(file):  # a run writes it first: this folder never held a run
            why = f"no {self.CONFIG}, which a run writes first: no run started here"
            raise UserError(f"{shown(self.path)} is not a run folder ({why}); start a new run")
        fix = "restore it, or start a new run"  # a folder, a FIFO, deep or huge: refused
        values = read_json(file, what=f"the run's {self.CONFIG}", fix=fix, field="resume")
        if not isinstance(values, dict):
            raise UserError(f"damaged {self.CONFIG} (not a mapping)", file=str(file))
        return values

    def save_epoch(self, net: SpecNet, files: EpochFiles, state: dict, **meta: Any) -> None:
        """After an epoch: resume.pt, the state and ``files`` in one file, first: the epoch's
        commit point (see the module's docstring); then the files (:meth:`write_epoch`)."""
        resume = self / self.RESUME  # torch.save reports a full disk as a RuntimeError
        with os_errors(resume, kinds=(OSError, RuntimeError)), atomic_path(resume) as tmp:
            torch.save({**state, EpochFiles.KEY: files.pack()}, tmp)
        self.write_epoch(net, files, **meta)

    def write_epoch(self, net: SpecNet, files: EpochFiles, **meta: Any) -> None:
        """The files resume.pt records, written again by a resume: the weights of ``net`` (``meta``:
        :func:`save_weights`' keywords), then metrics.csv, then the plot."""
        for name in [self.LAST] + ([self.BEST] if files.improved else []):
            with os_errors(self / name, kinds=(OSError, SafetensorError)):
                save_weights(self / name, net, **meta)
        self.write_metrics(files.rows)
        plot_curves(files.rows, self / self.CURVES)

    def read_state(self) -> Any:
        """The resume file (None when there is none), loaded with ``weights_only=True`` (nothing
        in it is executed); training checks that it holds every key a resume needs."""
        path = self / self.RESUME
        if not path.exists():
            return None
        if path.is_file() and path.stat().st_size == 0:
            raise CheckpointError(
                "is empty (0 bytes), so the run cannot continue from it; restore it, or start a "
                "new run",
                file=str(path),
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged or foreign file fails in many ways; all mean the same
            raise CheckpointError(f"cannot read the resume file ({e})", file=str(path)) from None
        return state

    def write_metrics(self, rows: list[MetricsRow]) -> None:
        MetricsRow.write(self / self.METRICS, rows)

    def read_metrics(self) -> list[MetricsRow]:
        return MetricsRow.read(self / self.METRICS)

    def finished(self) -> bool:
        """Every epoch the run was started with is in metrics.csv (after its epoch's weights)."""
        try:
            return len(self.read_metrics()) >= self.read_config()["epochs"]
        except (OSError, UserError, KeyError, TypeError):
            return False  # a resume says what is wrong with it


@contextmanager
def claimed(out: Path, name: str | None, base: str, world: World) -> Iterator[RunFolder]:
    """A new run's folder (:meth:`RunFolder.create`), locked for the block and checked free once
    locked (a run that took the empty folder first and has ended leaves it taken). Rank 0 of a
    launch claims it and shares its path with the other ranks, and its refusal too, so that every
    rank stops alike."""
    with ExitStack() as held:
        path, error = None, None
        if world.main:
            try:
                folder = RunFolder.create(out, name, base)
                held.enter_context(locked_folder(folder.path, HOLDER))
                folder.check_free()
                path = str(folder.path)
            except UserError as e:
                error = e
        path, message = world.share((path, error and str(error)))
        if error is not None:
            raise error
        if message:
            raise UserError(message)
        yield RunFolder(path)


def plot_curves(rows: list[MetricsRow], path: Path) -> None:
    """Loss and accuracy per epoch, train and validation, as a PNG (no display needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    loss, acc = fig.subplots(1, 2)
    epochs = [r.epoch for r in rows]
    for ax, curves, ylabel in (
        (loss, {"train": "train_loss", "val": "val_loss"}, "loss"),
        (
            acc,
            {"train top-1": "train_top1", "val top-1": "val_top1", "val top-5": "val_top5"},
            "accuracy (%)",
        ),
    ):
        for label, key in curves.items():
            ax.plot(epochs, [getattr(r, key) for r in rows], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    loss.set_yscale("log")  # an early spike of the validation loss would flatten the rest
    fig.tight_layout()
    with writing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
