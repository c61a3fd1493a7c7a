"""Datasets by name: CIFAR (:mod:`mnv3spec.data.cifar`), an image folder
(:mod:`mnv3spec.data.folders`) or synthetic images, each decoded once into
uint8 tensors and handed to training as one
:class:`Dataset`. Their batches and augmentation are :mod:`mnv3spec.data.batches`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError
from ..files import shown
from . import folders
from .cifar import SOURCES, read_cifar
from .folders import IMAGENET_MEAN, IMAGENET_STD, FolderImages, read_folder
from .idx import SOURCES as IDX_SOURCES
from .idx import read_idx_dataset

DATASETS = (*SOURCES, *IDX_SOURCES, "synthetic")  # names that win over folders of the same name


_IMAGES = ("train_images", "val_images")


@dataclass
class Dataset:
    """A whole dataset as uint8 NCHW tensors on the CPU (or, for an image folder too large for
    memory, :class:`FolderImages`), plus what a checkpoint must remember."""

    train_images: torch.Tensor | FolderImages
    train_labels: torch.Tensor
    val_images: torch.Tensor | FolderImages
    val_labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]  # one per channel
    std: tuple[float, ...]
    name: str
    flip: bool = True  # whether training mirrors images (not digits)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    def as_rgb(self) -> Dataset:
        """Grey images as three equal channels, for a network that takes RGB input."""
        if self.channels != 1:
            return self
        rgb = {k: getattr(self, k).expand(-1, 3, -1, -1).contiguous() for k in _IMAGES}
        return dataclasses.replace(self, **rgb, mean=self.mean * 3, std=self.std * 3)

    def train_subset(self, count: int) -> Dataset:
        """The first ``count`` images of a fixed random order of the training split (the same
        draw for every run, so recipes compare on the same images); validation is kept whole."""
        total = len(self.train_labels)
        if not 1 <= count <= total or self.streamed:
            held = "" if not self.streamed else " (and only of data held in memory)"
            raise DataError(f"a training subset must be 1..{total} images{held}, got {count}")
        keep = torch.randperm(total, generator=torch.Generator().manual_seed(0))[:count]
        return dataclasses.replace(
            self, train_images=self.train_images[keep], train_labels=self.train_labels[keep]
        )

    def held_out(self, count: int) -> Dataset:
        """``count`` training images (a fixed random draw) as the validation split instead of
        the val split, the rest to train on: a score to choose by that never looks at the test
        images (NetAdapt's "held-out part of the training data")."""
        total = len(self.train_labels)
        if not 1 <= count < total or self.streamed:
            held = "" if not self.streamed else " (and only of data held in memory)"
            raise DataError(
                f"a holdout must be 1..{total - 1} of the {total} training images{held}, "
                f"got {count}",
                field="holdout",
            )
        order = torch.randperm(total, generator=torch.Generator().manual_seed(1))
        train, val = order[count:], order[:count]
        return dataclasses.replace(
            self,
            train_images=self.train_images[train],
            train_labels=self.train_labels[train],
            val_images=self.train_images[val],
            val_labels=self.train_labels[val],
        )

    @property
    def streamed(self) -> bool:
        """Whether images are decoded batch by batch rather than held in memory."""
        return isinstance(self.train_images, FolderImages)


def load_dataset(
    name: str,
    root: str | Path = "./data",
    resolution: int = 32,
    *,
    download: bool = True,
    synthetic_size: tuple[int, int] = (512, 128),
    num_classes: int = 10,
    seed: int = 0,
) -> Dataset:
    """Decode a dataset once into memory at ``resolution``×``resolution``.

    ``name`` is ``cifar100``, ``cifar10`` (archives looked for, or downloaded, under ``root``),
    ``fashion-mnist`` or ``mnist`` (grey, 1 channel; :mod:`mnv3spec.data.idx`),
    ``synthetic`` (``synthetic_size`` train/val images of ``num_classes`` classes) or a folder
    with ``train/<class>/`` and ``val/<class>/`` (names win: write ``./cifar10`` for a folder).
    Nothing is cached on disk beyond the official files. A folder whose decoded size fails
    :func:`mnv3spec.data.folders.fits_in_memory` comes as :class:`FolderImages`, decoded batch by
    batch; CIFAR resized that large is refused with a DataError.
    """
    if resolution < 1:
        raise DataError(f"resolution must be a positive number of pixels, got {resolution}")
    check_name(name, root)
    if name in SOURCES:
        src = SOURCES[name]
        train, val, classes = read_cifar(src, Path(root), resolution, download)
        return Dataset(*train, *val, classes, src.mean, src.std, name)
    if name in IDX_SOURCES:
        idx = IDX_SOURCES[name]
        train, val = read_idx_dataset(idx, Path(root), resolution, download)
        return Dataset(*train, *val, list(idx.classes), idx.mean, idx.std, name, idx.flip)
    if name == "synthetic":
        return _synthetic(synthetic_size, num_classes, resolution, seed)
    train, val, classes = read_folder(Path(name), resolution)
    return Dataset(*train, *val, classes, IMAGENET_MEAN, IMAGENET_STD, str(Path(name)))


def native_resolution(name: str) -> int | None:
    """The resolution a named dataset ships at (None for folders and synthetic data)."""
    if name in SOURCES:
        return 32
    if name in IDX_SOURCES:
        return 28
    return None


def check_name(name: str, root: str | Path | None = None) -> None:
    """Refuse a ``name`` that is neither a dataset nor a folder, reading nothing: training checks
    this on every process before they wait for each other. With ``root`` (the data root), a
    named dataset's folders there must be folders, or none yet: a file in the way is named now,
    not met as an OSError after the network is built."""
    if name not in DATASETS and not Path(name).is_dir():
        choices = ", ".join(DATASETS)
        raise DataError(f"unknown dataset {name!r}: use one of {choices}, or an existing folder")
    source = SOURCES.get(name) or IDX_SOURCES.get(name)
    if root is not None and source is not None:
        for path in (Path(root), Path(root) / source.folder):
            _check_folder(path)


def _check_folder(path: Path) -> None:
    """``path`` and every part of it that exists is a folder (the rest can be created)."""
    for part in (path, *path.parents):
        if os.path.lexists(part):
            if not part.is_dir():
                raise DataError(
                    "is a file, not a folder; the data root holds one folder per dataset: give "
                    f"another data root, or move {shown(part)} away",
                    file=shown(part),
                    field="data_dir",
                )
            return


def _synthetic(sizes: tuple[int, int], num_classes: int, resolution: int, seed: int) -> Dataset:
    """Noise around one colour per class: learnable, so a smoke test can see the loss fall."""
    if num_classes < 1 or min(sizes) < 1:
        raise DataError(f"synthetic data needs ≥1 class and ≥1 image per split, got {sizes}")
    count = sum(sizes)
    if not folders.fits_in_memory(count, resolution):
        raise DataError(
            f"{count} synthetic images at {resolution}×{resolution} take "
            f"{count * 3 * resolution**2 / 2**30:.1f} GiB, more than "
            f"{folders.MEMORY_FRACTION:.0%} of this machine's RAM; lower the resolution"
        )
    g = torch.Generator().manual_seed(seed)
    colours = torch.randint(32, 224, (num_classes, 3, 1, 1), generator=g, dtype=torch.int16)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randperm(n, generator=g) % num_classes
        shape = (n, 3, resolution, resolution)
        noise = torch.randint(-48, 49, shape, generator=g, dtype=torch.int16)
        return (colours[labels] + noise).clamp_(0, 255).to(torch.uint8), labels

    train, val = split(sizes[0]), split(sizes[1])
    mean = train[0].float().mean(dim=(0, 2, 3)).div(255)
    std = train[0].float().std(dim=(0, 2, 3)).div(255)
    classes = [f"class{i}" for i in range(num_classes)]
    return Dataset(*train, *val, classes, tuple(mean.tolist()), tuple(std.tolist()), "synthetic")
