"""Where and how training and evaluation run: the device, mixed precision, and this process's
place in a torchrun launch (with the few collectives the runners need)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UserError


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA if available, else MPS, else CPU. Under torchrun each rank takes the GPU
    of its ``local_rank``."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if name not in available:
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda or mps", field="--device")
    if not available[name]:
        raise UserError(f"--device {name} is not available on this machine; use --device auto")
    return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA only: bf16 where the GPU has it, else fp16 (with a grad scaler)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def reduce_sums(values: list[float], device: torch.device) -> list[float]:
    """Sum per-rank counters over all ranks (identity without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun launch (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # processes on this machine

    @classmethod
    def from_env(cls) -> World:
        def get(name: str, default: int) -> int:
            return int(os.environ.get(name, default))

        return cls(
            get("RANK", 0), get("WORLD_SIZE", 1), get("LOCAL_RANK", 0), get("LOCAL_WORLD_SIZE", 1)
        )

    @property
    def main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        if self.size > 1:
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def stop(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block before the others: it downloads what they then find on disk."""
        if not self.main:
            dist.barrier()
        yield
        if self.main and self.size > 1:
            dist.barrier()

    def min(self, value: int, device: torch.device) -> int:
        """The smallest ``value`` over all ranks."""
        if self.size == 1:
            return value
        t = torch.tensor(value, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t)

    def gather(self, value: Any) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.size == 1:
            return [value]
        out = [None] * self.size
        dist.all_gather_object(out, value)
        return out


def average_buffers(model: nn.Module, world: World) -> None:
    """Average BatchNorm running statistics over ranks at the end of an epoch. DDP copies rank 0's
    buffers to the others before each forward pass, which then updates them locally, so without
    this the ranks would end with (slightly) different statistics."""
    if world.size == 1:
        return
    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b.div_(world.size)


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names and bytes (sorted by name), to compare weights anywhere."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
