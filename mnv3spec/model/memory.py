"""What a compiled network needs in memory at a batch size and resolution, estimated on the meta
device before anything is allocated, so a size that cannot fit is refused in one paragraph instead
of an allocator traceback (or minutes of swapping) later.

The estimate counts what PyTorch keeps: the weights (four copies when training: weights, gradients,
momentum and the optimiser's update), and the output of every layer for every image. Inference holds
about two layer outputs at once; training keeps them all for the backward pass, and the backward
pass needs as much again. It is deliberately rough (within a factor of about 2): it separates a
run that fits from one that needs 100 GB, which is what the check is for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from ..errors import UserError

FLOAT_BYTES = 4
HEADROOM = 0.8  # share of the available memory a run may plan to use


@dataclass(frozen=True)
class Activations:
    """Bytes of layer outputs for one image: all of them, and the largest single one."""

    total: int
    largest: int


def activations(model: nn.Module, resolution: int, in_channels: int = 3) -> Activations:
    """Sizes of every leaf module's output for one image, from a forward pass on the meta device
    (shapes only: free at any resolution, the model's weights untouched)."""
    sizes: list[int] = []

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        sizes.append(output.numel() * FLOAT_BYTES)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    shapes = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict().items()}
    image = torch.empty(1, in_channels, resolution, resolution, device="meta")
    was_training = model.training
    try:
        with torch.no_grad():
            functional_call(model.eval(), shapes, (image,))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    first = image.numel() * FLOAT_BYTES
    return Activations(first + sum(sizes), max([first, *sizes]))


def estimate(model: nn.Module, batch: int, resolution: int, *, training: bool) -> int:
    """Bytes a forward (and, when ``training``, backward and optimiser) pass of ``batch`` images
    at ``resolution``×``resolution`` needs, the weights included."""
    channels = model.spec.in_channels if hasattr(model, "spec") else 3
    weights = sum(p.numel() for p in model.parameters()) * FLOAT_BYTES
    act = activations(model, resolution, channels)
    if training:
        return 4 * weights + 2 * batch * act.total
    return weights + 3 * batch * act.largest


def available(device: torch.device | str = "cpu") -> int:
    """Bytes that can be allocated now: free GPU memory on CUDA, else the system's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # other systems: all of it


def check_fits(
    model: nn.Module,
    batch: int,
    resolution: int,
    *,
    training: bool,
    device: torch.device | str = "cpu",
    what: str = "this run",
) -> int:
    """The estimate of :func:`estimate`, or a :class:`UserError` when it exceeds
    ``HEADROOM`` × :func:`available` on ``device``, naming the batch and resolution to lower."""
    need = estimate(model, batch, resolution, training=training)
    have = available(device)
    if need > HEADROOM * have:
        raise UserError(
            f"{what} would need about {_gib(need)} of memory "
            f"({'training' if training else 'a forward pass'} at batch {batch}, "
            f"{resolution}×{resolution}) "
            f"but {torch.device(device).type} has {_gib(have)} available; "
            "lower the batch size, the resolution or the width"
        )
    return need


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"
