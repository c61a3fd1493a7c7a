"""Input pipeline: CIFAR archives in their real on-disk format, image folders (held in memory or
decoded batch by batch), synthetic data, and the batched augmentation checked against a per-image
reference."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import multiprocessing
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
import torchvision.transforms.functional as TF
from PIL import Image

from mnv3spec import data
from mnv3spec.data import augment, batches, load_dataset, loader, normalize
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
    src = dataclasses.replace(data.SOURCES["cifar100"], md5=md5)
    monkeypatch.setitem(data.SOURCES, "cifar100", src)


def as_nchw(batch: dict) -> torch.Tensor:
    return torch.from_numpy(batch[b"data"].reshape(-1, 3, 32, 32))


@pytest.fixture
def offline(monkeypatch):
    """urlopen fails as it does without network; records the URLs asked for."""
    calls = []

    def urlopen(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def test_cifar100_from_extracted_folder(tmp_path, offline):
    written = make_cifar100(tmp_path)
    ds = load_dataset("cifar100", tmp_path)
    assert torch.equal(ds.train_images, as_nchw(written["train"]))
    assert torch.equal(ds.val_images, as_nchw(written["test"]))
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    assert ds.train_labels.tolist() == written["train"][b"fine_labels"]
    assert ds.classes == CLASSES and ds.num_classes == 3
    assert (ds.mean, ds.std, ds.name) == (data.CIFAR100_MEAN, data.CIFAR100_STD, "cifar100")
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
    assert offline == [data.SOURCES["cifar100"].url]
    assert not any((tmp_path / "data").iterdir())  # no partial download left behind


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
    assert not any(root.iterdir())
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
    assert (ds.classes, ds.mean, ds.name) == (CLASSES, data.CIFAR10_MEAN, "cifar10")


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
    monkeypatch.setattr(data, "MEMORY_FRACTION", 0)
    assert load_dataset("cifar100", tmp_path).train_images.shape == (6, 3, 32, 32)  # as stored
    with pytest.raises(DataError, match=r"9 images at 16×16 take 0\.0 GiB.*lower the resolution"):
        load_dataset("cifar100", tmp_path, resolution=16)


def test_unknown_name_lists_choices(tmp_path):
    with pytest.raises(DataError, match="cifar100, cifar10, synthetic"):
        load_dataset(str(tmp_path / "nope"))


# --- image folders ----------------------------------------------------------------------------


def write_image(path: Path, colour, size=(20, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def make_folder(root: Path) -> Path:
    write_image(root / "train" / "dog" / "a.png", (0, 0, 255))
    write_image(root / "train" / "dog" / "b.jpg", (0, 0, 250))
    write_image(root / "train" / "cat" / "a.png", (255, 0, 0), size=(12, 30))
    write_image(root / "val" / "cat" / "x.png", (255, 0, 0))
    write_image(root / "val" / "dog" / "y.png", (0, 0, 255))
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    return root


def test_folder_dataset(tmp_path):
    ds = load_dataset(str(make_folder(tmp_path)), resolution=8)
    assert ds.classes == ["cat", "dog"]
    assert ds.train_images.shape == (3, 3, 8, 8) and ds.train_images.dtype == torch.uint8
    assert ds.train_labels.tolist() == [0, 1, 1] and ds.val_labels.tolist() == [0, 1]
    assert torch.equal(ds.train_images[0], torch.tensor([255, 0, 0]).view(3, 1, 1).expand(3, 8, 8))
    assert (ds.mean, ds.std, ds.name) == (data.IMAGENET_MEAN, data.IMAGENET_STD, str(tmp_path))


def test_folder_resizes_shorter_side_then_centre_crops(tmp_path):
    stripes = Image.new("RGB", (64, 32), (0, 255, 0))  # green outer quarters, red middle half
    stripes.paste((255, 0, 0), (16, 0, 48, 32))
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        stripes.save(tmp_path / split / "a" / "s.png")
    image = load_dataset(str(tmp_path), resolution=16).train_images[0]
    assert (image[0, :, 1:-1] == 255).all() and (image[1, :, 1:-1] == 0).all()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: [p.unlink() for p in (r / "val").rglob("*.png")], "val/ has no images"),
        (lambda r: os.rename(r / "val", r / "other"), "no val/ folder"),
        (lambda r: (r / "train" / "bird").mkdir(), "missing from val/: bird"),
        (lambda r: (r / "train" / "cat" / "a.png").unlink(), "no images in train/: cat"),
        (lambda r: (r / "train" / "dog" / "a.png").write_bytes(b"\x89PNG broken"), "dog/a.png"),
    ],
)
def test_folder_errors_name_the_problem(tmp_path, damage, message):
    damage(make_folder(tmp_path))
    with pytest.raises(DataError, match=message) as e:
        load_dataset(str(tmp_path), resolution=8)
    assert str(tmp_path) in str(e.value)


def test_folder_larger_than_the_memory_share_comes_as_files(tmp_path, monkeypatch):
    decoded = 5 * 3 * 8 * 8  # 5 images at 8×8: exactly a quarter of this RAM is still held
    monkeypatch.setattr(data, "_physical_memory", lambda: 4 * decoded)
    held = load_dataset(str(make_folder(tmp_path)), resolution=8)
    assert isinstance(held.train_images, torch.Tensor) and not held.streamed
    monkeypatch.setattr(data, "_physical_memory", lambda: 4 * decoded - 4)
    ds = load_dataset(str(tmp_path), resolution=8)
    assert ds.streamed and isinstance(ds.val_images, data.FolderImages)
    names = [p.relative_to(tmp_path).as_posix() for p in ds.train_images.files]
    assert names == ["train/cat/a.png", "train/dog/a.png", "train/dog/b.jpg"]
    assert ds.train_images.shape == (3, 3, 8, 8) and ds.train_images.nbytes == 3 * 3 * 8 * 8
    assert len(ds.val_images[1:]) == 1 and ds.val_images[1:].files == ds.val_images.files[1:]
    assert torch.equal(ds.train_images[torch.tensor([2, 0])], held.train_images[[2, 0]])
    assert torch.equal(ds.train_labels, held.train_labels) and ds.classes == held.classes
    assert (ds.mean, ds.std, ds.name) == (held.mean, held.std, held.name)


def noise_folder(root: Path, train: int = 6, val: int = 2) -> Path:
    """Classes ant and bee, each with ``train`` and ``val`` images of random 10×10 pixels."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c in ("ant", "bee"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


def two_epochs(images, labels, workers: int, **order) -> list[list[tuple]]:
    """Two passes of a loader over 12 images in batches of 5, shuffled with seed 7."""
    passes = loader(
        images,
        labels,
        5,
        shuffle=True,
        generator=torch.Generator().manual_seed(7),
        workers=workers,
        **order,
    )
    return [list(passes) for _ in range(2)]


def assert_same_batches(got: list[tuple], expected: list[tuple]) -> None:
    assert len(got) == len(expected)
    for (x, y), (x_ref, y_ref) in zip(got, expected, strict=True):
        assert x.dtype == torch.uint8 and torch.equal(x, x_ref) and torch.equal(y, y_ref)


@pytest.mark.parametrize(
    "workers, world_size, drop_last", [(0, 1, False), (2, 2, False), (0, 2, True)]
)
def test_streamed_batches_equal_those_held_in_memory(
    tmp_path, monkeypatch, workers, world_size, drop_last
):
    """Same pixels, labels, order and shards per epoch, decoded here or by worker processes."""
    root = noise_folder(tmp_path)
    held = load_dataset(str(root), resolution=8)
    monkeypatch.setattr(data, "MEMORY_FRACTION", 0)
    streamed = load_dataset(str(root), resolution=8)
    assert streamed.streamed and not held.streamed
    shards = []
    for rank in range(world_size):
        order = {"rank": rank, "world_size": world_size, "drop_last": drop_last}
        expected = two_epochs(held.train_images, held.train_labels, 0, **order)
        got = two_epochs(streamed.train_images, streamed.train_labels, workers, **order)
        for epoch in range(2):
            assert_same_batches(got[epoch], expected[epoch])
        assert not torch.equal(expected[0][0][1], expected[1][0][1])  # a new order each epoch
        shards.append(torch.cat([y for _, y in expected[0]]))
    assert len({len(s) for s in shards}) == 1  # every rank the same number of images
    assert sum(map(len, shards)) == (10 if drop_last else 12)  # 6 per rank, or whole batches of 5
    val = loader(streamed.val_images, streamed.val_labels, 3, shuffle=False, workers=workers)
    assert_same_batches(
        list(val), list(batches(held.val_images, held.val_labels, 3, shuffle=False))
    )


def test_train_and_val_workers_never_run_at_the_same_time(tmp_path, monkeypatch):
    """A process promises at most ``workers`` decoders: the train pass's end before val starts."""
    monkeypatch.setattr(data, "MEMORY_FRACTION", 0)
    ds = load_dataset(str(noise_folder(tmp_path)), resolution=8)
    train = loader(ds.train_images, ds.train_labels, 4, shuffle=True, workers=2)
    val = loader(ds.val_images, ds.val_labels, 4, shuffle=False, workers=2)
    list(train)
    alive = [len(multiprocessing.active_children()) for _ in val]
    assert alive and max(alive) <= 2


def test_unreadable_image_met_while_streaming_is_one_message(tmp_path, monkeypatch):
    root = noise_folder(tmp_path)
    broken = root / "train" / "bee" / "3.png"
    broken.write_bytes(b"\x89PNG broken")
    monkeypatch.setattr(data, "MEMORY_FRACTION", 0)
    ds = load_dataset(str(root), resolution=8)  # nothing decoded yet
    with pytest.raises(DataError) as e:
        list(loader(ds.train_images, ds.train_labels, 4, shuffle=False, workers=2))
    assert str(e.value).startswith(f"{broken}: cannot read this image")
    assert "Traceback" not in str(e.value) and "worker" not in str(e.value)


# --- synthetic --------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_learnable():
    ds = load_dataset("synthetic", resolution=8, synthetic_size=(200, 50), num_classes=4, seed=3)
    assert ds.train_images.shape == (200, 3, 8, 8) and ds.val_images.shape == (50, 3, 8, 8)
    assert ds.train_images.dtype == torch.uint8 and ds.num_classes == 4
    assert torch.equal(ds.train_labels.bincount(), torch.full((4,), 50))
    again = load_dataset("synthetic", resolution=8, synthetic_size=(200, 50), num_classes=4, seed=3)
    assert torch.equal(ds.train_images, again.train_images)
    other = load_dataset("synthetic", resolution=8, synthetic_size=(200, 50), num_classes=4)
    assert not torch.equal(ds.train_images, other.train_images)
    # nearest class-mean colour separates the classes: there is something to learn
    colour = ds.train_images.float().mean(dim=(2, 3))
    centres = torch.stack([colour[ds.train_labels == k].mean(0) for k in range(4)])
    val_colour = ds.val_images.float().mean(dim=(2, 3))
    predicted = torch.cdist(val_colour, centres).argmin(1)
    assert (predicted == ds.val_labels).float().mean() > 0.9


# --- augmentation and batches -----------------------------------------------------------------


def reference_crop_flip(image: torch.Tensor, dy: int, dx: int, mirror: bool, padding: int = 4):
    """One image, the torchvision way: zero-pad, crop at (dy, dx), then maybe flip."""
    h, w = image.shape[1:]
    padded = TF.pad(image, [padding])
    out = padded[:, dy : dy + h, dx : dx + w]
    return out.flip(-1) if mirror else out


def test_augment_is_a_shifted_possibly_flipped_copy():
    images = torch.randint(0, 256, (16, 3, 12, 10), dtype=torch.uint8)
    out = augment(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    seen = set()
    for i in range(len(images)):
        matches = [
            (dy, dx, mirror)
            for dy in range(9)
            for dx in range(9)
            for mirror in (False, True)
            if torch.equal(out[i], reference_crop_flip(images[i], dy, dx, mirror))
        ]
        assert len(matches) == 1, f"image {i}: {matches}"
        seen.add(matches[0])
    assert len(seen) > 8 and {m for _, _, m in seen} == {False, True}


def test_augment_generator_determinism_and_identity():
    images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    first = augment(images, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, augment(images, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(first, augment(images, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(augment(images, padding=0, flip=False), images)


def test_normalize_matches_torchvision():
    images = torch.randint(0, 256, (4, 3, 6, 6), dtype=torch.uint8)
    mean, std = data.CIFAR100_MEAN, data.CIFAR100_STD
    expected = TF.normalize(images.float() / 255, mean, std)
    torch.testing.assert_close(normalize(images, mean, std), expected)
    last = normalize(images, mean, std, channels_last=True, dtype=torch.bfloat16)
    assert last.dtype == torch.bfloat16 and last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(last.float(), expected, atol=0.02, rtol=0.01)


def collect(n: int, batch_size: int, **kwargs) -> list[list[int]]:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)
    return [b[0].flatten().tolist() for b in batches(images, torch.arange(n), batch_size, **kwargs)]


def test_batches_cover_everything_once():
    assert collect(7, 3, shuffle=False) == [[0, 1, 2], [3, 4, 5], [6]]
    assert collect(7, 3, shuffle=False, drop_last=True) == [[0, 1, 2], [3, 4, 5]]
    shuffled = collect(50, 8, shuffle=True, generator=torch.Generator().manual_seed(0))
    flat = [i for batch in shuffled for i in batch]
    assert sorted(flat) == list(range(50)) and flat != list(range(50))
    again = collect(50, 8, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert shuffled == again
    images, labels = next(batches(torch.zeros(5, 3, 2, 2), torch.arange(5) * 10, 2, shuffle=False))
    assert labels.tolist() == [0, 10] and images.shape == (2, 3, 2, 2)


@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_shard_evenly_across_ranks(drop_last):
    shards = [
        collect(
            10,
            2,
            shuffle=True,
            generator=torch.Generator().manual_seed(5),
            drop_last=drop_last,
            rank=rank,
            world_size=3,
        )
        for rank in range(3)
    ]
    assert len({len(s) for s in shards}) == 1  # same number of batches: DDP cannot hang
    seen = [i for shard in shards for batch in shard for i in batch]
    if drop_last:  # 9 of 10 kept, disjoint; 3 per rank → one batch of 2 each
        assert len(seen) == len(set(seen)) == 6
    else:  # padded to 12 by wrapping around: everything seen
        assert set(seen) == set(range(10)) and len(seen) == 12
