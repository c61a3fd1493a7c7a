"""An exponential moving average of the weights (Polyak averaging; the EMA of TensorFlow's
MobileNet training and of timm's ``--model-ema``): a copy of the network whose every parameter and
floating buffer follows the trained one, ``average ← decay·average + (1 − decay)·weights``, after
each optimiser step. When it is on, the average is what a run evaluates and saves as its best and
last weights; the trained network goes on in ``resume.pt``.

The decay warms up as TensorFlow's ``ExponentialMovingAverage(num_updates=…)`` does,
``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so a short run is not dominated by the
random initial weights that a fixed 0.999 would keep for its first thousand steps.

The update is part of the training step (:mod:`.steps`): :meth:`WeightAverage.prepare` puts the
step's decay in a device scalar before the step, as :class:`~.graph.DeviceLR` does the learning
rate, and :meth:`WeightAverage.apply` is tensor arithmetic on it, so on a GPU the average is
captured and replayed with the rest of the step in one CUDA graph.
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
        device = next(iter(net.state_dict().values())).device
        self.keep = torch.zeros((), device=device)  # the next update's decay, on the device

    def prepare(self) -> None:
        """Before a step: the decay its update uses into :attr:`keep` (a fill: the host never
        waits for the device), and the update counted."""
        self.keep.fill_(decay_after(self.decay, self.updates))
        self.updates += 1

    @torch.no_grad()
    def apply(self) -> None:
        """The update :meth:`prepare` readied, in tensor arithmetic only (a CUDA graph can
        capture it): ``average ← keep·average + (1 − keep)·weights`` for every float tensor;
        integer buffers (BatchNorm's step count) are copied."""
        mine, theirs = [a for a, _ in self._floats], [w for _, w in self._floats]
        torch._foreach_mul_(mine, self.keep)
        torch._foreach_add_(mine, torch._foreach_mul(theirs, 1 - self.keep))
        for a, w in self._others:
            a.copy_(w)

    def state_dict(self) -> dict:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, saved: dict) -> None:
        self.module.load_state_dict(saved["weights"])
        self.updates = int(saved["updates"])
