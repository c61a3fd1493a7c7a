"""The recipe of a run: optimiser and learning-rate schedule, as named presets a run may change.

The default is the seed repo's: SGD 0.1, momentum 0.9, no weight decay, ×0.1 at epochs 15/20/30.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UserError

SCHEDULES = ("multistep", "cosine")


@dataclass(frozen=True)
class Recipe:
    """Optimiser, schedule, batch size and augmentation. The batch size is part of a recipe (its
    learning rate and weight decay were chosen with it); the epochs are a separate setting."""

    lr: float
    momentum: float
    weight_decay: float  # never on BatchNorm parameters or biases
    nesterov: bool
    schedule: str  # "multistep" (×gamma at each milestone epoch) or "cosine" (to 0 at the end)
    milestones: tuple[int, ...]
    gamma: float
    warmup: float  # epochs of linear warm-up
    label_smoothing: float
    random_erasing: float = (
        0.0  # probability per image (:func:`mnv3spec.data.batches.random_erase`)
    )
    ema: float = 0.0  # decay of the weights' moving average (:mod:`.ema`); 0: none
    batch: int = 128  # global: split over the processes of a torchrun launch


RECIPES = {
    # The seed's train.py: SGD(lr=0.1, momentum=0.9), no weight decay,
    # MultiStepLR([15, 20, 30], 0.1) stepped once per epoch, plain cross-entropy.
    "seed": Recipe(0.1, 0.9, 0.0, False, "multistep", (15, 20, 30), 0.1, 0.0, 0.0),
    # A short-budget recipe as practitioners use today: Nesterov SGD, one epoch of warm-up then
    # cosine to 0 at the end of the run (Goyal et al. 2017; Loshchilov & Hutter 2017), label
    # smoothing 0.1 (Szegedy et al. 2016) and random erasing with p 0.5 (Zhong et al. 2020), on
    # top of the seed's crop and flip. Batch 64 and weight decay 5e-3 on weights only: measured
    # better than 128 and 5e-4 on 6,000 Fashion-MNIST images in 20 epochs (docs/measurements.md);
    # 5e-4 is the value for runs of tens of thousands of steps, and a 20-epoch run is short.
    "cosine-ls-erase": Recipe(
        0.1, 0.9, 5e-3, True, "cosine", (), 0.1, 1.0, 0.1, random_erasing=0.5, batch=64
    ),
}
FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))


def resolve_recipe(name: str, **changes: Any) -> Recipe:
    """The preset ``name`` with ``changes`` (a value of None keeps the preset's), checked.
    Errors name the parameter that is wrong."""
    if name not in RECIPES:
        raise UserError(f"unknown recipe '{name}'; known: {', '.join(RECIPES)}", field="recipe")
    kept = {k: v for k, v in changes.items() if v is not None}
    recipe = dataclasses.replace(RECIPES[name], **kept)
    if recipe.schedule not in SCHEDULES:
        raise UserError(
            f"unknown schedule '{recipe.schedule}'; use {' or '.join(SCHEDULES)}", field="schedule"
        )
    for name, low in (("lr", None), ("momentum", 0), ("weight_decay", 0), ("warmup", 0)):
        _check_at_least(name, getattr(recipe, name), low)
    if recipe.nesterov and recipe.momentum == 0:
        raise UserError("Nesterov momentum needs a momentum above 0", field="nesterov")
    if not 0 <= recipe.random_erasing <= 1:
        raise UserError(f"must be in [0, 1], got {recipe.random_erasing}", field="random_erasing")
    if recipe.ema != 0 and not 0 < recipe.ema < 1:
        raise UserError(f"must be in (0, 1), or 0 for none; got {recipe.ema}", field="ema")
    if not isinstance(recipe.batch, int) or recipe.batch < 1:
        raise UserError(
            f"must be a whole number of at least 1, got {recipe.batch!r}", field="batch"
        )
    if not 0 <= recipe.label_smoothing < 1:
        raise UserError(f"must be in [0, 1), got {recipe.label_smoothing}", field="label_smoothing")
    return recipe


def _check_at_least(name: str, value: Any, low: float | None) -> None:
    """``value`` a finite number of at least ``low`` (above 0 when ``low`` is None): SGD and the
    schedule raise a bare ValueError, or train on a NaN, otherwise."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < (low or 0) or (low is None and value == 0):
        wanted = "above 0" if low is None else f"at least {low}"
        raise UserError(f"must be a finite number {wanted}, got {value!r}", field=name)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only: BatchNorm scales and shifts and all biases
    (the 1-D tensors) are left undecayed ("no bias decay", He et al. 2019, Bag of Tricks §3.1)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        param_groups(model, recipe.weight_decay),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
    )


def lr_factor(recipe: Recipe, epochs: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate at optimiser ``step`` as a fraction of ``recipe.lr``.

    ``multistep`` changes only at epoch boundaries, exactly like the seed's MultiStepLR stepped
    once per epoch; ``cosine`` decays per step to 0 at the end of the run. Warm-up ramps
    linearly from 1/(warmup·steps_per_epoch) over the first ``warmup`` epochs.
    """
    epoch = step / steps_per_epoch
    if recipe.schedule == "multistep":
        factor = recipe.gamma ** sum(epoch >= m for m in recipe.milestones)
    elif recipe.schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * min(epoch / epochs, 1.0)))
    else:
        raise UserError(f"unknown schedule '{recipe.schedule}'", field="schedule")
    if recipe.warmup > 0:
        factor *= min(1.0, (step + 1) / (recipe.warmup * steps_per_epoch))
    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer, recipe: Recipe, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped after every optimiser step (see :func:`lr_factor`)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(recipe, epochs, step, steps_per_epoch)
    )
