"""An exponential moving average of the weights (Polyak averaging; the EMA of TensorFlow's
MobileNet training and of timm's ``--model-ema``): a copy of the network whose every parameter and
floating buffer follows the trained one, ``average ← decay·average + (1 − decay)·weights``, after
each optimiser step. When it is on, the average is what a run evaluates and saves as its best and
last weights; the trained network goes on in ``resume.pt``.

The decay warms up as TensorFlow's ``ExponentialMovingAverage(num_updates=…)`` does,
``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so a short run is not dominated by the
random initial weights that a fixed 0.999 would keep for its first thousand steps.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def decay_after(decay: float, updates: int) -> float:
    """The decay used at update number ``updates`` (counting from 0)."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """The average of ``net``'s weights: a network of the same class, evaluated and saved."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(net).eval().requires_grad_(False)
        # (average, weights) tensor pairs, found once: training and resuming change both in place
        pairs = zip(self.module.state_dict().values(), net.state_dict().values(), strict=True)
        self._floats, self._others = [], []
        for pair in pairs:
            (self._floats if pair[0].is_floating_point() else self._others).append(pair)

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average towards the trained network's weights; integer buffers
        (BatchNorm's step count) are copied."""
        keep = decay_after(self.decay, self.updates)
        for mine, theirs in self._floats:
            mine.lerp_(theirs, 1 - keep)
        for mine, theirs in self._others:
            mine.copy_(theirs)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, saved: dict) -> None:
        self.module.load_state_dict(saved["weights"])
        self.updates = int(saved["updates"])
