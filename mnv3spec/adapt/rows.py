"""What sizes a proposal: the latency a child saves beside its parent, predicted from the rows
that differ between them, each exported alone to the search's runtime and timed there (the
paper's per-layer look-up table, built on the runtime that ships the network rather than in
multiply-adds).

Exporting a whole network to a phone runtime is the slow part of a search (XNNPACK's lowering
takes seconds per network); a row lowers in a fraction of that, and a row once exported is kept
for the rest of the process, so a step after the first exports only the rows its moves change.
The rows of a comparison are timed in the same alternating rounds, so load cancels as it does
for whole networks. The figure that decides a step is still the whole network, measured
(:func:`.timing.measure_pair`); this one only says how far each move must shrink.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch

from ..latency.measure import percentiles, time_rounds
from ..latency.predict import Key, row_keys
from ..model.builder import SpecNet, build
from ..spec.resolve import Spec
from .timing import LatencySettings, Measured, threads_of

Runner = Callable[[], Any]


class RowTimer:
    """Rows of deployed networks, each exported once per process to one runtime, by their key
    (operator, shapes, settings: :func:`~mnv3spec.latency.predict.row_keys`)."""

    def __init__(self, settings: LatencySettings) -> None:
        self.settings = settings
        self.runners: dict[Key, Runner] = {}

    def saving(self, child: Spec, parent: Spec) -> Measured:
        """The rows that differ between ``child`` and ``parent`` (networks with the same rows,
        some of them narrower), the parent's and the child's timed together: the sum of the
        child's medians as ``median_ms`` (and of their spreads), the parent's as ``parent_ms``;
        what the child saves is their difference."""
        with threads_of(self.settings):
            return self._saving(child, parent)

    def _saving(self, child: Spec, parent: Spec) -> Measured:
        load, started = os.getloadavg()[0], time.perf_counter()
        nets = {"parent": build(parent).eval(), "child": build(child).eval()}
        keys = {name: self._keys(net) for name, net in nets.items()}
        pairs = zip(keys["parent"], keys["child"], strict=True)
        differ = [i for i, (a, b) in enumerate(pairs) if a != b]
        runners = {
            f"{name} {i}": self._runner(nets[name], i, keys[name][i])
            for i in differ
            for name in nets
        }
        s = self.settings
        times = time_rounds(runners, s.runs, s.warmup, "cpu")
        stats = {k: percentiles(v) for k, v in times.items()}
        mine, theirs = (sum(stats[f"{n} {i}"][0] for i in differ) for n in ("child", "parent"))
        spread = sum(stats[f"child {i}"][2] for i in differ)
        return Measured(mine, spread, load, time.perf_counter() - started, theirs)

    def _keys(self, net: SpecNet) -> list[Key]:
        return row_keys(net, "cpu", self.settings.runtime, 1)

    def _runner(self, net: SpecNet, index: int, key: Key) -> Runner:
        if key not in self.runners:
            from ..latency.backends import prepare

            plan = net.plans[index]
            x = torch.randn(1, *plan.in_shape)
            row = net.layers.get_submodule(plan.name)
            self.runners[key] = prepare(row, self.settings.runtime, x)[0]
        return self.runners[key]
