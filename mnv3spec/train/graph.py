"""A whole training step — forward, loss, backward and the SGD update — captured once as a CUDA
graph and replayed, so a small network trains at the GPU's speed rather than Python's.

MobileNets at CIFAR size launch hundreds of tiny kernels per step; eager PyTorch spends more time
launching them than the GPU spends running them. A CUDA graph records the step's kernels once
and replays them with one launch (``torch.cuda.CUDAGraph``, "whole-network capture" in PyTorch's
CUDA semantics notes). What a replay needs, and what this module provides:

- static shapes: the loop drops the last partial batch, as the seed's loader did;
- static buffers: each batch is copied into the tensors the graph was captured on;
- no host synchronisation inside the step: the learning rate lives in a device tensor the
  schedule fills (:class:`DeviceLR`), and the SGD update is written with tensor arithmetic
  (:func:`sgd_update`) because ``torch.optim.SGD`` turns a tensor learning rate into a Python
  number (a sync) on its default path;
- a few eager warm-up steps on a side stream first, so cuDNN picks its algorithms and the
  optimiser's momentum buffers exist before capture.

A step that cannot be captured runs eagerly, and one line says why: :func:`why_not_captured`
for what is known up front (the CPU, fp16 with a loss scaler, DistributedDataParallel over
several processes, ``--compile``), :attr:`GraphStep.failed` for what the warm-up finds (a step
that waits for the device, a shape that depends on the data) or a capture CUDA refused. The
arithmetic is the same either way, so a captured run follows the eager run's loss curve.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch

WARMUP_STEPS = 3  # eager steps before capture: cuDNN autotuning, momentum buffers, allocator

Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def why_not_captured(
    device: torch.device, *, enabled: bool, scaler_enabled: bool, processes: int, compiled: bool
) -> str | None:
    """None when the step can be captured, else the reason it runs eagerly (one line)."""
    if not enabled:
        return "off (no_graph)"
    if device.type != "cuda":
        return f"not captured on {device.type} (CUDA graphs need a GPU)"
    if scaler_enabled:
        return "not captured: fp16 with a loss scaler checks for inf on the host each step"
    if processes > 1:
        return "not captured: DistributedDataParallel over several processes"
    if compiled:
        return "not captured: compile manages its own graphs"
    return None


class DeviceLR:
    """The learning rate of every parameter group as one device scalar, refreshed from the groups
    (where the schedule writes floats) before each step: a host-to-device fill, no sync."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        self.optimizer = optimizer
        self.values = torch.zeros(len(optimizer.param_groups), device=device)

    def refresh(self) -> None:
        lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        self.values.copy_(torch.tensor(lrs), non_blocking=True)


@torch.no_grad()
def sgd_update(optimizer: torch.optim.SGD, lr: torch.Tensor) -> None:
    """``optimizer.step()`` for SGD (momentum, dampening 0, weight decay, Nesterov) with the
    learning rate of group ``i`` in ``lr[i]``, using only tensor arithmetic, so a CUDA graph can
    capture it. Reads and writes the optimiser's own ``momentum_buffer`` state, so checkpoints,
    resume and the eager path see one optimiser."""
    for i, group in enumerate(optimizer.param_groups):
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        grads = [p.grad for p in params]
        if group["weight_decay"]:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        if group["momentum"]:
            bufs = [optimizer.state[p].get("momentum_buffer") for p in params]
            if any(b is None for b in bufs):  # the first step: the buffers start as the grads
                bufs = [g.detach().clone() for g in grads]
                for p, b in zip(params, bufs, strict=True):
                    optimizer.state[p]["momentum_buffer"] = b
            else:
                torch._foreach_mul_(bufs, group["momentum"])
                torch._foreach_add_(bufs, grads)
            nesterov = group["nesterov"]
            grads = torch._foreach_add(grads, bufs, alpha=group["momentum"]) if nesterov else bufs
        torch._foreach_add_(params, torch._foreach_mul(grads, -lr[i]))
    # What optimizer.step() records, so the scheduler does not warn it was stepped first.
    optimizer._opt_called = True  # type: ignore[attr-defined]


class GraphStep:
    """``step`` captured as one CUDA graph after :data:`WARMUP_STEPS` eager steps, then replayed
    on each batch copied into its static inputs. ``warmup`` is what the eager warm-up and the
    capture took, for an honest epoch time: the first step apart, since it pays for cuDNN's
    autotuning and for loading each kernel on first use."""

    def __init__(self, step: Step) -> None:
        self.step = step
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.outputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.warmup: dict[str, float] = {}  # seconds: first step, later eager steps, capture
        self.failed: str | None = None  # why the step is not captured, in one line

    @property
    def warmup_seconds(self) -> float:
        return sum(self.warmup.values())

    def warmup_line(self) -> str:
        """``warm-up: 10.9 s (first step 10.1 s, 2 more eager steps 0.1 s, CUDA graph capture
        0.7 s), part of this epoch's time``."""
        parts = {
            "first step": "first step",
            "eager steps": f"{WARMUP_STEPS - 1} more eager steps",
            "capture": "CUDA graph capture",
        }
        detail = ", ".join(f"{parts[k]} {v:.1f} s" for k, v in self.warmup.items())
        return f"warm-up: {self.warmup_seconds:.1f} s ({detail}), part of this epoch's time"

    def fits(self, x: torch.Tensor, labels: torch.Tensor) -> bool:
        """Whether a batch can go through the graph: before capture any can (the first full
        batches warm it up); after, only one of the captured shape; none once capture failed."""
        return self.failed is None and (
            self.inputs is None
            or (x.shape == self.inputs[0].shape and labels.shape == self.inputs[1].shape)
        )

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.graph is None:
            return self._warm_up(x, labels)
        assert self.inputs is not None and self.outputs is not None
        self.inputs[0].copy_(x, non_blocking=True)
        self.inputs[1].copy_(labels, non_blocking=True)
        self.graph.replay()
        return tuple(t.clone() for t in self.outputs)

    def _warm_up(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """An eager step, or the capture and the first replay. A step that cannot be captured
        runs eagerly, and :attr:`failed` says why, so the caller runs every later step eagerly
        too. The last eager step watches for host synchronisation (an op that waits for the
        device, a shape that depends on the data), which CUDA would refuse to capture: such a
        step is never captured, since in some torch releases a failed capture leaves the memory
        allocator believing it still runs (pytorch#180395). A capture that fails for another
        reason is caught."""
        start = time.perf_counter()
        phase = "first step" if self.calls == 0 else "eager steps"
        out = None
        if self.calls == WARMUP_STEPS - 1:  # autotuning, which synchronises, is done by now
            out, waited = self._eager_watching_syncs(x, labels)
            if waited:
                self.failed = f"not captured: the step waits for the GPU ({waited})"
        elif self.calls >= WARMUP_STEPS and self.failed is None:
            phase = "capture"
            try:
                self._capture(x, labels)
            except RuntimeError as e:
                self.failed = f"not captured: {str(e).strip().splitlines()[0]}"
                self.graph = self.inputs = self.outputs = None
        if out is None and self.graph is None:
            out = self._eager_on_side_stream(x, labels)
        torch.cuda.synchronize()
        self.warmup[phase] = self.warmup.get(phase, 0.0) + time.perf_counter() - start
        self.calls += 1
        return out if out is not None else self(x, labels)

    def _eager_on_side_stream(self, x: torch.Tensor, labels: torch.Tensor) -> tuple:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.step(x, labels)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _eager_watching_syncs(self, x: torch.Tensor, labels: torch.Tensor) -> tuple:
        """An eager step under CUDA's sync debug mode ("warn"): its outputs, and the first
        synchronisation's message (None when the step never waited)."""
        before = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings():
            # torch's notice, once a process, that the mode "does not yet detect all
            # synchronizing operations" is no wait of the step's (it held every step eager)
            warnings.simplefilter("ignore")
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = self._eager_on_side_stream(x, labels)
        finally:
            torch.cuda.set_sync_debug_mode(before)
        syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
        return out, (syncs[0].strip().splitlines()[0] if syncs else None)

    def _capture(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Record one step on static copies of the batch; it runs at the first replay. The
        outer stream context puts the stream back even when CUDA refuses the capture."""
        self.inputs = (x.clone(), labels.clone())
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(torch.cuda.current_stream()), torch.cuda.graph(graph):
            self.outputs = self.step(*self.inputs)
        self.graph = graph
