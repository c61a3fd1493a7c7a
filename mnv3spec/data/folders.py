"""Image folders (``train/<class>/``, ``val/<class>/``): their images decoded to uint8 once,
or, for a folder too large for memory, kept as a list of files (:class:`FolderImages`) and decoded
batch by batch. Also the rule for what is too large, which CIFAR's resize obeys too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MEMORY_FRACTION = 0.25  # largest share of physical RAM a decoded dataset may take in memory
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class FolderImages:
    """Image files standing in for their decoded uint8 N×3×R×R tensor, for a folder too large to
    hold decoded. It answers what the tensor would (``len``, ``shape``, ``nbytes``, ``device``,
    slicing) and indexing by a sequence or tensor of indices decodes those images, so
    :func:`mnv3spec.data.batches.batches` works on either."""

    files: tuple[Path, ...]
    resolution: int
    device: ClassVar[torch.device] = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), 3, self.resolution, self.resolution)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape)

    def __getitem__(
        self, index: slice | Sequence[int] | torch.Tensor
    ) -> FolderImages | torch.Tensor:
        if isinstance(index, slice):
            return FolderImages(self.files[index], self.resolution)
        indices = index.tolist() if isinstance(index, torch.Tensor) else index
        return torch.stack([decode_image(self.files[i], self.resolution) for i in indices])


def decode_image(path: Path, resolution: int) -> torch.Tensor:
    """One image file as uint8 3×R×R: any mode (grey, RGBA, palette) to RGB, the first frame of an
    animation, shorter side scaled to ``resolution`` and the centre cropped (``ImageOps.fit``,
    bilinear). Training on folders and ``infer`` share it, so both see the same pixels."""
    try:
        with Image.open(path) as img:
            rgb = _eight_bits(img).convert("RGB")
            img = ImageOps.fit(rgb, (resolution,) * 2, Image.Resampling.BILINEAR)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read this image ({e})", file=str(path)) from e
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def _eight_bits(img: Image.Image) -> Image.Image:
    """Greyscale deeper than 8 bits scaled to 0–255, since ``convert("RGB")`` clips it (a 16-bit
    PNG turns white). Integer modes (I;16*, and I, which Pillow gives 16-bit PNGs and TIFFs too)
    are taken as 16-bit, F (float) as 0–1; other modes are returned as they are."""
    if img.mode.startswith("I;16") or img.mode == "I":
        scaled = np.asarray(img).astype(np.int64) >> 8
    elif img.mode == "F":
        scaled = np.asarray(img, dtype=np.float64) * 255
    else:
        return img
    return Image.fromarray(np.rint(np.nan_to_num(scaled)).clip(0, 255).astype(np.uint8))


Split = tuple[torch.Tensor | FolderImages, torch.Tensor]  # images and their int64 labels


def read_folder(root: Path, resolution: int) -> tuple[Split, Split, list[str]]:
    """The train and val splits of ``root`` and its class names (its train/ subfolders, sorted).
    Images are decoded now if the whole folder :func:`fits_in_memory`, else kept as
    :class:`FolderImages`."""
    where = str(root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(
                f"no {split}/ folder; expected train/<class>/ and val/<class>/", file=where
            )
    train, val = _class_folders(root / "train"), _class_folders(root / "val")
    classes = sorted(train)
    if not classes:
        raise DataError("train/ has no class subfolders", file=where)
    for problem, names in (
        ("classes of train/ missing from val/", [c for c in classes if c not in val]),
        ("classes of val/ missing from train/", [c for c in val if c not in train]),
        ("classes with no images in train/", [c for c in classes if not train[c]]),
    ):
        if names:
            raise DataError(f"{problem}: {', '.join(names)}", file=where)
    if not any(val.values()):
        raise DataError("val/ has no images", file=where)
    decode = fits_in_memory(sum(map(len, [*train.values(), *val.values()])), resolution)
    return (
        _folder_split(train, classes, resolution, decode),
        _folder_split(val, classes, resolution, decode),
        classes,
    )


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _class_folders(split: Path) -> dict[str, list[Path]]:
    return {d.name: _images_in(d) for d in sorted(split.iterdir()) if d.is_dir()}


def _folder_split(
    split: dict[str, list[Path]], classes: list[str], resolution: int, decode: bool
) -> Split:
    """The split's files class by class, and their labels; with ``decode``, every image through
    :func:`decode_image` now, stacked as uint8 NCHW."""
    files = [(path, label) for label, c in enumerate(classes) for path in split[c]]
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    images = FolderImages(tuple(path for path, _ in files), resolution)
    if not decode:
        return images, labels
    out = torch.empty(images.shape, dtype=torch.uint8)
    for i, path in enumerate(images.files):
        out[i] = decode_image(path, resolution)
    return out, labels


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: no guard
        return None


def fits_in_memory(count: int, resolution: int) -> bool:
    """Whether ``count`` images decoded at ``resolution`` (N·3·R·R bytes) take at most
    ``MEMORY_FRACTION`` of physical RAM."""
    ram = _physical_memory()
    return not ram or count * 3 * resolution * resolution <= MEMORY_FRACTION * ram
