"""The training loop, read top to bottom in :func:`train_epochs`: set up; then for each epoch:
steps, evaluation, the run folder saved, one line said. The jobs it calls live beside it: the
step (:mod:`.steps`), what a resume needs (:mod:`.state`), what the user sees (:mod:`.report`),
the run folder (:mod:`..services.run_folder`). A new piece of training, say an average of the
weights, is part of the step (:class:`~.steps.Stepper`, so a CUDA graph holds it too), a field of
:class:`~.state.TrainState` (so a resume restores it) and a line in :func:`save` and
:func:`train_epochs` for its evaluation.

The data sits in memory as uint8 tensors (on the GPU when it fits) and each step augments the
whole batch with tensor ops. Under torchrun each process trains on its shard with
DistributedDataParallel; rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable

import torch
from torch import nn

from ..data.batches import rank_loaders, training_batch
from ..errors import TrainingError
from ..model.builder import SpecNet
from ..services.device import World, average_buffers, reduce_sums, state_digest
from ..services.evaluate import EvalResult, evaluate
from ..services.run_folder import EpochFiles, MetricsRow, RunFolder
from .ema import WeightAverage
from .plan import RunPlan
from .recipe import make_optimizer, make_scheduler
from .report import Reporter
from .resume import ResumePoint
from .state import TrainState, training_generators
from .steps import Stepper

CHECK_EVERY = 20  # steps between host syncs: loss shown, NaN looked for (on GPU a sync costs time)


def train_epochs(
    plan: RunPlan,
    net: SpecNet,
    folder: RunFolder,
    point: ResumePoint | None,
    command: str,
    intro: list[str | None],
) -> None:
    """Train the epochs left of ``plan`` into ``folder``, after ``point``'s when resuming;
    ``command`` goes to command.txt and ``intro``'s lines are said before the first epoch."""
    cfg, recipe, world = plan.cfg, plan.recipe, plan.world  # set up
    model = wrap(net, plan)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    optimizer = make_optimizer(net, recipe)
    scheduler = make_scheduler(optimizer, recipe, cfg.epochs, plan.steps)
    scaler = torch.amp.GradScaler(plan.device.type, enabled=plan.amp == torch.float16)
    order, augmenting = training_generators(cfg.seed, world.rank)
    train_batches, val_batches = loaders(plan, order)
    average = WeightAverage(net, recipe.ema) if recipe.ema else None
    step = Stepper(model, criterion, optimizer, scaler, plan.amp, plan, average)
    state = TrainState(
        net, optimizer, scheduler, scaler, order, augmenting, plan.device, average=average
    )
    restore(plan, state, folder, point)
    report = Reporter(world, cfg.epochs, point.rows if point else [])
    if world.main:
        folder.write_start(net, dataclasses.asdict(cfg), command)
    report.say(*intro, step.mode_line())

    while state.epoch < cfg.epochs:  # each epoch: steps, evaluation, save, one line
        start, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        loss, top1, images_per_s = train_epoch(plan, state, step, train_batches, report, folder)
        report.say(step.warmup_line())
        val = evaluate_epoch(plan, state, val_batches)
        seconds = time.perf_counter() - start
        improved = state.finish_epoch(val.top1)
        report.add(
            MetricsRow(
                state.epoch, lr, loss, top1, val.loss, val.top1, val.topk, seconds, images_per_s
            )
        )
        save(plan, state, folder, EpochFiles(list(report.rows), improved))
        report.epoch_line(report.rows[-1], val.k)
    check_ranks_agree(net, world, report)
    report.say(f"done: best val top-1 {state.best:.2f}%, weights in {folder}")


def train_epoch(
    plan: RunPlan,
    state: TrainState,
    step: Stepper,
    batches: Iterable,
    report: Reporter,
    folder: RunFolder,
) -> tuple[float, float, float]:
    """One pass over this rank's shard; loss, top-1 and images/s over all ranks. The host
    looks at the device's numbers every CHECK_EVERY steps only."""
    step.model.train()
    steps, data, device, erasing = plan.steps, plan.data, plan.device, plan.recipe.random_erasing
    losses = torch.zeros(steps, device=device)
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    seen, checked, start = 0, 0, time.perf_counter()
    bar = report.bar(state.epoch + 1, steps)
    for i, (images, labels) in enumerate(batches):
        if i == steps:  # an epoch cut short (steps_per_epoch)
            break
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        x = training_batch(
            images,
            flip=data.flip,
            erasing=erasing,
            mean=data.mean,
            std=data.std,
            generator=state.augment,
        )
        loss, logits = step(x, labels)
        state.scheduler.step()
        losses[i] = loss
        loss_sum += loss * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
        if (i + 1) % CHECK_EVERY == 0 or i + 1 == steps:
            check_finite(losses, checked, i + 1, plan, state, folder)
            rate = seen * plan.world.size / (time.perf_counter() - start)
            bar.set_postfix(
                loss=f"{float(losses[checked : i + 1].mean()):.3f}", img_s=f"{rate:.0f}"
            )
            bar.update(i + 1 - checked)
            checked = i + 1
    bar.close()
    seconds = time.perf_counter() - start
    loss_sum, hits, n = reduce_sums([float(loss_sum), float(correct), float(seen)], device)
    return loss_sum / n, 100 * hits / n, n / seconds


def evaluate_epoch(plan: RunPlan, state: TrainState, batches: Iterable) -> EvalResult:
    """Validation of the network a run keeps (the weights' average when on), after the ranks'
    BatchNorm statistics are made to agree (in the same order on every rank)."""
    for module in [state.net] + ([state.average.module] if state.average is not None else []):
        average_buffers(module, plan.world)
    d = plan.data
    return evaluate(state.evaluated, batches, mean=d.mean, std=d.std, device=plan.device)


def check_finite(
    losses: torch.Tensor, begin: int, end: int, plan: RunPlan, state: TrainState, folder: RunFolder
) -> None:
    """Stop at the first NaN/inf loss on any rank, naming its epoch and step."""
    steps = plan.steps
    bad = (~torch.isfinite(losses[begin:end])).nonzero()
    first = plan.world.min(begin + int(bad[0]) if len(bad) else steps, plan.device)
    if first == steps:
        return
    value = float(losses[first])
    kept = (
        f"{folder} keeps epoch {state.epoch}, the last good one"
        if state.epoch
        else "no epoch finished, so no checkpoint was written"
    )
    raise TrainingError(
        f"the training loss became {value if not math.isfinite(value) else 'NaN/inf'} at "
        f"epoch {state.epoch + 1}, step {first + 1} of {steps}; the run stopped and {kept}. "
        f"Lower the learning rate (now {plan.recipe.lr:g}) or add a warm-up"
    )


def save(plan: RunPlan, state: TrainState, folder: RunFolder, files: EpochFiles) -> None:
    """The run folder after an epoch (rank 0), the random state of every rank included."""
    rngs = plan.world.gather(state.rng())
    if not plan.world.main:
        return
    meta = weights_meta(plan, files.rows[-1])
    folder.save_epoch(state.evaluated, files, state.to_dict(rngs), **meta)


def restore(plan: RunPlan, state: TrainState, folder: RunFolder, point: ResumePoint | None) -> None:
    """Continue after ``point``'s resume.pt, when it has one (without, no epoch finished and the
    run starts from its first); rank 0 writes again the files of its epoch that resume.pt
    records, which a run stopped after resume.pt may not have written."""
    if point is None or point.saved is None:
        return
    state.load(point.saved, plan.world.rank, str(folder / folder.RESUME))
    if plan.world.main and point.files is not None and point.files.rows:
        meta = weights_meta(plan, point.files.rows[-1])
        folder.write_epoch(state.evaluated, point.files, **meta)


def weights_meta(plan: RunPlan, row: MetricsRow) -> dict:
    """What the weights files of ``row``'s epoch carry (:func:`save_weights`' keywords)."""
    d = plan.data
    extra = {"epoch": row.epoch, "val_top1": row.val_top1, "data": plan.cfg.data}
    return {"classes": d.classes, "mean": d.mean, "std": d.std, "extra": extra}


def check_ranks_agree(net: nn.Module, world: World, report: Reporter) -> None:
    """Under torchrun, check every rank ends with the same weights (and say so)."""
    if world.size == 1:
        return
    digests = world.gather(state_digest(net.state_dict()))
    report.say(f"weights sha256 per rank: {' '.join(digests)}")
    if len(set(digests)) > 1:
        raise RuntimeError("DistributedDataParallel ranks ended with different weights")


def wrap(net: SpecNet, plan: RunPlan) -> nn.Module:
    """The module the steps call: DDP over the launch's processes, compiled when asked. The
    graph is static (every step uses every parameter, in the same order), which DDP is told so
    it skips looking for unused parameters and keeps its gradient buckets fixed."""
    model: nn.Module = net
    if plan.world.size > 1:
        ids = [plan.device.index] if plan.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(net, device_ids=ids, static_graph=True)
    if plan.cfg.compile:
        model = torch.compile(model)
    return model


def validation_batch(batch: int, resolution: int, device: torch.device) -> int:
    """Images per validation call: the training batch on the CPU (where a larger one gains
    nothing); on a GPU as many as 1,024 CIFAR-sized images take, so 10,000 validation images are
    a few calls rather than 79 launch-bound ones."""
    if device.type != "cuda":
        return batch
    return max(batch, 1024 * 32 * 32 // resolution**2)


def loaders(plan: RunPlan, order: torch.Generator) -> tuple[Iterable, Iterable]:
    """This rank's train and validation batches (:func:`~mnv3spec.data.batches.rank_loaders`)."""
    w = plan.world
    return rank_loaders(
        plan.data,
        plan.batch,
        validation_batch(plan.batch, plan.spec.resolution, plan.device),
        generator=order,
        drop_last=plan.drop_last,
        rank=w.rank,
        world_size=w.size,
        workers=plan.workers,
        pin_memory=plan.device.type == "cuda",
    )
