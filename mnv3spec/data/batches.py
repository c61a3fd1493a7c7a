"""Batches of a split and their augmentation, as whole-batch tensor ops on the batch's device.

Following airbench, images stay in one tensor (on the GPU if the caller moves them there) and every
step is a handful of tensor ops, so there are no worker processes and no per-image Python in the
training loop. :class:`~mnv3spec.data.folders.FolderImages` are decoded batch by batch instead, in
DataLoader workers (:func:`loader`); their batches come in the same order and reach the same tensor
ops, so training does not tell them apart.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..errors import DataError
from .folders import FolderImages

if TYPE_CHECKING:
    from .datasets import Dataset

MAX_WORKERS = 8  # decoding processes per training process, for folders too large for memory


def epoch_order(
    n: int,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """This rank's indices into ``n`` images for one pass: its batches are consecutive slices of
    ``batch_size`` (the last one shorter unless ``drop_last``).

    Like DistributedSampler: all ranks must pass generators seeded alike, so they draw the same
    permutation; it is padded by wrapping around (or trimmed, with ``drop_last``) to a multiple
    of ``world_size``, and rank ``r`` takes every ``world_size``-th index from ``r``. Every rank
    thus yields the same number of batches, and DDP never waits on a rank that has stopped.
    """
    if batch_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad batch order: {batch_size=}, {rank=}, {world_size=}")
    if shuffle:
        device = generator.device if generator is not None else "cpu"
        order = torch.randperm(n, generator=generator, device=device)
    else:
        order = torch.arange(n)
    if world_size > 1:
        total = (n // world_size if drop_last else -(-n // world_size)) * world_size
        order = order.repeat(-(-total // n) if n else 0)[:total][rank::world_size]
    return order[: len(order) - len(order) % batch_size] if drop_last else order


def batches(
    images: torch.Tensor | FolderImages,
    labels: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` batches in :func:`epoch_order` (the keywords are its own);
    :class:`FolderImages` are decoded here, in this process."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    order = epoch_order(
        len(labels),
        batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
    )
    on_images, on_labels = order.to(images.device), order.to(labels.device)
    for start in range(0, len(order), batch_size):
        end = start + batch_size
        yield images[on_images[start:end]], labels[on_labels[start:end]]


def loader(
    images: torch.Tensor | FolderImages,
    labels: torch.Tensor,
    batch_size: int,
    *,
    workers: int = 0,
    pin_memory: bool = False,
    **order: Any,
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of a split, once per pass over it (an epoch), as :func:`batches` yields them
    (``order``: its keywords). Tensors, and :class:`FolderImages` with no ``workers``, go through
    :func:`batches`; otherwise a DataLoader whose ``workers`` decode whole batches, the same
    indices in the same order, with the order still drawn here from ``order["generator"]``. Its
    workers start with each pass and end with it, so a process's train and validation loaders
    never run more than ``workers`` at once; ``pin_memory`` speeds up copies to a CUDA device."""
    if isinstance(images, torch.Tensor) or workers == 0:
        return _Passes(images, labels, batch_size, order)
    decoded = torch.utils.data.DataLoader(
        _Decoder(images, labels),
        sampler=_BatchIndices(len(labels), batch_size, order),
        batch_size=None,  # the sampler yields whole batches
        num_workers=workers,
        pin_memory=pin_memory,
        generator=torch.Generator(),  # seeds the workers; else one draw from torch's (dropout's)
    )
    return _Reraise(decoded)


def rank_loaders(
    data: Dataset,
    batch: int,
    val_batch: int,
    *,
    generator: torch.Generator,
    drop_last: bool,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
    pin_memory: bool = False,
) -> tuple[Iterable, Iterable]:
    """One process's batches of ``data``: training (its shard of a fresh permutation each epoch,
    drawn from ``generator``, the same on every rank) and validation (its shard, in order, in
    batches of ``val_batch``). Decoding workers live for one pass, never both sets at once."""
    decoding = {"workers": workers, "pin_memory": pin_memory}
    train = loader(
        data.train_images,
        data.train_labels,
        batch,
        shuffle=True,
        generator=generator,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
        **decoding,
    )
    shard = slice(rank, None, world_size)
    val_images, val_labels = data.val_images[shard], data.val_labels[shard]
    return train, loader(val_images, val_labels, val_batch, shuffle=False, **decoding)


@dataclass(frozen=True)
class _Passes:
    """Re-iterable :func:`batches`: each pass draws its order anew."""

    images: torch.Tensor | FolderImages
    labels: torch.Tensor
    batch_size: int
    order: dict[str, Any]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return batches(self.images, self.labels, self.batch_size, **self.order)


@dataclass(frozen=True)
class _BatchIndices:
    """A DataLoader sampler yielding the index list of each batch of :func:`epoch_order`. The
    order is drawn at the first batch, not by ``iter()``, which a DataLoader calls twice."""

    n: int
    batch_size: int
    order: dict[str, Any]

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(self.n, self.batch_size, **self.order)
        for batch in order.split(self.batch_size):
            yield batch.tolist()


@dataclass(frozen=True)
class _Decoder(torch.utils.data.Dataset):
    """Runs in the workers: one batch decoded per index list. A DataError is handed back as the
    batch, since the DataLoader would re-raise it with the worker's traceback in its message."""

    images: FolderImages
    labels: torch.Tensor

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor] | DataError:
        try:
            return self.images[indices], self.labels[indices]
        except DataError as e:
            return e


@dataclass(frozen=True)
class _Reraise:
    """Iterates a DataLoader over :class:`_Decoder`, raising the DataErrors it hands back."""

    batches: torch.utils.data.DataLoader

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.batches:
            if isinstance(batch, DataError):
                raise batch
            yield batch


def worker_count(processes: int = 1) -> int:
    """Decoding workers for each of ``processes`` training processes on this machine: its CPU
    cores shared out, at least one each and at most ``MAX_WORKERS``."""
    return max(1, min(MAX_WORKERS, (os.cpu_count() or 1) // processes))


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on ``device`` without waiting for the device: a blocking copy to a GPU
    (what ``.to(device)`` and ``torch.tensor(..., device=...)`` do) drains the stream first, so a
    training step that made one per batch could never queue the next step while the GPU runs
    this one. From pageable memory CUDA stages the bytes before returning, so ``t`` may be freed
    at once (other devices copy as before)."""
    return t.to(device, non_blocking=torch.device(device).type == "cuda")


def augment(
    images_u8: torch.Tensor,
    *,
    padding: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crop with zero padding plus random horizontal flip, per image, as one gather.

    The batched equivalent of torchvision's ``RandomCrop(size, padding)`` and
    ``RandomHorizontalFlip()``: each image is shifted by up to ``padding`` pixels each way (the
    uncovered border is zero) and mirrored with probability ½. Stays uint8, on the same device.
    Random numbers are drawn on the generator's device, so a CPU generator gives the same
    augmentation whichever device the images are on.
    """
    if padding < 0:
        raise ValueError(f"padding must be ≥ 0, got {padding}")
    n, c, h, w = images_u8.shape
    device = images_u8.device
    draw_on = generator.device if generator is not None else device
    shift = torch.randint(0, 2 * padding + 1, (2, n, 1), generator=generator, device=draw_on)
    mirror = torch.rand(n, 1, generator=generator, device=draw_on) < 0.5
    shift, mirror = to_device(shift, device), to_device(mirror, device) & flip
    padded = images_u8.new_zeros((n, c, h + 2 * padding, w + 2 * padding))
    padded[:, :, padding : padding + h, padding : padding + w] = images_u8
    rows = shift[0] + torch.arange(h, device=device)
    cols = shift[1] + torch.arange(w, device=device)
    cols = torch.where(mirror, cols.flip(1), cols)
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def random_erase(
    images_u8: torch.Tensor,
    p: float,
    *,
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 3.3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020, "Random Erasing Data Augmentation", whose Fashion-MNIST
    results it improved): with probability ``p`` each image gets one rectangle of random values,
    covering a fraction ``area`` of it with aspect ratio in ``ratio`` (log-uniform), as one
    masked select over the batch. A rectangle larger than the image is clipped to it rather
    than drawn again. Stays uint8; draws on the generator's device, as :func:`augment`."""
    if not 0 <= p <= 1:
        raise ValueError(f"random erasing probability must be in [0, 1], got {p}")
    n, _, h, w = images_u8.shape
    device = images_u8.device
    draw_on = generator.device if generator is not None else device
    u = torch.rand(5, n, generator=generator, device=draw_on)
    noise = torch.randint(0, 256, images_u8.shape, generator=generator, device=draw_on)
    u, noise = to_device(u, device), to_device(noise.to(torch.uint8), device)
    frac = area[0] + (area[1] - area[0]) * u[0]
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1])
    eh = (frac * h * w * aspect).sqrt().round().clamp(1, h)
    ew = (frac * h * w / aspect).sqrt().round().clamp(1, w)
    top = (u[2] * (h - eh + 1)).floor()
    left = (u[3] * (w - ew + 1)).floor()
    rows = torch.arange(h, device=device)[None, :]
    cols = torch.arange(w, device=device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    mask = in_rows[:, :, None] & in_cols[:, None, :] & (u[4] < p)[:, None, None]
    return torch.where(mask[:, None], noise, images_u8)


def normalize(
    images_u8: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(x/255 - mean) / std`` per channel, as torchvision's Normalize after ToTensor.

    Computed in float32 (one multiply-add) and only then cast to ``dtype``, so half precision
    loses nothing extra; ``channels_last`` lays the result out for faster convolutions on GPU.
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = images_u8.to(torch.float32, memory_format=fmt)
    mean_t = to_device(torch.tensor(mean, dtype=torch.float32), x.device).view(1, -1, 1, 1)
    std_t = to_device(torch.tensor(std, dtype=torch.float32), x.device).view(1, -1, 1, 1)
    x.mul_(1 / (255 * std_t)).sub_(mean_t / std_t)
    return x if dtype == torch.float32 else x.to(dtype)


def training_batch(
    images_u8: torch.Tensor,
    *,
    flip: bool,
    erasing: float,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    generator: torch.Generator,
) -> torch.Tensor:
    """A batch as a training step takes it: cropped and flipped (:func:`augment`), erased with
    probability ``erasing`` (drawn only when above 0, so a recipe without it keeps its draws),
    normalised channels-last."""
    x = augment(images_u8, flip=flip, generator=generator)
    if erasing:
        x = random_erase(x, erasing, generator=generator)
    return normalize(x, mean, std, channels_last=True)
