"""Train any compiled spec (``python cli.py train specs/small.yaml``): a new run, or a resume.

The stages, each in its own module: the settings (:mod:`.config`), the run plan — the spec fitted
to its data and the network built once (:mod:`.plan`) — the recipe (:mod:`.recipe`), the loop
(:mod:`.loop`), the run folder (:mod:`..services.run_folder`) and what a resume trusts
(:mod:`.resume`).
The default recipe is the seed repo's (SGD 0.1, momentum 0.9, ×0.1 at epochs 15/20/30, batch
128, 20 epochs). Everything the user gave is checked on every process before a torchrun launch's
processes wait for each other, and before a run folder is created.
"""

from __future__ import annotations

import dataclasses
import secrets
from contextlib import nullcontext
from pathlib import Path

from ..data.datasets import check_name
from ..services.device import World, amp_dtype, pick_device, thread_count, torch_settings
from ..services.run_folder import RunFolder, check_new_run, claimed
from ..spec.load import load_spec
from ..spec.resolve import Spec
from .config import TrainConfig, absolute
from .loop import train_epochs
from .plan import RunPlan, build_network, make_plan
from .resume import ResumePoint, extended, read_resume_point
from .state import seed_weights


def train(cfg: TrainConfig, command: str = "") -> Path:
    """Start a new run in ``cfg.out/cfg.name`` (a fresh name by default); returns its folder.
    ``cfg.spec`` is loaded here, once, with ``cfg.overrides``; everything below takes the Spec.
    ``command``: the command line, appended to the run's command.txt."""
    spec = load_spec(cfg.spec, **cfg.overrides)
    cfg = cfg.with_batch()  # the recipe checked, and its batch the number config.json holds
    check_new_run(cfg.out, cfg.name)
    check_name(cfg.data, cfg.data_dir)
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
    folder = RunFolder(run_dir)
    ours = World.from_env().main and folder.holds_run()  # else read_resume_point says what it is
    with folder.locked() if ours else nullcontext():
        point = read_resume_point(folder)
        if epochs is not None:
            point = extended(point, epochs)
        changes = {"device": device, "compile": compile, "graph": graph}
        cfg = dataclasses.replace(point.cfg, **{k: v for k, v in changes.items() if v is not None})
        return _launch(cfg, point.spec, command, point)


def _launch(cfg: TrainConfig, spec: Spec, command: str, point: ResumePoint | None) -> Path:
    """Train, in the torchrun group if there is one, with torch's process-wide switches set for
    the run and restored after it. In phases: where it writes and runs, the data (and the spec
    fitted to it), the network and its first weights, the run folder claimed, the loop."""
    base = _default_name(cfg, spec)  # a new run's folder, unless it is named
    world = World.from_env()
    device = pick_device(cfg.device, world.local_rank)
    amp = amp_dtype(device)
    threads = thread_count(world.local_size)
    settings = torch_settings(
        threads=threads,
        deterministic=cfg.deterministic and device.type == "cpu",
        benchmark=device.type == "cuda" and not cfg.deterministic,
    )
    with world.joined(device), settings:
        if point is None:
            seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)
            cfg = dataclasses.replace(cfg, seed=world.share(seed))
        seed_weights(cfg.seed)
        # resumed from a resume.pt: its spec must fit the data, its weights replace the first
        # ones; without one, the run starts again from its beginning, --init's weights included
        started = point is not None and point.saved is not None
        plan = make_plan(cfg, spec, world, device, amp, resumed=started)
        net, note = build_network(plan, start_from=None if started else cfg.init)
        # resumed: the folder read, locked since (by rank 0); new: one claimed now
        held = nullcontext(point.folder) if point else claimed(Path(cfg.out), cfg.name, base, world)
        with held as folder:
            numbered = _numbered(folder, base) if point is None and cfg.name is None else ""
            if point is None:  # the name it took
                plan = dataclasses.replace(
                    plan, cfg=dataclasses.replace(cfg, name=folder.path.name)
                )
            resuming = point and point.epochs_done
            intro = [
                note,
                f"resuming {folder} after epoch {resuming} of {cfg.epochs}" if resuming else None,
                _start_line(plan, folder, threads, numbered),
            ]
            train_epochs(plan, net, folder, point, command, intro)
    return folder.path


def _default_name(cfg: TrainConfig, spec: Spec) -> str:
    """The run folder's name when --name is not given: SPEC-wWIDTH-DATA."""
    return f"{Path(cfg.spec).stem}-w{spec.params['width']}-{Path(cfg.data).name}"


def _numbered(folder: RunFolder, base: str) -> str:
    """For a new run that took NAME-2 (NAME-3, ...) because NAME (``base``) held a run: where
    that run is and how to continue it, so that a re-run does not leave a copy unnoticed."""
    taken = folder.path.parent / base
    if folder.path == taken:
        return ""
    if not RunFolder(taken).holds_run():  # never started, or starting now in another process
        return f" (new: {taken} holds no run's settings; delete it if no run is starting there)"
    return f" (new: {taken} holds a run; resume it to continue that one)"


def _start_line(plan: RunPlan, folder: RunFolder, threads: int, note: str = "") -> str:
    """What runs where, in one line (and a second when images are decoded batch by batch)."""
    spec, data, cfg, world = plan.spec, plan.data, plan.cfg, plan.world
    where = f"{plan.device}{f' ×{world.size}' if world.size > 1 else ''}"
    if plan.device.type == "cpu":
        where += f", {threads} thread{'s' if threads > 1 else ''}"
    line = (
        f"{spec.name}: width {spec.params['width']}, {len(data.classes)} classes, "
        f"{spec.resolution}px | {cfg.data}: {len(data.train_labels)} train / "
        f"{len(data.val_labels)} val | {where}, batch {cfg.batch}, {plan.steps} steps/epoch | "
        f"{folder}{note}"
    )
    if data.streamed:
        size = (data.train_images.nbytes + data.val_images.nbytes) / 2**30
        line += (
            f"\nimages: {len(data.train_labels) + len(data.val_labels):,} decoded per batch by "
            f"{plan.workers} workers per process (would need {size:.1f} GiB in memory)"
        )
    return line
