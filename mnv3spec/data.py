"""Input pipeline: datasets decoded once into uint8 tensors, then augmented a whole batch at a time.

Following airbench, images stay in one tensor (on the GPU if the caller moves them there) and every
step is a handful of tensor ops, so there are no worker processes and no per-image Python in the
training loop. An image folder too large for that is kept as a list of files instead
(:class:`FolderImages`) and decoded batch by batch in DataLoader workers (:func:`loader`); its
batches come in the same order and reach the same tensor ops, so training does not tell them apart.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

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

MEMORY_FRACTION = 0.25  # largest share of physical RAM a decoded dataset may take in memory
MAX_WORKERS = 8  # decoding processes per training process, for folders too large for memory
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

DATASETS = (*SOURCES, "synthetic")  # names that win over folders of the same name


@dataclass(frozen=True)
class FolderImages:
    """Image files standing in for their decoded uint8 N×3×R×R tensor, for a folder too large to
    hold decoded. It answers what the tensor would (``len``, ``shape``, ``nbytes``, ``device``,
    slicing) and indexing by a sequence or tensor of indices decodes those images, so
    :func:`batches` works on either."""

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


@dataclass
class Dataset:
    """A whole dataset as uint8 NCHW tensors on the CPU (or, for an image folder too large for
    memory, :class:`FolderImages`), plus what a checkpoint must remember."""

    train_images: torch.Tensor | FolderImages
    train_labels: torch.Tensor
    val_images: torch.Tensor | FolderImages
    val_labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def streamed(self) -> bool:
        """Whether images are decoded batch by batch rather than held in memory."""
        return isinstance(self.train_images, FolderImages)


def describe_sources() -> str:
    """One line for the CLI's ``--data`` help."""
    return (
        "cifar100 (default), cifar10 (official archives, downloaded into the data root if absent), "
        "synthetic (random images, for smoke tests and benchmarks), or a folder with "
        "train/<class>/ and val/<class>/ image subfolders (./NAME for one named like a dataset)"
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
    Nothing is cached on disk beyond the official files. A folder whose decoded size (N·3·R·R
    bytes) exceeds ``MEMORY_FRACTION`` of physical RAM comes as :class:`FolderImages`, decoded
    batch by batch; CIFAR resized that large is refused with a DataError.
    """
    if resolution < 1:
        raise DataError(f"resolution must be a positive number of pixels, got {resolution}")
    check_name(name)
    if name in SOURCES:
        return _load_cifar(name, Path(root), resolution, download)
    if name == "synthetic":
        return _synthetic(synthetic_size, num_classes, resolution, seed)
    return _load_folder(Path(name), resolution)


def check_name(name: str) -> None:
    """Refuse a ``name`` that is neither a dataset nor a folder, reading nothing: training checks
    this on every process before they wait for each other."""
    if name not in DATASETS and not Path(name).is_dir():
        choices = ", ".join(DATASETS)
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
        count = len(train_images) + len(val_images)
        if not _fits_in_memory(count, resolution):
            raise DataError(
                f"{count} images at {resolution}×{resolution} take "
                f"{count * 3 * resolution**2 / 2**30:.1f} GiB decoded, more than "
                f"{MEMORY_FRACTION:.0%} of this machine's RAM. CIFAR is resized once and kept in "
                "memory; lower the resolution",
                file=str(folder),
            )
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


def _fits_in_memory(count: int, resolution: int) -> bool:
    ram = _physical_memory()
    return not ram or count * 3 * resolution * resolution <= MEMORY_FRACTION * ram


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
    decode = _fits_in_memory(sum(map(len, [*train.values(), *val.values()])), resolution)
    return Dataset(
        *_folder_split(train, classes, resolution, decode),
        *_folder_split(val, classes, resolution, decode),
        classes,
        IMAGENET_MEAN,
        IMAGENET_STD,
        where,
    )


def _folder_split(
    split: dict[str, list[Path]], classes: list[str], resolution: int, decode: bool
) -> tuple[torch.Tensor | FolderImages, torch.Tensor]:
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
