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
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, UserError
from ..spec.load import Spec, load_spec
from .config import TrainConfig, config_from_json
from .run_folder import (
    CONFIG_FILE,
    METRICS_FILE,
    RESUME_FILE,
    SPEC_FILE,
    load_state,
    read_config,
    read_metrics,
)

WEIGHTS = ("last.safetensors", "best.safetensors")


@dataclass(frozen=True)
class ResumePoint:
    """A run folder read back: its settings, its spec, the state after its last finished epoch
    (None when none finished), and the metrics of the epochs done."""

    run_dir: Path
    cfg: TrainConfig
    spec: Spec
    state: dict | None
    rows: list[dict]

    @property
    def state_file(self) -> str:
        return str(self.run_dir / RESUME_FILE)


def read_run(run_dir: Path) -> ResumePoint:
    """Read and cross-check a run folder (see the module's docstring)."""
    cfg = config_from_json(read_config(run_dir), str(run_dir / CONFIG_FILE))
    if not (run_dir / SPEC_FILE).is_file():
        raise UserError(
            f"{SPEC_FILE} is missing, so what was trained is unknown; restore it, or start a new "
            "run",
            file=str(run_dir),
        )
    spec = load_spec(run_dir / SPEC_FILE)
    rows = read_metrics(run_dir / METRICS_FILE)
    state = load_state(run_dir / RESUME_FILE) if (run_dir / RESUME_FILE).exists() else None
    if state is None:
        _check_nothing_finished(run_dir, rows)
    else:
        _check_epochs_agree(run_dir, cfg, state, rows)
    return ResumePoint(run_dir, cfg, spec, state, rows)


def _check_nothing_finished(run_dir: Path, rows: list[dict]) -> None:
    """Without resume.pt a run restarts from epoch 0: only if it never finished one."""
    kept = [f"{METRICS_FILE} records {len(rows)} finished epoch(s)"] if rows else []
    kept += [f"{name} exists" for name in WEIGHTS if (run_dir / name).exists()]
    if kept:
        raise UserError(
            f"{RESUME_FILE} is missing, but {' and '.join(kept)}: resuming would start over and "
            f"overwrite them. Restore {RESUME_FILE}, or start a new run (its init can be "
            f"{run_dir / 'last.safetensors'})",
            file=str(run_dir),
        )


def _check_epochs_agree(run_dir: Path, cfg: TrainConfig, state: dict, rows: list[dict]) -> None:
    """resume.pt is written after metrics.csv, so the csv holds its epoch, or one more when the
    run was killed in between."""
    epoch = state["epoch"]
    file = str(run_dir / RESUME_FILE)
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= cfg.epochs:
        raise CheckpointError(
            f"holds epoch {epoch!r}, not one of the run's {cfg.epochs} (damaged, or from another "
            "run?); restore it, or start a new run",
            file=file,
        )
    if len(rows) not in (epoch, epoch + 1):
        raise UserError(
            f"{RESUME_FILE} is after epoch {epoch} but {METRICS_FILE} records {len(rows)} "
            "epoch(s): the files are from different runs or were edited; restore them, or start "
            "a new run",
            file=str(run_dir),
        )


def check_state_fits(net: nn.Module, state: dict, file: str) -> None:
    """The resume file's weights have the names and shapes of the network spec.yaml builds."""
    theirs = state["model"]
    mine = net.state_dict()
    if not isinstance(theirs, dict) or theirs.keys() != mine.keys():
        raise CheckpointError(
            "its weights are not those of the network spec.yaml describes (from another run, or "
            "spec.yaml was edited?); restore the run's own files, or start a new run",
            file=file,
        )
    for name, tensor in mine.items():
        other = theirs[name]
        if not isinstance(other, torch.Tensor) or other.shape != tensor.shape:
            shape = tuple(other.shape) if isinstance(other, torch.Tensor) else type(other).__name__
            raise CheckpointError(
                f"{name} has shape {shape} but spec.yaml builds {tuple(tensor.shape)} (from "
                "another run, or spec.yaml was edited?); restore the run's own files, or start a "
                "new run",
                file=file,
            )


def extended(point: ResumePoint, epochs: int) -> ResumePoint:
    """``point`` set to train to ``epochs`` in all: allowed for a multistep schedule, whose
    learning rate at an epoch does not depend on the total, so the epochs done stay exactly what
    a run of ``epochs`` from the start would have trained; refused for cosine, which decays to 0
    at the last epoch and so would have trained the done epochs at other rates."""
    recipe = point.cfg.resolved_recipe()
    done = point.state["epoch"] if point.state is not None else 0
    if recipe.schedule != "multistep":
        raise UserError(
            f"a run with the {recipe.schedule} schedule cannot be extended: its learning rate at "
            f"every epoch depends on the total ({point.cfg.epochs}), so the {done} epoch(s) done "
            f"would not be those of a {epochs}-epoch run. Start a new run of {epochs} epochs, or "
            f"one initialised from {point.run_dir / 'last.safetensors'}",
            file=str(point.run_dir),
            field="epochs",
        )
    if epochs <= done:
        raise UserError(
            f"the run has done {done} epoch(s) already; give more to extend it",
            file=str(point.run_dir),
            field="epochs",
        )
    return dataclasses.replace(point, cfg=dataclasses.replace(point.cfg, epochs=epochs))
