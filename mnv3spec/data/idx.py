"""MNIST and Fashion-MNIST: their four official gzip'd IDX files, found under the data root, then
where a Debian package puts them, then downloaded (md5 checked, :mod:`.fetch`); read into uint8
N×1×H×W tensors with the official train/test split.

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a big-endian header of two
zero bytes, a type byte (0x08: unsigned bytes) and the number of dimensions, then one uint32 per
dimension, then the values. Images are 3-D (count, rows, columns), labels 1-D.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from . import fetch, folders
from .cifar import resize

Split = tuple[torch.Tensor, torch.Tensor]  # uint8 N×1×H×W images and their int64 labels

TRAIN = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
TEST = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
UBYTE = 0x08
MAX_BYTES = 64 << 20  # the largest official file, train-images, is 47,040,016 bytes


@dataclass(frozen=True)
class IdxSource:
    """Where a dataset's four IDX files come from and how to check them. ``md5`` maps each file
    name to the md5 of the official .gz and, where known, of its decompressed bytes: Debian's
    package recompresses the files, so its .gz differ while their content does not."""

    title: str
    folder: str  # under the data root
    url: str  # the four file names are appended to it
    md5: dict[str, tuple[str, str | None]]
    debian: Path | None  # where the Debian package puts the files
    package: str | None  # that package's name
    classes: tuple[str, ...]
    mean: tuple[float]
    std: tuple[float]
    flip: bool  # whether mirrored images are still of their class (not for digits)


SOURCES = {
    "fashion-mnist": IdxSource(
        "Fashion-MNIST",
        "fashion-mnist",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {  # the .gz md5 from zalandoresearch/fashion-mnist's README; content md5 from Debian's
            TRAIN[0]: ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            TRAIN[1]: ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
            TEST[0]: ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
            TEST[1]: ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
        },
        Path("/usr/share/datasets/fashion-mnist"),
        "dataset-fashion-mnist",
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        (0.2860,),  # the training images' mean and standard deviation over all pixels
        (0.3530,),
        True,
    ),
    "mnist": IdxSource(
        "MNIST",
        "mnist",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's mirror of LeCun's files
        {
            TRAIN[0]: ("f68b3c2dcbeaaa9fbdd348bbdeb94873", None),
            TRAIN[1]: ("d53e105ee54ea40749a09fcbcd1e9432", None),
            TEST[0]: ("9fb629c4189551a2d022fa330f9573f3", None),
            TEST[1]: ("ec29112dd5afa0611ce80d1b7f02629c", None),
        },
        None,
        None,
        tuple(str(d) for d in range(10)),
        (0.1307,),
        (0.3081,),
        False,
    ),
}


def read_idx_dataset(
    src: IdxSource, root: Path, resolution: int, download: bool
) -> tuple[Split, Split]:
    """The official train and test splits of ``src`` at ``resolution`` (28 as shipped)."""
    paths = {name: _locate(src, root, name, download) for name in (*TRAIN, *TEST)}
    train = _split(src, paths[TRAIN[0]], paths[TRAIN[1]])
    test = _split(src, paths[TEST[0]], paths[TEST[1]])
    if resolution == train[0].shape[-1]:
        return train, test
    count = len(train[0]) + len(test[0])
    if not folders.fits_in_memory(count, resolution):
        raise DataError(
            f"{count} {src.title} images at {resolution}×{resolution} do not fit in "
            f"{folders.MEMORY_FRACTION:.0%} of this machine's RAM; lower the resolution"
        )
    return (resize(train[0], resolution), train[1]), (resize(test[0], resolution), test[1])


def fetch_help(src: IdxSource, root: Path) -> str:
    """What a user can do when the files are not there."""
    files = ", ".join((*TRAIN, *TEST))
    apt = (
        f"Install them with `apt-get install {src.package}` (into {src.debian}), or download "
        if src.package
        else "Download "
    )
    return f"{apt}{files} from {src.url} and put them in {root / src.folder}/, then run again."


def _locate(src: IdxSource, root: Path, name: str, download: bool) -> Path:
    """The file ``name``: under the data root, else in the Debian location, else downloaded
    into the data root (never over a file that is there)."""
    placed = root / src.folder / name
    if placed.is_file():
        return placed
    if src.debian is not None and (src.debian / name).is_file():
        return src.debian / name
    if not download:
        raise DataError(
            f"{src.title} is not in {root / src.folder} and downloading is off. "
            + f"{fetch_help(src, root)} {fetch.OFFLINE}"
        )
    missing = f"{src.title} is not in {root / src.folder}" + (
        f" nor in {src.debian}" if src.debian else ""
    )
    fetch.download(
        src.url + name, src.md5[name][0], placed, missing=missing, fix=fetch_help(src, root)
    )
    return placed


def _content(src: IdxSource, path: Path) -> bytes:
    """The decompressed bytes of an official file, its md5 checked first (that of the .gz, or
    of its content where Debian's recompressed copy is known)."""
    packed = path.read_bytes()
    md5, content_md5 = src.md5[path.name]
    found = hashlib.md5(packed, usedforsecurity=False).hexdigest()
    if found == md5:
        return _gunzip(packed, path)
    if content_md5:
        try:
            raw = _gunzip(packed, path)
        except DataError:
            raw = b""
        if hashlib.md5(raw, usedforsecurity=False).hexdigest() == content_md5:
            return raw
    also = f" (or {content_md5} once decompressed)" if content_md5 else ""
    raise DataError(
        f"md5 is {found}, expected {md5}{also}: the file is incomplete or not the official one. "
        "It was left as it is; replace it with the official file, or delete it to have it "
        "downloaded",
        file=str(path),
    )


def _gunzip(packed: bytes, path: Path) -> bytes:
    """The decompressed bytes, at most :data:`MAX_BYTES` of them (so an unchecked file cannot
    expand without bound)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(packed)) as f:
            raw = f.read(MAX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"cannot decompress ({e}); the files are read gzip'd, as shipped", file=str(path)
        ) from e
    if len(raw) > MAX_BYTES:
        raise DataError(
            f"decompresses to more than {MAX_BYTES >> 20} MiB, larger than any official file",
            file=str(path),
        )
    return raw


def parse_idx(raw: bytes, dims: int, file: str) -> np.ndarray:
    """An IDX file of unsigned bytes with ``dims`` dimensions, as an array of that shape."""
    what = "images (3 dimensions)" if dims == 3 else "labels (1 dimension)"
    magic = raw[:4]
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != UBYTE or magic[3] != dims:
        raise DataError(
            f"not an IDX file of {what}: it starts {magic.hex() or 'empty'}, expected "
            f"0000{UBYTE:02x}{dims:02x}",
            file=file,
        )
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"truncated: {len(raw)} bytes, shorter than the IDX header", file=file)
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    size = math.prod(shape)
    if len(raw) - header != size:
        raise DataError(
            f"the header says {'×'.join(map(str, shape))} = {size} values, but the file holds "
            f"{len(raw) - header} (truncated, or not an IDX file)",
            file=file,
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _split(src: IdxSource, images_path: Path, labels_path: Path) -> Split:
    images = parse_idx(_content(src, images_path), 3, str(images_path))
    labels = parse_idx(_content(src, labels_path), 1, str(labels_path))
    if len(images) != len(labels):
        raise DataError(
            f"holds {len(labels)} labels but {images_path.name} holds {len(images)} images: the "
            "files are from different sets; restore the official files",
            file=str(labels_path),
        )
    if images.shape[1] != images.shape[2] or images.shape[1] < 1:
        raise DataError(
            f"images of {images.shape[1]}×{images.shape[2]}, not square", file=str(images_path)
        )
    if len(labels) and labels.max() >= len(src.classes):
        raise DataError(
            f"labels outside 0..{len(src.classes) - 1} ({int(labels.max())})", file=str(labels_path)
        )
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))
