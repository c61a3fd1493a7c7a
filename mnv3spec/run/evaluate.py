"""Top-1 / top-5 / loss of a model on a labelled split (during training and for ``eval``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batches import loader, normalize, worker_count
from ..data.datasets import load_dataset
from ..errors import DataError
from ..model.memory import check_fits
from .int8 import is_int8_model, load_any
from .runtime import amp_dtype, no_autotune, pick_device, reduce_sums


@dataclass(frozen=True)
class EvalResult:
    loss: float
    top1: float  # percent
    top5: float  # percent, top-k with k = min(5, classes): the name stays, as in metrics.csv
    images: int
    k: int = 5  # the k of ``top5``


@torch.no_grad()
@no_autotune()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
) -> EvalResult:
    """Evaluate ``model`` on uint8 image batches with their labels (from memory or decoded by
      :func:`mnv3spec.data.batches.loader`, on any device). Under torch.distributed each rank
    passes its own shard and every rank gets the result over all of them."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    dtype, k = amp_dtype(device), 5
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
                torch.full((), len(y), dtype=torch.float64, device=device),
            ]
        )
    model.train(was_training)
    loss, top1, top5, n = reduce_sums(sums.tolist(), device)
    n = max(n, 1)
    return EvalResult(loss / n, 100 * top1 / n, 100 * top5 / n, int(n), k)


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
    int8 = is_int8_model(path)  # runs in ONNX Runtime on the CPU
    dev = torch.device("cpu") if int8 else pick_device(device)
    model, meta = load_any(path, dev)
    if not int8:
        model = model.to(memory_format=torch.channels_last)
        check_fits(model, batch_size, meta["resolution"], training=False, device=dev, what="eval")
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
