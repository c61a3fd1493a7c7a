"""Train any compiled spec (``python cli.py train specs/small.yaml``): a new run, or a resume.

The stages, each in its own module: the settings (:mod:`.config`), the run plan — the spec fitted
to its data and the network built once (:mod:`.plan`) — the recipe (:mod:`.recipe`), the loop
(:mod:`.loop`), the run folder (:mod:`.run_folder`) and what a resume trusts (:mod:`.resume`).
The default recipe is the seed repo's (SGD 0.1, momentum 0.9, ×0.1 at epochs 15/20/30, batch
128, 20 epochs). Everything the user gave is checked on every process before a torchrun launch's
processes wait for each other, and before a run folder is created.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

import torch

from ..data.datasets import check_name
from ..errors import UserError
from ..files import check_output_folder
from ..runtime import World, pick_device, thread_count, torch_settings
from ..spec.load import Spec, load_spec
from .config import TrainConfig, absolute
from .loop import Trainer
from .plan import RunPlan, build_network, make_plan
from .resume import ResumePoint, check_state_fits, extended, read_run
from .run_folder import (
    CONFIG_FILE,
    check_free,
    check_run_name,
    create_run_dir,
    locked,
    write_start,
)


def train(cfg: TrainConfig, command: str = "", spec: Spec | None = None) -> Path:
    """Start a new run in ``cfg.out/cfg.name`` (a fresh name by default); returns its folder.

    ``spec``: ``cfg.spec`` already loaded with ``cfg.overrides`` (it is loaded here otherwise).
    ``command``: the command line, appended to the run's command.txt.
    """
    if spec is None:
        spec = load_spec(cfg.spec, **cfg.overrides)
    cfg.resolved_recipe()
    check_output_folder(cfg.out, field="out")
    check_name(cfg.data)
    if cfg.name:
        check_free(Path(cfg.out) / check_run_name(cfg.name))
    return _launch(absolute(cfg), spec, command, None)


def resume(
    run_dir: str | Path,
    command: str = "",
    *,
    device: str | None = None,
    compile: bool | None = None,
    graph: bool | None = None,
    epochs: int | None = None,
) -> Path:
    """Continue a run after its last finished epoch, with the settings stored in its folder;
    only ``device``, ``compile`` and ``graph`` may change (they do not change what is computed),
    and ``epochs`` where the schedule does not depend on it (:func:`.resume.extended`).
    The folder is locked before it is read, so a second resume of it fails at once."""
    run_dir = Path(run_dir)
    world = World.from_env()
    ours = world.main and (run_dir / CONFIG_FILE).is_file()  # else read_run says what it is
    with locked(run_dir) if ours else nullcontext():
        point = read_run(run_dir)
        if epochs is not None:
            point = extended(point, epochs)
        changes = {"device": device, "compile": compile, "graph": graph}
        cfg = dataclasses.replace(point.cfg, **{k: v for k, v in changes.items() if v is not None})
        return _launch(cfg, point.spec, command, point)


def _launch(cfg: TrainConfig, spec: Spec, command: str, point: ResumePoint | None) -> Path:
    """Plan, build, claim the folder and train, in the torchrun group if there is one, with
    torch's process-wide switches set for the run and restored after it."""
    world = World.from_env()
    device = pick_device(cfg.device, world.local_rank)
    threads = thread_count(world.local_size)
    settings = torch_settings(
        threads=threads,
        deterministic=cfg.deterministic and device.type == "cpu",
        benchmark=device.type == "cuda" and not cfg.deterministic,
    )
    with world.joined(device), settings:
        if point is None:
            cfg.seed = world.share(cfg.seed if cfg.seed is not None else secrets.randbelow(2**31))
        torch.manual_seed(cfg.seed)
        plan = make_plan(cfg, spec, world, device, resumed=point is not None)
        net, note = build_network(plan, start_from=None if point else cfg.init)
        unnamed = point is None and cfg.name is None  # _claimed names it
        with _claimed(plan, point) as run_dir:
            trainer = Trainer(plan, net, run_dir)
            if point is not None and point.state is not None:
                check_state_fits(net, point.state, point.state_file)
                trainer.restore(point.state, point.rows, point.state_file)
            if world.main:
                write_start(run_dir, net, dataclasses.asdict(cfg), command)
            start = _start_line(plan, run_dir, threads, _numbered(plan, run_dir) if unnamed else "")
            for line in (note, _resuming(trainer), start, trainer.step_line()):
                if line:
                    trainer.log(line)
            trainer.fit()
    return run_dir


@contextmanager
def _claimed(plan: RunPlan, point: ResumePoint | None) -> Iterator[Path]:
    """The run folder, this run's alone for the block. On resume, the folder read (rank 0 holds
    its lock already); for a new run, one rank 0 creates exclusively and locks, its path shared
    with the other ranks (and its refusal too, so every rank stops alike)."""
    if point is not None:
        yield point.run_dir
        return
    cfg, world = plan.cfg, plan.world
    with ExitStack() as lock:
        run_dir, error = None, None
        if world.main:
            try:
                run_dir = create_run_dir(Path(cfg.out), cfg.name, _default_name(plan))
                lock.enter_context(locked(run_dir))
                check_free(run_dir)  # a run that took the empty folder first and has ended
            except UserError as e:
                error = e
        path, message = world.share((run_dir and str(run_dir), error and str(error)))
        if error is not None:
            raise error
        if message:
            raise UserError(message)
        cfg.name = Path(path).name
        yield Path(path)


def _default_name(plan: RunPlan) -> str:
    """The run folder's name when --name is not given: SPEC-wWIDTH-DATA."""
    cfg = plan.cfg
    return f"{Path(cfg.spec).stem}-w{plan.spec.params['width']}-{Path(cfg.data).name}"


def _numbered(plan: RunPlan, run_dir: Path) -> str:
    """For a new run that took NAME-2 (NAME-3, ...) because NAME held a run: where that run is
    and how to continue it, so that a re-run does not leave a copy unnoticed."""
    taken = run_dir.parent / _default_name(plan)
    if run_dir == taken:
        return ""
    return f" (new: {taken} holds a run; resume it to continue that one)"


def _resuming(trainer: Trainer) -> str | None:
    done, epochs = trainer.epoch, trainer.plan.cfg.epochs
    return f"resuming {trainer.run_dir} after epoch {done} of {epochs}" if done else None


def _start_line(plan: RunPlan, run_dir: Path, threads: int, note: str = "") -> str:
    """What runs where, in one line (and a second when images are decoded batch by batch)."""
    spec, data, cfg, world = plan.spec, plan.data, plan.cfg, plan.world
    where = f"{plan.device}{f' ×{world.size}' if world.size > 1 else ''}"
    if plan.device.type == "cpu":
        where += f", {threads} thread{'s' if threads > 1 else ''}"
    line = (
        f"{spec.name}: width {spec.params['width']}, {len(data.classes)} classes, "
        f"{spec.resolution}px | {cfg.data}: {len(data.train_labels)} train / "
        f"{len(data.val_labels)} val | {where}, batch {cfg.batch}, {plan.steps} steps/epoch | "
        f"{run_dir}{note}"
    )
    if data.streamed:
        size = (data.train_images.nbytes + data.val_images.nbytes) / 2**30
        line += (
            f"\nimages: {len(data.train_labels) + len(data.val_labels):,} decoded per batch by "
            f"{plan.workers} workers per process (would need {size:.1f} GiB in memory)"
        )
    return line
