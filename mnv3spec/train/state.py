"""Everything a resume needs, in one dict that :class:`TrainState` alone packs and unpacks: the
weights, the optimiser (its momentum buffers), the schedule, the loss scaler, the random state of
every rank, the epochs done and, when on, the moving average of the weights (nanoGPT keeps its
checkpoint in one dict the same way).

Every random draw of a run comes from its seed, set here and only here
(:func:`seed_weights`, :func:`training_generators`). A later piece of state (an average of the
weights, say) is one more field here and one more key in :data:`KEYS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from .ema import WeightAverage

KEYS = frozenset({"epoch", "best", "model", "optimizer", "scheduler", "scaler", "rng"})


def seed_weights(seed: int) -> None:
    """The global generator before the network is built: the same initial weights on every
    rank of a torchrun launch."""
    torch.manual_seed(seed)


def training_generators(seed: int, rank: int) -> tuple[torch.Generator, torch.Generator]:
    """The generators of training: shuffling draws the same permutation on every rank (the
    first), augmentation differs per rank (the second), and so does the global generator
    (dropout), seeded here too."""
    torch.manual_seed(seed + rank)
    return torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1 + rank)


def check_saved(saved: Any, file: str) -> None:
    """``saved`` (a loaded resume file) holds every key :class:`TrainState` packs."""
    if not isinstance(saved, dict) or not saved.keys() >= KEYS:
        raise CheckpointError("is not a resume file written by train", file=file)


def check_state_fits(net: nn.Module, saved: dict, file: str) -> None:
    """The resume file's weights have the names and shapes of the network spec.yaml builds."""
    theirs = saved["model"]
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


@dataclass
class TrainState:
    """A run in progress, as far as a resume must repeat it."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    order: torch.Generator  # shuffling, the same on every rank
    augment: torch.Generator  # augmentation, this rank's
    device: torch.device
    epoch: int = 0  # epochs finished
    best: float = -1.0  # best validation top-1 so far
    average: WeightAverage | None = None  # the weights' moving average, when the recipe has one

    @property
    def evaluated(self) -> nn.Module:
        """The network a run evaluates and saves as its weights: the average when there is one."""
        return self.average.module if self.average is not None else self.net

    def finish_epoch(self, val_top1: float) -> bool:
        """Count one more epoch; whether its validation top-1 is the best so far."""
        improved = val_top1 > self.best
        self.epoch, self.best = self.epoch + 1, max(self.best, val_top1)
        return improved

    def rng(self) -> dict:
        """This rank's random state (every rank's is gathered into the saved dict)."""
        cuda = self.device.type == "cuda"
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if cuda else None,
            "order": self.order.get_state(),
            "augment": self.augment.get_state(),
        }

    def to_dict(self, rngs: list[dict]) -> dict:
        """The saved dict; ``rngs``: :meth:`rng` of every rank, in rank order."""
        return {
            "epoch": self.epoch,
            "best": self.best,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            **({"average": self.average.state_dict()} if self.average is not None else {}),
        }

    def load(self, saved: dict, rank: int, file: str) -> None:
        """Continue after the epoch ``saved`` (a checked resume file) was written at; ranks a
        former launch did not have keep their new seeds."""
        check_state_fits(self.net, saved, file)
        try:
            self.net.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            self.scaler.load_state_dict(saved["scaler"])
            if self.average is not None:
                self.average.load_state_dict(saved["average"])
            rng = saved["rng"]
            self.order.set_state(rng[0]["order"])  # the same on every rank
            if rank < len(rng):
                torch.set_rng_state(rng[rank]["torch"])
                self.augment.set_state(rng[rank]["augment"])
                if rng[rank]["cuda"] is not None and self.device.type == "cuda":
                    torch.cuda.set_rng_state(rng[rank]["cuda"], self.device)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"a damaged resume file ({e})", file=file) from None
        self.epoch, self.best = int(saved["epoch"]), float(saved["best"])
