"""Input pipeline: datasets decoded once into uint8 tensors, then augmented a whole batch at a time.

Following airbench, images stay in one tensor (on the GPU if the caller moves them there) and every
step is a handful of tensor ops, so there are no worker processes and no per-image Python in the
training loop. The price: a dataset must fit in memory decoded (see :func:`load_dataset`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .checkpoint import atomic_path
from .errors import DataError

try:  # numpy >= 2 moved it; the CIFAR pickles still name numpy.core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MEMORY_FRACTION = 0.25  # largest share of physical RAM a decoded dataset may take
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class CifarSource:
    """Where an official CIFAR archive comes from and how its python-format pickles are laid out."""

    title: str
    url: str
    md5: str
    folder: str  # what the archive extracts to
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: bytes
    names_key: bytes
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[1]

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test, self.meta)


SOURCES = {
    "cifar100": CifarSource(
        "CIFAR-100",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
        ("train",),
        "test",
        "meta",
        b"fine_labels",
        b"fine_label_names",
        CIFAR100_MEAN,
        CIFAR100_STD,
    ),
    "cifar10": CifarSource(
        "CIFAR-10",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        b"labels",
        b"label_names",
        CIFAR10_MEAN,
        CIFAR10_STD,
    ),
}


@dataclass
class Dataset:
    """A whole dataset as uint8 NCHW tensors on the CPU, plus what a checkpoint must remember."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def describe_sources() -> str:
    """One line for the CLI's ``--data`` help."""
    return (
        "cifar100 (default), cifar10 (official archives, downloaded into the data root if absent), "
        "synthetic (random images, for smoke tests and benchmarks), or a folder with "
        "train/<class>/ and val/<class>/ image subfolders"
    )


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
    ``synthetic`` (``synthetic_size`` train/val images of ``num_classes`` classes) or a folder
    with ``train/<class>/`` and ``val/<class>/`` (names win: write ``./cifar10`` for a folder).
    Datasets are never cached on disk beyond the official files and never streamed: one whose
    decoded size (N·3·R·R bytes) exceeds a quarter of physical RAM is refused with a DataError.
    """
    if resolution < 1:
        raise DataError(f"resolution must be a positive number of pixels, got {resolution}")
    if name in SOURCES:
        return _load_cifar(name, Path(root), resolution, download)
    if name == "synthetic":
        return _synthetic(synthetic_size, num_classes, resolution, seed)
    if Path(name).is_dir():
        return _load_folder(Path(name), resolution)
    choices = ", ".join([*SOURCES, "synthetic"])
    raise DataError(f"unknown dataset {name!r}: use one of {choices}, or an existing folder")


# --- CIFAR -------------------------------------------------------------------------------------


def _load_cifar(name: str, root: Path, resolution: int, download: bool) -> Dataset:
    src = SOURCES[name]
    folder = _locate_cifar(src, root, download)
    meta = _read_pickle(folder / src.meta)
    try:
        classes = [n.decode() for n in meta[src.names_key]]
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise DataError(f"not a {src.title} meta file ({e!r})", file=str(folder / src.meta)) from e
    train = [_cifar_batch(folder / f, src, len(classes)) for f in src.train]
    train_images, train_labels = torch.cat([x for x, _ in train]), torch.cat([y for _, y in train])
    val_images, val_labels = _cifar_batch(folder / src.test, src, len(classes))
    if resolution != 32:
        _check_memory(len(train_images) + len(val_images), resolution, str(folder))
        train_images, val_images = (
            _resize(train_images, resolution),
            _resize(val_images, resolution),
        )
    return Dataset(
        train_images, train_labels, val_images, val_labels, classes, src.mean, src.std, name
    )


def _fetch_help(src: CifarSource, root: Path) -> str:
    return (
        f"Download {src.url} (md5 {src.md5}) and put it at {root / src.archive} "
        f"(or its extracted folder at {root / src.folder}/), then run again."
    )


def _locate_cifar(src: CifarSource, root: Path, download: bool) -> Path:
    """The extracted folder under ``root``, extracting or downloading the archive if needed."""
    folder, archive = root / src.folder, root / src.archive
    if all((folder / f).is_file() for f in src.files):
        return folder
    if archive.is_file():
        if (md5 := _md5(archive)) != src.md5:
            raise DataError(
                f"md5 is {md5}, expected {src.md5}: the file is incomplete or not the official "
                f"archive. Delete it. {_fetch_help(src, root)}",
                file=str(archive),
            )
    elif not download:
        raise DataError(
            f"{src.title} is not in {root} and downloading is off. {_fetch_help(src, root)}"
        )
    else:
        _download(src, archive, root)
    _extract(src, archive, root)
    return folder


def _download(src: CifarSource, archive: Path, root: Path) -> None:
    """Fetch into a temporary file, check its md5, and only then rename it into place."""
    print(f"downloading {src.url} to {archive}", file=sys.stderr)
    try:
        with atomic_path(archive) as tmp:
            with urllib.request.urlopen(src.url, timeout=60) as response, open(tmp, "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
            if (md5 := _md5(tmp)) != src.md5:
                raise DataError(
                    f"the file downloaded from {src.url} has md5 {md5}, expected {src.md5}, so it "
                    f"was not kept. {_fetch_help(src, root)}"
                )
    except (OSError, urllib.error.URLError) as e:
        raise DataError(
            f"{src.title} is not in {root} and downloading it failed ({e}). "
            + _fetch_help(src, root)
        ) from e


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _extract(src: CifarSource, archive: Path, root: Path) -> None:
    """Extract the files we read, each atomically; refuse an archive with escaping member names."""
    wanted = {f"{src.folder}/{f}": root / src.folder / f for f in src.files}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts:
                    raise DataError(f"refusing unsafe member {member.name!r}", file=str(archive))
                target = wanted.pop(str(name), None)
                if target is None or not member.isfile():
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with (
                    atomic_path(target) as tmp,
                    tar.extractfile(member) as fin,
                    open(tmp, "wb") as f,
                ):
                    while chunk := fin.read(1 << 20):
                        f.write(chunk)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot extract: {e}", file=str(archive)) from e
    if wanted:
        raise DataError(f"the archive lacks {', '.join(sorted(wanted))}", file=str(archive))


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only the globals a numpy array needs, so loading a pickle cannot run code."""

    ALLOWED: ClassVar[dict[tuple[str, str], object]] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="bytes")  # the official files are Python 2 pickles
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise DataError(
                f"refusing to unpickle {module}.{name}: a CIFAR file holds only arrays and lists",
                file=str(self.path),
            )
        return self.ALLOWED[module, name]


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            content = _CifarUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as e:  # a damaged pickle can fail in many ways; all mean the same here
        raise DataError(f"cannot read this CIFAR file ({e!r}); delete it", file=str(path)) from e
    if not isinstance(content, dict):
        raise DataError("not a CIFAR file: expected a dict", file=str(path))
    return content


def _cifar_batch(
    path: Path, src: CifarSource, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _read_pickle(path)
    data, labels = batch.get(b"data"), batch.get(src.label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError("not a CIFAR batch: no uint8 N×3072 array under b'data'", file=str(path))
    if data.shape[1] != 3 * 32 * 32 or not isinstance(labels, list) or len(labels) != len(data):
        raise DataError(f"not a CIFAR batch: bad data shape or {src.label_key!r}", file=str(path))
    labels = torch.tensor(labels, dtype=torch.int64)
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise DataError(f"labels outside 0..{num_classes - 1}", file=str(path))
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), labels


def _resize(images: torch.Tensor, resolution: int, chunk: int = 1024) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 NCHW, in chunks to bound the float copy."""
    out = torch.empty((len(images), 3, resolution, resolution), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].float()
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True)
        out[start : start + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: no guard
        return None


def _check_memory(count: int, resolution: int, where: str) -> None:
    need, ram = count * 3 * resolution * resolution, _physical_memory()
    if ram and need > MEMORY_FRACTION * ram:
        raise DataError(
            f"{count} images at {resolution}×{resolution} take {need / 2**30:.1f} GiB decoded, "
            f"more than a quarter of this machine's {ram / 2**30:.1f} GiB of RAM. Datasets are "
            "decoded once and kept in memory, not streamed; lower the resolution",
            file=where,
        )


# --- image folders ----------------------------------------------------------------------------


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _class_folders(split: Path) -> dict[str, list[Path]]:
    return {d.name: _images_in(d) for d in sorted(split.iterdir()) if d.is_dir()}


def _load_folder(root: Path, resolution: int) -> Dataset:
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
    _check_memory(sum(map(len, [*train.values(), *val.values()])), resolution, where)
    return Dataset(
        *_decode(train, classes, resolution),
        *_decode(val, classes, resolution),
        classes,
        IMAGENET_MEAN,
        IMAGENET_STD,
        where,
    )


def _decode(
    split: dict[str, list[Path]], classes: list[str], resolution: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of the split through :func:`decode_image`, stacked as uint8 NCHW."""
    files = [(path, label) for label, c in enumerate(classes) for path in split[c]]
    images = torch.empty((len(files), 3, resolution, resolution), dtype=torch.uint8)
    for i, (path, _) in enumerate(files):
        images[i] = decode_image(path, resolution)
    return images, torch.tensor([label for _, label in files], dtype=torch.int64)


def decode_image(path: Path, resolution: int) -> torch.Tensor:
    """One image file as uint8 3×R×R: any mode (grey, RGBA, palette) to RGB, the first frame of an
    animation, shorter side scaled to ``resolution`` and the centre cropped (``ImageOps.fit``,
    bilinear). Training on folders and ``infer`` share it, so both see the same pixels."""
    try:
        with Image.open(path) as img:
            img = ImageOps.fit(img.convert("RGB"), (resolution,) * 2, Image.Resampling.BILINEAR)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read this image ({e})", file=str(path)) from e
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


# --- synthetic --------------------------------------------------------------------------------


def _synthetic(sizes: tuple[int, int], num_classes: int, resolution: int, seed: int) -> Dataset:
    """Noise around one colour per class: learnable, so a smoke test can see the loss fall."""
    if num_classes < 1 or min(sizes) < 1:
        raise DataError(f"synthetic data needs ≥1 class and ≥1 image per split, got {sizes}")
    g = torch.Generator().manual_seed(seed)
    colours = torch.randint(32, 224, (num_classes, 3, 1, 1), generator=g)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randperm(n, generator=g) % num_classes
        noise = torch.randint(-48, 49, (n, 3, resolution, resolution), generator=g)
        return (colours[labels] + noise).clamp_(0, 255).to(torch.uint8), labels

    train, val = split(sizes[0]), split(sizes[1])
    mean = train[0].float().mean(dim=(0, 2, 3)).div(255)
    std = train[0].float().std(dim=(0, 2, 3)).div(255)
    classes = [f"class{i}" for i in range(num_classes)]
    return Dataset(*train, *val, classes, tuple(mean.tolist()), tuple(std.tolist()), "synthetic")


# --- batches and augmentation (whole-batch tensor ops, on the batch's device) ------------------


def batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` batches; with ``world_size`` > 1, this rank's shard.

    Like DistributedSampler: all ranks must pass generators seeded alike, so they draw the same
    permutation; it is padded by wrapping around (or trimmed, with ``drop_last``) to a multiple
    of ``world_size``, and rank ``r`` takes every ``world_size``-th index from ``r``. Every rank
    thus yields the same number of batches, and DDP never waits on a rank that has stopped.
    """
    n = len(labels)
    if len(images) != n or batch_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"bad batches() arguments: {len(images)} images, {n} labels, {batch_size=}"
        )
    if shuffle:
        device = generator.device if generator is not None else "cpu"
        order = torch.randperm(n, generator=generator, device=device)
    else:
        order = torch.arange(n)
    if world_size > 1:
        total = (n // world_size if drop_last else -(-n // world_size)) * world_size
        order = order.repeat(-(-total // n) if n else 0)[:total][rank::world_size]
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    on_images, on_labels = order.to(images.device), order.to(labels.device)
    for start in range(0, stop, batch_size):
        end = start + batch_size
        yield images[on_images[start:end]], labels[on_labels[start:end]]


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
    shift, mirror = shift.to(device), mirror.to(device) & flip
    padded = images_u8.new_zeros((n, c, h + 2 * padding, w + 2 * padding))
    padded[:, :, padding : padding + h, padding : padding + w] = images_u8
    rows = shift[0] + torch.arange(h, device=device)
    cols = shift[1] + torch.arange(w, device=device)
    cols = torch.where(mirror, cols.flip(1), cols)
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


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
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    x.mul_(1 / (255 * std_t)).sub_(mean_t / std_t)
    return x if dtype == torch.float32 else x.to(dtype)
