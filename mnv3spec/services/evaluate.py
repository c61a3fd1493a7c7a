"""Top-1 / top-5 / loss of a model on a labelled split (validation during training, and the measure
that ``eval`` and ``quantize`` report), whatever runs it: a network, or a function of a batch such
as a runtime's loaded program."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batches import normalize
from .device import amp_dtype, no_autotune, reduce_sums


@dataclass(frozen=True)
class EvalResult:
    loss: float
    top1: float  # percent
    topk: float  # percent, top-k with k = min(5, classes)
    images: int
    k: int = 5  # the k of ``topk``


@torch.no_grad()
@no_autotune()
def evaluate(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
) -> EvalResult:
    """Evaluate ``model`` on uint8 image batches with their labels (from memory or decoded by
    :func:`mnv3spec.data.batches.loader`, on any device). ``model`` is a network, switched to
    eval mode for the pass and handed channels_last batches, or any other function of a
    normalised batch, handed it contiguous (a runtime's session, or a PT2E graph, which has no
    eval mode). Under torch.distributed each rank passes its own shard and every rank gets the
    result over all of them."""
    network = isinstance(model, nn.Module)
    was_training = network and model.training
    if network:
        model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, topk, count
    dtype, k = amp_dtype(device), 5
    for x, y in batches:
        x = normalize(x.to(device, non_blocking=True), mean, std, channels_last=network)
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
    if network:
        model.train(was_training)
    loss, top1, topk, n = reduce_sums(sums.tolist(), device)
    n = max(n, 1)
    return EvalResult(loss / n, 100 * top1 / n, 100 * topk / n, int(n), k)
