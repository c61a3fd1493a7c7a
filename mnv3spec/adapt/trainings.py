"""The search's trainings, each a training of the sweep's kind (:mod:`~mnv3spec.explore.launch`):
a request handed to a worker process, one at a time on a CPU or one per GPU, into a run folder
that a finished run is read from and an interrupted one resumed in — so the same command after
kill -9 continues where it stopped."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..explore.grid import Variant
from ..explore.launch import local_gpus, run_trainings
from ..explore.training import ClusterSettings, Training
from ..services.run_folder import RunFolder
from ..train.config import TrainConfig


@dataclass(frozen=True)
class Job:
    """One training the search wants: its id (its run folder's name under ``runs``) and config
    (``spec``, ``overrides``, and the TrainConfig fields it sets over the train flags)."""

    id: str
    spec: str
    overrides: dict[str, Any]
    changes: dict[str, Any]


def slug(text: str) -> str:
    """``text`` as part of a folder name."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-")[:60]


def _training(job: Job, runs: Path, flags: dict[str, Any]) -> Training | None:
    """The sweep's Training of ``job`` (None: its run finished)."""
    folder = RunFolder(runs / job.id)
    if folder.finished():
        return None
    config = None
    if not folder.holds_run():
        settings = {**flags, **job.changes, "out": str(runs), "name": job.id}
        config = TrainConfig(job.spec, job.overrides, **settings).with_batch()
    return Training(Variant(job.id, job.spec, job.id, job.overrides), folder, config)


def try_jobs(
    jobs: list[Job],
    folder: Path,
    flags: dict[str, Any],
    say: Callable[[str], None],
    cluster: ClusterSettings | None = None,
) -> dict[str, str]:
    """Run (or continue) ``jobs`` into ``folder/runs``, on this machine or on ``cluster`` (a
    session of :func:`~mnv3spec.explore.launch.cluster_session` open); the error of each that
    failed, by id (a failed run is tried again by the next call)."""
    runs = folder / "runs"
    todo = [t for t in (_training(j, runs, flags) for j in jobs) if t is not None]
    if not todo:
        return {}
    gpus = local_gpus(flags.get("device", "auto"))
    errors = run_trainings(todo, folder / "logs", gpus, say, cluster)
    return {name: error for name, (_, error) in errors.items()}


def run_jobs(
    jobs: list[Job],
    folder: Path,
    flags: dict[str, Any],
    say: Callable[[str], None],
    cluster: ClusterSettings | None = None,
) -> list[RunFolder]:
    """:func:`try_jobs`, every one of which must finish: their run folders, or UserError naming
    the first that failed and its log."""
    errors = try_jobs(jobs, folder, flags, say, cluster)
    if errors:
        name, error = next(iter(errors.items()))
        raise UserError(f"the training {name} failed: {error}")
    return [RunFolder(folder / "runs" / j.id) for j in jobs]


def top1(run: RunFolder) -> float:
    """The last epoch's validation top-1 of a finished run (held-out images, for a search's)."""
    return held_out(run)[0]


def held_out(run: RunFolder) -> tuple[float, float]:
    """The last epoch's validation top-1 and loss of a finished run."""
    rows = run.read_metrics()
    if not rows:
        raise UserError("holds no finished epoch; delete it to train it again", file=str(run))
    return rows[-1].val_top1, rows[-1].val_loss


def finetune_changes(
    parent: Path, steps: int, holdout: int, seed: int, lr: float
) -> dict[str, Any]:
    """What a proposal's fine-tune sets over the train flags: one epoch of ``steps`` steps at
    learning rate ``lr`` (no warm-up) from the parent's weights, scored on ``holdout`` training
    images."""
    return {"epochs": 1, "steps_per_epoch": steps, "holdout": holdout, "init": str(parent),
            "seed": seed, "lr": lr, "warmup": 0.0}  # fmt: skip
