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
    train, val = _class_folders(root)
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


def _class_folders(root: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """The image files of every class folder of train/ and val/, by class name. Links are
    followed, but every folder is placed by its real path first: a class folder that is (or is
    inside, or holds) another class folder, a split or the dataset, and a link that loops, would
    read images twice or under the wrong label, so each is refused naming the link."""
    dirs = {split: _subfolders(root / split) for split in ("train", "val")}
    labelled = [(d, f"{split}/{d.name}") for split, folders_ in dirs.items() for d in folders_]
    labelled.sort(key=lambda pair: pair[0].is_symlink())  # links last, so errors name them
    reals: dict[str, str] = {}  # real path of each class folder -> "train/cat"
    for d, label in labelled:
        real = os.path.realpath(d)
        if real in reals:
            raise DataError(
                f"{_where(d, real)}, the same folder as {reals[real]}: its images would "
                "be read twice, under both labels"
            )
        reals[real] = label
    holders = {parent: label for real, label in reals.items() for parent in _parents(real)}
    for d, label in reversed(labelled):  # links first
        real = os.path.realpath(d)
        problem = _misplaced(real, label, reals, holders)
        if problem:
            raise DataError(f"{_where(d, real)}, {problem}")
    train, val = (
        {d.name: _images_in(d, f"{split}/{d.name}", reals, holders) for d in dirs[split]}
        for split in ("train", "val")
    )
    return train, val


def _subfolders(folder: Path) -> list[Path]:
    """The folders in ``folder`` (links followed), hidden ones left out as hidden files are."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
        return [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir()]
    except OSError as e:
        raise DataError(f"cannot list this folder ({e.strerror or e})", file=str(folder)) from None


def _parents(real: str) -> list[str]:
    return [str(p) for p in Path(real).parents]


def _where(path: Path, real: str) -> str:
    return f"{path} is a link to {real}" if path.is_symlink() else f"{path} (really {real})"


def _misplaced(real: str, label: str, reals: dict[str, str], holders: dict[str, str]) -> str | None:
    """Why a folder at ``real``, read as part of class folder ``label``, would mislabel images;
    None if it would not."""
    if real in holders:
        held = holders[real]
        return f"which holds the class folder {held}: its images would be read again as {label}"
    for folder in (real, *_parents(real)):
        if reals.get(folder, label) != label:
            return f"inside the class folder {reals[folder]}: its images would be read as {label}"
    return None


def _images_in(
    folder: Path, label: str, reals: dict[str, str], holders: dict[str, str]
) -> list[Path]:
    """The image files under a class folder (not hidden ones), links to folders followed once
    each; a link back up the tree or to a folder already read is refused, naming both."""
    found: list[Path] = []
    stack = [(folder, os.path.realpath(folder))]
    seen = {stack[0][1]: folder}  # real path -> the path it is read by
    while stack:
        path, real = stack.pop()
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as e:
            raise DataError(
                f"cannot list this folder ({e.strerror or e})", file=str(path)
            ) from None
        for entry in entries:
            sub = Path(entry.path)
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                if sub.suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
                    found.append(sub)
                continue
            target = os.path.realpath(sub) if entry.is_symlink() else os.path.join(real, entry.name)
            problem = _misplaced(target, label, reals, holders)
            if target in seen:
                problem = f"already read as {seen[target]}: a loop, or the same images twice"
            if problem:
                raise DataError(f"{_where(sub, target)}, {problem}")
            stack.append((sub, target))
            seen[target] = sub
    return sorted(found)


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
