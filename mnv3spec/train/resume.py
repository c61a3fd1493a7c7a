"""What ``resume`` trusts: a run folder whose files agree with each other.

config.json (every field present and typed), spec.yaml (loaded once), metrics.csv (epochs in
order) and resume.pt (the state after its last finished epoch, its weights shaped as spec.yaml
builds them) must tell one story; anything missing or inconsistent stops the resume before a
file is touched, saying what and what to do. A folder that records finished epochs is never
silently started over.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import CheckpointError, UserError
from ..services.run_folder import MetricsRow, RunFolder
from ..spec.load import load_spec
from ..spec.resolve import Spec
from .config import TrainConfig, config_from_json
from .state import check_saved


@dataclass(frozen=True)
class ResumePoint:
    """A run folder read back: its settings, its spec, the state after its last finished epoch
    (None when none finished), and the metrics of the epochs done."""

    folder: RunFolder
    cfg: TrainConfig
    spec: Spec
    saved: dict | None  # resume.pt, as TrainState packed it
    rows: list[MetricsRow]

    @property
    def epochs_done(self) -> int:
        return self.saved["epoch"] if self.saved is not None else 0


def read_resume_point(folder: RunFolder) -> ResumePoint:
    """Read and cross-check a run folder (see the module's docstring)."""
    cfg = config_from_json(folder.read_config(), str(folder / folder.CONFIG))
    if not (folder / folder.SPEC).is_file():
        raise UserError(
            f"{folder.SPEC} is missing, so what was trained is unknown; restore it, or start a "
            "new run",
            file=str(folder),
        )
    spec = load_spec(folder / folder.SPEC)
    rows = folder.read_metrics()
    saved = folder.read_state()
    if saved is not None:
        check_saved(saved, str(folder / folder.RESUME))
    if saved is None:
        _check_nothing_finished(folder, rows)
    else:
        _check_epochs_agree(folder, cfg, saved, rows)
    return ResumePoint(folder, cfg, spec, saved, rows)


def _check_nothing_finished(folder: RunFolder, rows: list[MetricsRow]) -> None:
    """Without resume.pt a run restarts from epoch 0: only if it never finished one."""
    kept = [f"{folder.METRICS} records {len(rows)} finished epoch(s)"] if rows else []
    kept += [f"{name} exists" for name in folder.WEIGHTS if (folder / name).exists()]
    if kept:
        raise UserError(
            f"{folder.RESUME} is missing, but {' and '.join(kept)}: resuming would start over "
            f"and overwrite them. Restore {folder.RESUME}, or start a new run (its init can be "
            f"{folder / folder.LAST})",
            file=str(folder),
        )


def _check_epochs_agree(
    folder: RunFolder, cfg: TrainConfig, state: dict, rows: list[MetricsRow]
) -> None:
    """resume.pt is written after metrics.csv, so the csv holds its epoch, or one more when the
    run was killed in between."""
    epoch = state["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= cfg.epochs:
        raise CheckpointError(
            f"holds epoch {epoch!r}, not one of the run's {cfg.epochs} (damaged, or from another "
            "run?); restore it, or start a new run",
            file=str(folder / folder.RESUME),
        )
    if len(rows) not in (epoch, epoch + 1):
        raise UserError(
            f"{folder.RESUME} is after epoch {epoch} but {folder.METRICS} records {len(rows)} "
            "epoch(s): the files are from different runs or were edited; restore them, or start "
            "a new run",
            file=str(folder),
        )


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
