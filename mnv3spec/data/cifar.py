"""The official CIFAR-10 and CIFAR-100 archives: where they come from (with their md5), their
download and safe extraction, and their python-format pickles read without running code.

Nothing is cached beyond the official files; the images come out as uint8 NCHW tensors, resized
once if a resolution other than 32 is asked for.
"""

from __future__ import annotations

import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from ..files import atomic_path
from . import fetch, folders

try:  # numpy >= 2 moved it; the CIFAR pickles still name numpy.core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

Split = tuple[torch.Tensor, torch.Tensor]  # uint8 NCHW images and their int64 labels


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


def read_cifar(
    src: CifarSource, root: Path, resolution: int, download: bool
) -> tuple[Split, Split, list[str]]:
    """The train and test splits of ``src`` at ``resolution`` and its class names, from the
    extracted folder under ``root`` (extracting or downloading the archive if needed). A resize
    whose result would not fit :func:`mnv3spec.data.folders.fits_in_memory` is refused."""
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
        if not folders.fits_in_memory(count, resolution):
            raise DataError(
                f"{count} images at {resolution}×{resolution} take "
                f"{count * 3 * resolution**2 / 2**30:.1f} GiB decoded, more than "
                f"{folders.MEMORY_FRACTION:.0%} of this machine's RAM. CIFAR is resized once and "
                "kept in memory; lower the resolution",
                file=str(folder),
            )
        train_images, val_images = (
            resize(train_images, resolution),
            resize(val_images, resolution),
        )
    return (train_images, train_labels), (val_images, val_labels), classes


def _fetch_help(src: CifarSource, root: Path) -> str:
    return (
        f"Download {src.url} (md5 {src.md5}) and put it at {root / src.archive} "
        f"(or its extracted folder at {root / src.folder}/), then run again."
    )


def _locate_cifar(src: CifarSource, root: Path, download: bool) -> Path:
    """The extracted folder under ``root``, extracting or downloading the archive if needed. An
    incomplete extracted folder is extracted again from a present archive with the right md5,
    and otherwise named with the files it lacks (never downloaded over)."""
    folder, archive = root / src.folder, root / src.archive
    missing = [f for f in src.files if not (folder / f).is_file()]
    if not missing:
        return folder
    if folder.is_dir() and not archive.is_file():
        raise DataError(
            f"the extracted {src.title} folder is incomplete: it lacks "
            f"{', '.join(missing)} (or they are not files). Delete the folder, or put the "
            f"archive at {archive} to extract it again; nothing is downloaded over a partial "
            f"folder. {_fetch_help(src, root)}",
            file=str(folder),
        )
    if archive.is_file():
        if (md5 := fetch.md5_of(archive)) != src.md5:
            raise DataError(
                f"md5 is {md5}, expected {src.md5}: the file is incomplete or not the official "
                f"archive. Delete it. {_fetch_help(src, root)}",
                file=str(archive),
            )
    elif not download:
        raise DataError(
            f"{src.title} is not in {root} and downloading is off. {_fetch_help(src, root)} "
            f"{fetch.OFFLINE}"
        )
    else:
        fetch.download(
            src.url,
            src.md5,
            archive,
            missing=f"{src.title} is not in {root}",
            fix=_fetch_help(src, root),
        )
    _extract(src, archive, root)
    return folder


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


def resize(images: torch.Tensor, resolution: int, chunk: int = 1024) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 NCHW, in chunks to bound the float copy."""
    out = torch.empty((*images.shape[:2], resolution, resolution), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].float()
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True)
        out[start : start + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out
