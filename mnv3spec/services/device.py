"""Where and how training and evaluation run: the device, mixed precision, CPU threads, torch's
process-wide switches, and this process's place in a torchrun launch (with the few collectives the
runners need)."""

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
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda or mps", field="device")
    if not available[name]:
        raise UserError(f"{name} is not available on this machine; use auto", field="device")
    return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA only: bf16 where the GPU has it, else fp16 (with a grad scaler)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def thread_count(local_size: int = 1, environ: Mapping[str, str] = os.environ) -> int:
    """Intra-op CPU threads for one process of ``local_size`` on this machine.

    ``OMP_NUM_THREADS``, when set to a positive integer, wins: it is the user's choice (and the
    one torchrun makes). Otherwise the threads torch would take alone (one per core) are split
    over the processes of a launch: each process sizing its pool for the whole machine
    oversubscribes the cores, and two CPU trainings on 2 cores then run many times slower, not
    2× (docs/measurements.md). Independent runs that share a machine cannot see each other:
    give each ``OMP_NUM_THREADS`` = cores ÷ runs.
    """
    value = environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, torch.get_num_threads() // max(1, local_size))


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """``threads`` CPU threads for torch in the block (None: as they are), then as before. The
    runtimes take torch's count as they load a program (ExecuTorch, ONNX Runtime, LiteRT), so a
    program loaded in the block keeps it."""
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def torch_settings(*, threads: int, deterministic: bool, benchmark: bool) -> Iterator[None]:
    """Torch's process-wide switches for one run, all set here and restored after it: the CPU
    thread count (:func:`cpu_threads`), deterministic algorithms, and cuDNN's autotuner
    (``benchmark``)."""
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        with cpu_threads(threads):
            torch.use_deterministic_algorithms(deterministic)
            torch.backends.cudnn.benchmark = benchmark
            yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


@contextmanager
def no_autotune() -> Iterator[None]:
    """cuDNN's autotuner (``benchmark``) off for the block, then as it was. The autotuner times
    every algorithm of every convolution at each new input shape, once per shape: worth it for
    the training batch met thousands of times, not for a shape met once an epoch (the short
    last batch) or a validation pass, where cuDNN's heuristics pick at once."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


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

    @contextmanager
    def joined(self, device: torch.device) -> Iterator[None]:
        """The block runs inside the launch's process group (none without torchrun)."""
        if self.size > 1:
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        try:
            yield
        finally:
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
