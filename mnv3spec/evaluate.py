"""Top-1 / top-5 / loss of a model on a labelled split, and the device rules training shares."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_model
from .data import load_dataset, loader, normalize, worker_count
from .errors import DataError, UserError


@dataclass(frozen=True)
class EvalResult:
    loss: float
    top1: float  # percent
    top5: float  # percent; top-k with k = min(5, classes)
    images: int


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


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
) -> EvalResult:
    """Evaluate ``model`` on uint8 image batches with their labels (from memory or decoded by
    :func:`mnv3spec.data.loader`, on any device). Under torch.distributed each rank passes its
    own shard and every rank gets the result over all of them."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    dtype = amp_dtype(device)
    for x, y in batches:
        x = normalize(x.to(device, non_blocking=True), mean, std, channels_last=True)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x).float()
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices == y[:, None]
        sums += torch.stack(
            [
                F.cross_entropy(logits, y, reduction="sum").double(),
                hits[:, 0].sum().double(),
                hits.any(dim=1).sum().double(),
                torch.tensor(len(y), dtype=torch.float64, device=device),
            ]
        )
    model.train(was_training)
    loss, top1, top5, n = reduce_sums(sums.tolist(), device)
    n = max(n, 1)
    return EvalResult(loss / n, 100 * top1 / n, 100 * top5 / n, int(n))


def evaluate_checkpoint(
    path: str | Path,
    *,
    data: str | None = None,
    data_dir: str = "./data",
    batch_size: int = 256,
    device: str = "auto",
) -> EvalResult:
    """Rebuild the model from a weights file alone; evaluate it on ``data``'s validation split
    (by default the data it was trained on, as recorded in the file, else CIFAR-100)."""
    dev = pick_device(device)
    model, meta = load_model(path, dev)
    model = model.to(memory_format=torch.channels_last)
    data = data or meta["extra"].get("data", "cifar100")
    ds = load_dataset(data, data_dir, meta["resolution"], num_classes=len(meta["classes"]))
    if list(ds.classes) != list(meta["classes"]):
        raise DataError(
            f"the checkpoint was trained on {len(meta['classes'])} classes "
            f"({_preview(meta['classes'])}) but '{data}' has {len(ds.classes)} "
            f"({_preview(ds.classes)}); evaluate it on the data it was trained for",
            file=str(path),
        )
    val = loader(
        ds.val_images,
        ds.val_labels,
        batch_size,
        shuffle=False,
        workers=worker_count(),
        pin_memory=dev.type == "cuda",
    )
    return evaluate(model, val, mean=meta["mean"], std=meta["std"], device=dev)


def _preview(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (", …" if len(names) > n else "")
