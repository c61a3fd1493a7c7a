"""What ``resume`` trusts: a run folder whose files agree with each other.

config.json (every field present and typed), spec.yaml (loaded once), metrics.csv (epochs in
order) and resume.pt (the state after its last finished epoch, its weights shaped as spec.yaml
builds them) must tell one story; anything missing or inconsistent stops the resume before a
file is touched, saying what and what to do. A folder that records finished epochs is never
silently started over.

config.json is the commit point of a start and resume.pt that of an epoch
(:mod:`~mnv3spec.services.run_folder`): a run stopped between any two writes resumes after the
last epoch whose resume.pt is on disk, or, when there is none, starts over from its config.json
(settings, seed, --init) with its spec.yaml, or without one (stopped before it) with its spec
file and overrides, as it began; it ends with the weights an uninterrupted run of its seed ends
with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import CheckpointError, UserError
from ..services.run_folder import EpochFiles, MetricsRow, RunFolder
from ..spec.load import load_spec
from ..spec.resolve import Spec
from .config import TrainConfig, config_from_json
from .state import check_saved


@dataclass(frozen=True)
class ResumePoint:
    """A run folder read back: its settings, its spec, the state after its last finished epoch
    (None when none finished), the metrics of the epochs done, and the files of the last one as
    resume.pt records them (None in one of an earlier version, written after those files)."""

    folder: RunFolder
    cfg: TrainConfig
    spec: Spec
    saved: dict | None  # resume.pt, as TrainState packed it
    rows: list[MetricsRow]
    files: EpochFiles | None = None

    @property
    def epochs_done(self) -> int:
        return self.saved["epoch"] if self.saved is not None else 0


def read_resume_point(folder: RunFolder) -> ResumePoint:
    """Read and cross-check a run folder (see the module's docstring)."""
    cfg = config_from_json(folder.read_config(), str(folder / folder.CONFIG))
    rows = folder.read_metrics()
    saved = folder.read_state()
    if saved is None:
        _check_nothing_finished(folder, rows)
        return ResumePoint(folder, cfg, _start_spec(folder, cfg), None, rows)
    if not (folder / folder.SPEC).is_file():
        raise UserError(
            f"{folder.SPEC} is missing, so what was trained is unknown; restore it, or start a "
            "new run",
            file=str(folder),
        )
    spec = load_spec(folder / folder.SPEC)
    check_saved(saved, str(folder / folder.RESUME))
    files = EpochFiles.unpack(saved, str(folder / folder.RESUME))
    rows = _finished_rows(folder, cfg, saved, rows, files)
    return ResumePoint(folder, cfg, spec, saved, rows, files)


def _start_spec(folder: RunFolder, cfg: TrainConfig) -> Spec:
    """The spec a run that finished no epoch starts over with: its spec.yaml, or, when its start
    stopped before writing it (config.json comes first), its spec file with its overrides, as
    the start loaded them."""
    if (folder / folder.SPEC).is_file():
        return load_spec(folder / folder.SPEC)
    return load_spec(cfg.spec, **cfg.overrides)


def _check_nothing_finished(folder: RunFolder, rows: list[MetricsRow]) -> None:
    """Without resume.pt no epoch finished (it is the first file an epoch's end writes), and the
    run starts again from epoch 0 with its settings and seed. A row in metrics.csv or a weights
    file then means resume.pt was lost, not that the run was stopped: refused, since starting
    over would overwrite them."""
    kept = [f"{folder.METRICS} records {len(rows)} finished epoch(s)"] if rows else []
    kept += [f"{name} exists" for name in folder.WEIGHTS if (folder / name).exists()]
    if kept:
        raise UserError(
            f"{folder.RESUME} is missing, but {' and '.join(kept)}: resuming would start over "
            f"and overwrite them. Restore {folder.RESUME}, or start a new run (its init can be "
            f"{folder / folder.LAST})",
            file=str(folder),
        )


def _finished_rows(
    folder: RunFolder,
    cfg: TrainConfig,
    state: dict,
    rows: list[MetricsRow],
    files: EpochFiles | None,
) -> list[MetricsRow]:
    """The rows of the epochs resume.pt finished. It is written before metrics.csv and holds
    them (``files``), so the csv holds them all, or all but the last when the run was stopped in
    between; a resume.pt of an earlier version (no ``files``), written after the csv, comes with
    a csv of its epochs or one more."""
    epoch = state["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= cfg.epochs:
        raise CheckpointError(
            f"holds epoch {epoch!r}, not one of the run's {cfg.epochs} (damaged, or from another "
            "run?); restore it, or start a new run",
            file=str(folder / folder.RESUME),
        )
    if files is not None and len(files.rows) != epoch:
        raise CheckpointError(
            f"holds epoch {epoch} but the metrics of {len(files.rows)} (damaged?); restore it, or "
            "start a new run",
            file=str(folder / folder.RESUME),
        )
    finished = files.rows if files is not None else rows[:epoch]
    written = (epoch - 1, epoch) if files is not None else (epoch, epoch + 1)
    fix = "the files are from different runs or were edited; restore them, or start a new run"
    if len(rows) not in written:
        raise UserError(
            f"{folder.RESUME} is after epoch {epoch} but {folder.METRICS} records {len(rows)} "
            f"epoch(s): {fix}",
            file=str(folder),
        )
    pairs = zip(rows, finished, strict=False)  # the csv may lack the last row, or hold one more
    differ = [a.epoch for a, b in pairs if a.cells() != b.cells()]
    if differ:
        raise UserError(
            f"{folder.METRICS}'s row of epoch {differ[0]} is not the one {folder.RESUME} holds: "
            f"{fix}",
            file=str(folder),
        )
    return finished


def extended(point: ResumePoint, epochs: int) -> ResumePoint:
    """``point`` set to train to ``epochs`` in all: allowed for a multistep schedule, whose
    learning rate at an epoch does not depend on the total, so the epochs done stay exactly what
    a run of ``epochs`` from the start would have trained; refused for cosine, which decays to 0
    at the last epoch and so would have trained the done epochs at other rates."""
    done = point.epochs_done
    recipe = point.cfg.resolved_recipe()
    if recipe.schedule != "multistep":
        raise UserError(
            f"a run with the {recipe.schedule} schedule cannot be extended: its learning rate at "
            f"every epoch depends on the total ({point.cfg.epochs}), so the {done} epoch(s) done "
            f"would not be those of a {epochs}-epoch run. Start a new run of {epochs} epochs, or "
            f"one initialised from {point.folder / point.folder.LAST}",
            file=str(point.folder),
            field="epochs",
        )
    if epochs <= done:
        raise UserError(
            f"the run has done {done} epoch(s) already; give more to extend it",
            file=str(point.folder),
            field="epochs",
        )
    return dataclasses.replace(point, cfg=dataclasses.replace(point.cfg, epochs=epochs))
