"""CIFAR archives in their real on-disk format: extracted, from the archive, downloaded with md5
checks, refused when unsafe, and resized once."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from mnv3spec.data import cifar, folders
from mnv3spec.data.datasets import load_dataset
from mnv3spec.errors import DataError

CLASSES = ["apple", "bear", "cloud"]


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2's BINSTRING, as the official CIFAR pickles do, so the
    loader is tested on what ``pickle.load(f, encoding="bytes")`` really meets."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        size = len(obj)
        if size < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([size]) + obj)
        else:
            self.write(pickle.BINSTRING + size.to_bytes(4, "little") + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin-1"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def write_pickle(path: Path, obj) -> None:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 2 names numpy._core; the official files (numpy 1 era) say numpy.core
    path.write_bytes(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


def cifar_batch(rng, n: int, label_key: bytes) -> dict:
    return {
        b"batch_label": b"training batch 1 of 1",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: [int(i) % len(CLASSES) for i in range(n)],
        b"coarse_labels": [0] * n,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def make_cifar100(root: Path, n_train: int = 6, n_test: int = 3) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches_ = {"train": cifar_batch(rng, n_train, b"fine_labels")}
    batches_["test"] = cifar_batch(rng, n_test, b"fine_labels")
    for name, batch in batches_.items():
        write_pickle(folder / name, batch)
    names = [c.encode() for c in CLASSES]
    write_pickle(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": [b"x"]})
    return batches_


def make_archive(root: Path) -> str:
    """Pack cifar-100-python/ into cifar-100-python.tar.gz, remove the folder, return the md5."""
    archive = root / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "cifar-100-python", arcname="cifar-100-python")
    for f in (root / "cifar-100-python").iterdir():
        f.unlink()
    (root / "cifar-100-python").rmdir()
    return hashlib.md5(archive.read_bytes()).hexdigest()


def patch_md5(monkeypatch, md5: str) -> None:
    # The real md5 is that of the real 161 MB file; here it must be our small archive's.
    src = dataclasses.replace(cifar.SOURCES["cifar100"], md5=md5)
    monkeypatch.setitem(cifar.SOURCES, "cifar100", src)


def as_nchw(batch: dict) -> torch.Tensor:
    return torch.from_numpy(batch[b"data"].reshape(-1, 3, 32, 32))


def test_cifar100_from_extracted_folder(tmp_path, offline):
    written = make_cifar100(tmp_path)
    ds = load_dataset("cifar100", tmp_path)
    assert torch.equal(ds.train_images, as_nchw(written["train"]))
    assert torch.equal(ds.val_images, as_nchw(written["test"]))
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    assert ds.train_labels.tolist() == written["train"][b"fine_labels"]
    assert ds.classes == CLASSES and ds.num_classes == 3
    assert (ds.mean, ds.std, ds.name) == (cifar.CIFAR100_MEAN, cifar.CIFAR100_STD, "cifar100")
    assert offline == []


def test_cifar100_from_archive_only(tmp_path, monkeypatch, offline):
    written = make_cifar100(tmp_path)
    patch_md5(monkeypatch, make_archive(tmp_path))
    ds = load_dataset("cifar100", tmp_path, download=False)
    assert torch.equal(ds.train_images, as_nchw(written["train"]))
    assert sorted(p.name for p in (tmp_path / "cifar-100-python").iterdir()) == [
        "meta",
        "test",
        "train",
    ]
    assert offline == []


def test_cifar_bad_checksum_names_file_and_md5(tmp_path, offline):
    make_cifar100(tmp_path)
    make_archive(tmp_path)  # real md5 constant kept: our archive does not match it
    with pytest.raises(DataError) as e:
        load_dataset("cifar100", tmp_path)
    message = str(e.value)
    assert str(tmp_path / "cifar-100-python.tar.gz") in message
    assert "eb9058c3a382ffc7106e4002c42a8d85" in message
    assert offline == []


def test_cifar_offline_says_what_to_put_where(tmp_path, offline):
    with pytest.raises(DataError) as e:
        load_dataset("cifar100", tmp_path / "data")
    message = str(e.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message
    assert str(tmp_path / "data" / "cifar-100-python.tar.gz") in message
    assert "eb9058c3a382ffc7106e4002c42a8d85" in message and "no network" in message
    assert "synthetic" in message and "apt-get install dataset-fashion-mnist" in message
    assert offline == [cifar.SOURCES["cifar100"].url]
    assert list(tmp_path.iterdir()) == []  # no partial download, and no data/ folder, left behind


def test_cifar_offline_keeps_a_data_root_that_was_there(tmp_path, offline):
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError):
        load_dataset("cifar100", tmp_path / "data")
    assert (tmp_path / "data").is_dir() and not any((tmp_path / "data").iterdir())


def test_a_data_root_that_is_a_file_is_refused_naming_it(tmp_path, offline):
    (tmp_path / "data").write_text("mine")
    with pytest.raises(DataError, match=r"data.*is a file, not a folder"):
        load_dataset("cifar10", tmp_path / "data")
    assert (tmp_path / "data").read_text() == "mine" and offline == []


def test_cifar_download_false_never_connects(tmp_path, offline):
    with pytest.raises(DataError, match=r"downloading is off.*cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", tmp_path, download=False)
    assert offline == []


def test_cifar_download_checks_md5_before_keeping(tmp_path, monkeypatch):
    make_cifar100(tmp_path / "src")
    md5 = make_archive(tmp_path / "src")
    payload = (tmp_path / "src" / "cifar-100-python.tar.gz").read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"has md5 \w+, expected eb9058c3a382ffc7106e4002c42a8d85"):
        load_dataset("cifar100", root)
    assert not root.exists()  # neither the file nor the folder made for it is kept
    patch_md5(monkeypatch, md5)
    assert load_dataset("cifar100", root).train_images.shape == (6, 3, 32, 32)
    assert (root / "cifar-100-python.tar.gz").read_bytes() == payload


class Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar_pickle_with_forbidden_global_is_never_run(tmp_path):
    make_cifar100(tmp_path)
    marker = tmp_path / "pwned"
    train = tmp_path / "cifar-100-python" / "train"
    write_pickle(train, {b"data": Exploit(marker), b"fine_labels": [0]})
    with pytest.raises(DataError, match=r"refusing to unpickle \w+\.system") as e:
        load_dataset("cifar100", tmp_path)
    assert str(train) in str(e.value)
    assert not marker.exists()


def test_cifar_archive_with_escaping_member_is_refused(tmp_path, monkeypatch):
    archive = tmp_path / "data" / "cifar-100-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../evil")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    patch_md5(monkeypatch, hashlib.md5(archive.read_bytes()).hexdigest())
    with pytest.raises(DataError, match=r"unsafe member '\.\./evil'"):
        load_dataset("cifar100", tmp_path / "data")
    assert not (tmp_path / "evil").exists()


def test_cifar10_from_extracted_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    train = [cifar_batch(rng, 2, b"labels") for _ in range(5)]
    for i, batch in enumerate(train, 1):
        write_pickle(folder / f"data_batch_{i}", batch)
    write_pickle(folder / "test_batch", cifar_batch(rng, 3, b"labels"))
    write_pickle(folder / "batches.meta", {b"label_names": [c.encode() for c in CLASSES]})
    ds = load_dataset("cifar10", tmp_path, download=False)
    assert torch.equal(ds.train_images, torch.cat([as_nchw(b) for b in train]))
    assert ds.train_labels.tolist() == [label for b in train for label in b[b"labels"]]
    assert ds.val_images.shape == (3, 3, 32, 32)
    assert (ds.classes, ds.mean, ds.name) == (CLASSES, cifar.CIFAR10_MEAN, "cifar10")


def test_cifar_resized_once_and_stays_uint8(tmp_path):
    written = make_cifar100(tmp_path)
    written["train"][b"data"][0] = 200  # a flat image stays flat through an antialiased resize
    write_pickle(tmp_path / "cifar-100-python" / "train", written["train"])
    ds = load_dataset("cifar100", tmp_path, resolution=16)
    assert ds.train_images.shape == (6, 3, 16, 16) and ds.val_images.shape == (3, 3, 16, 16)
    assert ds.train_images.dtype == torch.uint8
    assert (ds.train_images[0] == 200).all()


def test_cifar_resized_beyond_the_memory_share_is_refused(tmp_path, monkeypatch):
    make_cifar100(tmp_path)
    monkeypatch.setattr(folders, "MEMORY_FRACTION", 0)
    assert load_dataset("cifar100", tmp_path).train_images.shape == (6, 3, 32, 32)  # as stored
    with pytest.raises(DataError, match=r"9 images at 16×16 take 0\.0 GiB.*lower the resolution"):
        load_dataset("cifar100", tmp_path, resolution=16)


@pytest.mark.parametrize("missing", [["meta"], ["meta", "test"]])
def test_an_incomplete_extracted_folder_names_what_it_lacks_and_downloads_nothing(
    tmp_path, offline, missing
):
    make_cifar100(tmp_path)
    folder = tmp_path / "cifar-100-python"
    for name in missing:
        (folder / name).unlink()
    with pytest.raises(DataError) as e:
        load_dataset("cifar100", tmp_path)
    message = str(e.value)
    order = [f for f in ("train", "test", "meta") if f in missing]
    assert message.startswith(
        f"{folder}: the extracted CIFAR-100 folder is incomplete: it lacks {', '.join(order)} "
    )
    assert "Delete the folder" in message and "not in" not in message
    assert offline == []
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        {"train", "test", "meta"} - set(order)
    )


def test_an_incomplete_extracted_folder_is_extracted_again_from_a_good_archive(
    tmp_path, monkeypatch, offline
):
    written = make_cifar100(tmp_path)
    patch_md5(monkeypatch, make_archive(tmp_path))
    load_dataset("cifar100", tmp_path, download=False)  # extracts
    (tmp_path / "cifar-100-python" / "meta").unlink()
    ds = load_dataset("cifar100", tmp_path, download=False)
    assert ds.classes == CLASSES and torch.equal(ds.val_images, as_nchw(written["test"]))
    assert offline == []


def test_an_extracted_file_that_is_a_folder_counts_as_missing(tmp_path, offline):
    make_cifar100(tmp_path)
    meta = tmp_path / "cifar-100-python" / "meta"
    meta.unlink()
    meta.mkdir()
    with pytest.raises(DataError, match="it lacks meta"):
        load_dataset("cifar100", tmp_path)


def test_offline_cifar_names_the_data_that_needs_no_download(tmp_path):
    """Issue 31: the main job offline says what works without a network."""
    with pytest.raises(DataError) as info:
        load_dataset("cifar100", tmp_path, resolution=32, download=False)
    message = str(info.value)
    assert "synthetic" in message and "apt-get install dataset-fashion-mnist" in message
    assert not any(tmp_path.iterdir())  # nothing left behind
