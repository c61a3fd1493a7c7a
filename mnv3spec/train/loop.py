"""The training loop: one optimiser step, one epoch, evaluation, and the run folder after each
epoch (:mod:`mnv3spec.train.run_folder`), so a killed run resumes where its last epoch left it.

The data sits in memory as uint8 tensors (on the GPU when it fits) and each step augments the
whole batch with tensor ops. Under torchrun each process trains on its shard with
DistributedDataParallel; rank 0 writes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..data.batches import augment, loader, normalize, random_erase
from ..errors import CheckpointError, TrainingError
from ..model.builder import SpecNet
from ..runtime import amp_dtype, average_buffers, no_autotune, reduce_sums, state_digest
from .evaluate import EvalResult, evaluate
from .graph import DeviceLR, GraphStep, sgd_update, wanted
from .plan import RunPlan
from .recipe import make_optimizer, make_scheduler
from .run_folder import save_epoch

CHECK_EVERY = 20  # steps between host syncs: loss shown, NaN looked for (on GPU a sync costs time)


def train_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    x: torch.Tensor,
    labels: torch.Tensor,
    amp: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a normalised batch: forward, loss, backward, update. Returns the loss
    and the logits, detached and on the device: nothing here waits for the device, so the step
    can be captured whole (a CUDA graph) as a function of its inputs."""
    with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        logits = model(x)
        loss = criterion(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach()


def captured_step(
    model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, lr: DeviceLR, amp
) -> GraphStep:
    """:func:`train_step` for a CUDA graph: the same forward, loss and backward, with the SGD
    update written in tensor arithmetic on the device learning rate (:func:`.graph.sgd_update`)."""

    def step(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
            loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sgd_update(optimizer, lr.values)
        return loss.detach(), logits.detach()

    return GraphStep(step)


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
    """Train batches (this rank's shard of a fresh permutation each epoch) and this rank's
    validation images in order; decoding workers live for one pass, never both sets at once."""
    d, w = plan.data, plan.world
    decoding = {"workers": plan.workers, "pin_memory": plan.device.type == "cuda"}
    train = loader(
        d.train_images,
        d.train_labels,
        plan.batch,
        shuffle=True,
        generator=order,
        drop_last=plan.drop_last,
        rank=w.rank,
        world_size=w.size,
        **decoding,
    )
    shard = slice(w.rank, None, w.size)
    val_batch = validation_batch(plan.batch, plan.spec.resolution, plan.device)
    val = loader(d.val_images[shard], d.val_labels[shard], val_batch, shuffle=False, **decoding)
    return train, val


class Trainer:
    """One run in progress: the network and its optimiser state, epoch by epoch."""

    def __init__(self, plan: RunPlan, net: SpecNet, run_dir: Path) -> None:
        cfg, world = plan.cfg, plan.world
        self.plan, self.net, self.run_dir, self.device = plan, net, run_dir, plan.device
        self.recipe = cfg.resolved_recipe()
        self.model = wrap(net, plan)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.recipe.label_smoothing)
        self.optimizer = make_optimizer(net, self.recipe)
        self.scheduler = make_scheduler(self.optimizer, self.recipe, cfg.epochs, plan.steps)
        self.amp = amp_dtype(self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        # Shuffling draws the same permutation on every rank; augmentation differs per rank.
        self.order = torch.Generator().manual_seed(cfg.seed)
        self.augment = torch.Generator().manual_seed(cfg.seed + 1 + world.rank)
        torch.manual_seed(cfg.seed + world.rank)  # dropout
        self.train_batches, self.val_batches = loaders(plan, self.order)
        self.graph_note = wanted(
            self.device,
            enabled=cfg.graph,
            scaler_enabled=self.scaler.is_enabled(),
            processes=world.size,
            compiled=cfg.compile,
        )
        self.lr = DeviceLR(self.optimizer, self.device)
        self.graph = None
        if self.graph_note is None:
            self.graph = captured_step(
                self.model, self.criterion, self.optimizer, self.lr, self.amp
            )
        self.warmup_said = False
        self.compile_seconds: float | None = None  # the first compiled step's, when compiled
        self.epoch, self.best = 0, -1.0
        self.rows: list[dict] = []

    def step_line(self) -> str | None:
        """How steps run, on a GPU (on the CPU they are plain eager steps: nothing to say)."""
        if self.device.type != "cuda":
            return None
        return f"steps: {'CUDA graph replay' if self.graph else 'eager, ' + self.graph_note}"

    def log(self, message: str) -> None:
        if self.plan.world.main:
            print(message, flush=True)

    def fit(self) -> None:
        """Train the epochs left, saving the run folder after each."""
        epochs = self.plan.cfg.epochs
        while self.epoch < epochs:
            epoch = self.epoch + 1
            start = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss, train_top1, images_per_s = self.train_epoch(epoch)
            self.say_warmup()
            average_buffers(self.net, self.plan.world)
            val = self.evaluate()
            row = {
                "epoch": epoch,
                "lr": lr,
                "train_loss": train_loss,
                "train_top1": train_top1,
                "val_loss": val.loss,
                "val_top1": val.top1,
                "val_top5": val.top5,
                "seconds": time.perf_counter() - start,
                "images_per_s": images_per_s,
            }
            self.epoch = epoch
            self.save(row, val)
            self.log(
                f"epoch {epoch}/{epochs}  lr {lr:.4g}  train loss {train_loss:.4f} "
                f"acc {train_top1:.2f}%  val loss {val.loss:.4f} acc {val.top1:.2f}% "
                f"top{val.k} {val.top5:.2f}%  {row['seconds']:.1f}s {images_per_s:.0f} img/s"
            )
        self.check_ranks_agree()
        self.log(f"done: best val top-1 {self.best:.2f}%, weights in {self.run_dir}")

    def say_warmup(self) -> None:
        """Once, after the epoch that captured (or compiled) the step: what the warm-up cost, or
        why the steps stay eager (the step cannot be captured)."""
        line = None if self.warmup_said else self.warmup_line()
        if line:
            self.warmup_said = True
            self.log(line)

    def warmup_line(self) -> str | None:
        g = self.graph
        if self.compile_seconds is not None:
            return (
                f"warm-up: {self.compile_seconds:.1f} s (the first step, compiled by "
                "torch.compile), part of this epoch's time"
            )
        if g is None or (g.graph is None and g.failed is None):
            return None  # not captured yet
        return g.warmup_line() if g.failed is None else f"steps: eager from here on, {g.failed}"

    def train_epoch(self, epoch: int) -> tuple[float, float, float]:
        """One pass over this rank's shard; loss, top-1 and images/s over all ranks. The host
        looks at the device's numbers every CHECK_EVERY steps only."""
        self.model.train()
        steps, world, data = self.plan.steps, self.plan.world, self.plan.data
        losses = torch.zeros(steps, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen, checked, start = 0, 0, time.perf_counter()
        shown = world.main and sys.stderr.isatty()
        desc = f"epoch {epoch}/{self.plan.cfg.epochs}"
        bar = tqdm(total=steps, desc=desc, leave=False, disable=not shown)
        for step, (images, labels) in enumerate(self.train_batches):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            x = augment(images, flip=data.flip, generator=self.augment)
            if self.recipe.random_erasing:  # drawn only when on: the seed recipe's draws stay
                x = random_erase(x, self.recipe.random_erasing, generator=self.augment)
            x = normalize(x, data.mean, data.std, channels_last=True)
            loss, logits = self.step(x, labels)
            self.scheduler.step()
            losses[step] = loss
            loss_sum += loss * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
            if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps:
                self.check_finite(losses, checked, step + 1, epoch)
                rate = seen * world.size / (time.perf_counter() - start)
                recent = float(losses[checked : step + 1].mean())
                bar.set_postfix(loss=f"{recent:.3f}", img_s=f"{rate:.0f}")
                bar.update(step + 1 - checked)
                checked = step + 1
        bar.close()
        seconds = time.perf_counter() - start
        loss_sum, hits, n = reduce_sums([float(loss_sum), float(correct), float(seen)], self.device)
        return loss_sum / n, 100 * hits / n, n / seconds

    def step(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step: replayed as a CUDA graph where it can be, else eagerly; a batch of
        another shape than the captured one (a short last batch) runs eagerly too, and without
        cuDNN autotuning, since its shape comes once an epoch."""
        if self.graph is not None and self.graph.fits(x, labels):
            self.lr.refresh()
            return self.graph(x, labels)
        first_compiled = self.plan.cfg.compile and self.compile_seconds is None
        start = time.perf_counter()
        with no_autotune() if len(labels) < self.plan.batch else nullcontext():
            out = train_step(
                self.model, self.criterion, self.optimizer, self.scaler, x, labels, self.amp
            )
        if first_compiled:  # compiling happens in the first call: its time is said apart
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.compile_seconds = time.perf_counter() - start
        return out

    def check_finite(self, losses: torch.Tensor, begin: int, end: int, epoch: int) -> None:
        """Stop at the first NaN/inf loss on any rank, naming its epoch and step."""
        steps, world = self.plan.steps, self.plan.world
        bad = (~torch.isfinite(losses[begin:end])).nonzero()
        first = world.min(begin + int(bad[0]) if len(bad) else steps, self.device)
        if first == steps:
            return
        value = float(losses[first])
        kept = (
            f"{self.run_dir} keeps epoch {self.epoch}, the last good one"
            if self.epoch
            else "no epoch finished, so no checkpoint was written"
        )
        raise TrainingError(
            f"the training loss became {value if not math.isfinite(value) else 'NaN/inf'} at "
            f"epoch {epoch}, step {first + 1} of {steps}; the run stopped and {kept}. "
            f"Lower the learning rate (now {self.recipe.lr:g}) or add a warm-up"
        )

    def evaluate(self) -> EvalResult:
        d = self.plan.data
        return evaluate(self.net, self.val_batches, mean=d.mean, std=d.std, device=self.device)

    def save(self, row: dict, val: EvalResult) -> None:
        """The run folder after an epoch (rank 0), the random state of every rank included."""
        self.rows.append(row)
        rng = self.plan.world.gather(self.rng_state())
        if not self.plan.world.main:
            return
        improved = val.top1 > self.best
        self.best = max(self.best, val.top1)
        state = {
            "epoch": self.epoch,
            "best": self.best,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
        }
        d = self.plan.data
        extra = {"epoch": self.epoch, "val_top1": val.top1, "data": self.plan.cfg.data}
        meta = {"classes": d.classes, "mean": d.mean, "std": d.std, "extra": extra}
        save_epoch(self.run_dir, self.net, self.rows, state, improved=improved, **meta)

    def rng_state(self) -> dict:
        cuda = self.device.type == "cuda"
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if cuda else None,
            "order": self.order.get_state(),
            "augment": self.augment.get_state(),
        }

    def restore(self, state: dict, rows: list[dict], file: str) -> None:
        """Continue after the epoch ``state`` (a checked resume file) was saved at."""
        try:
            self.net.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            rng = state["rng"]
            self.order.set_state(rng[0]["order"])  # the same on every rank
            rank = self.plan.world.rank
            if rank < len(rng):  # ranks a former launch did not have keep their new seeds
                torch.set_rng_state(rng[rank]["torch"])
                self.augment.set_state(rng[rank]["augment"])
                if rng[rank]["cuda"] is not None and self.device.type == "cuda":
                    torch.cuda.set_rng_state(rng[rank]["cuda"], self.device)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"a damaged resume file ({e})", file=file) from None
        self.epoch, self.best = int(state["epoch"]), float(state["best"])
        self.rows = rows[: self.epoch]

    def check_ranks_agree(self) -> None:
        """Under torchrun, check every rank ends with the same weights (and say so)."""
        if self.plan.world.size == 1:
            return
        digests = self.plan.world.gather(state_digest(self.net.state_dict()))
        self.log(f"weights sha256 per rank: {' '.join(digests)}")
        if len(set(digests)) > 1:
            raise RuntimeError("DistributedDataParallel ranks ended with different weights")
