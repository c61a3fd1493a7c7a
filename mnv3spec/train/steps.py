"""One optimiser step of training: forward, loss, backward, update, and the weights' moving
average when the recipe has one; eager, or replayed as a CUDA graph (:mod:`.graph`) where it can
be. :class:`Stepper` makes that decision once and says it."""

from __future__ import annotations

import time
from contextlib import nullcontext

import torch
from torch import nn

from ..services.device import no_autotune
from .ema import WeightAverage
from .graph import DeviceLR, GraphStep, sgd_update, why_not_captured
from .plan import RunPlan


def train_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    x: torch.Tensor,
    labels: torch.Tensor,
    amp: torch.dtype | None,
    average: WeightAverage | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a normalised batch: forward, loss, backward, update, then the
    ``average``'s update (:meth:`~.ema.WeightAverage.prepare` was called for it). Returns the
    loss and the logits, detached and on the device: nothing here waits for the device, so the
    step can be captured whole (a CUDA graph) as a function of its inputs."""
    with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        logits = model(x)
        loss = criterion(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if average is not None:
        average.apply()
    return loss.detach(), logits.detach()


def captured_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr: DeviceLR,
    amp: torch.dtype | None,
    average: WeightAverage | None = None,
) -> GraphStep:
    """:func:`train_step` for a CUDA graph: the same forward, loss and backward, with the SGD
    update written in tensor arithmetic on the device learning rate (:func:`.graph.sgd_update`),
    and the average's update on its device decay, so one graph holds the whole step."""

    def step(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
            loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sgd_update(optimizer, lr.values)
        if average is not None:
            average.apply()
        return loss.detach(), logits.detach()

    return GraphStep(step)


class Stepper:
    """Runs each optimiser step: replayed as a CUDA graph where it can be, else eagerly; a batch
    of another shape than the captured one (a short last batch) runs eagerly too, and without
    cuDNN autotuning, since its shape comes once an epoch. Says how steps run, and once what the
    capture (or the compile) cost."""

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        amp: torch.dtype | None,
        plan: RunPlan,
        average: WeightAverage | None = None,
    ) -> None:
        self.model, self.criterion, self.optimizer, self.scaler = (
            model,
            criterion,
            optimizer,
            scaler,
        )
        self.device, self.batch, self.compiled = plan.device, plan.batch, plan.cfg.compile
        self.amp = amp  # autocast's dtype; None: float32
        self.average = average  # the weights' moving average, updated by every step
        self.eager_because = why_not_captured(
            plan.device,
            enabled=plan.cfg.graph,
            scaler_enabled=scaler.is_enabled(),
            processes=plan.world.size,
            compiled=plan.cfg.compile,
        )
        self.lr = DeviceLR(optimizer, plan.device)
        self.graph = None
        if self.eager_because is None:
            self.graph = captured_step(model, criterion, optimizer, self.lr, amp, average)
        self.compile_seconds: float | None = None  # the first compiled step's, when compiled
        self.warmup_said = False

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.average is not None:
            self.average.prepare()
        if self.graph is not None and self.graph.fits(x, labels):
            self.lr.refresh()
            return self.graph(x, labels)
        first_compiled = self.compiled and self.compile_seconds is None
        start = time.perf_counter()
        with no_autotune() if len(labels) < self.batch else nullcontext():
            out = train_step(
                self.model,
                self.criterion,
                self.optimizer,
                self.scaler,
                x,
                labels,
                self.amp,
                self.average,
            )
        if first_compiled:  # compiling happens in the first call: its time is said apart
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.compile_seconds = time.perf_counter() - start
        return out

    def mode_line(self) -> str | None:
        """How steps run, on a GPU (on the CPU they are plain eager steps: nothing to say)."""
        if self.device.type != "cuda":
            return None
        return f"steps: {'CUDA graph replay' if self.graph else 'eager, ' + self.eager_because}"

    def warmup_line(self) -> str | None:
        """Once, after the epoch that captured (or compiled) the step: what the warm-up cost, or
        why the steps stay eager (the step cannot be captured)."""
        if self.warmup_said:
            return None
        g, line = self.graph, None
        if self.compile_seconds is not None:
            line = (
                f"warm-up: {self.compile_seconds:.1f} s (the first step, compiled by "
                "torch.compile), part of this epoch's time"
            )
        elif g is not None and (g.graph is not None or g.failed is not None):
            line = g.warmup_line() if g.failed is None else f"steps: eager from here on, {g.failed}"
        self.warmup_said = line is not None
        return line
