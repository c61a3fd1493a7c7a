"""Image folders: decoded once, resized and centre-cropped, their errors named, and kept as
files when too large for memory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnv3spec.data import folders
from mnv3spec.data.datasets import load_dataset
from mnv3spec.errors import DataError


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
    assert (ds.mean, ds.std, ds.name) == (
        folders.IMAGENET_MEAN,
        folders.IMAGENET_STD,
        str(tmp_path),
    )


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
    monkeypatch.setattr(folders, "_physical_memory", lambda: 4 * decoded)
    held = load_dataset(str(make_folder(tmp_path)), resolution=8)
    assert isinstance(held.train_images, torch.Tensor) and not held.streamed
    monkeypatch.setattr(folders, "_physical_memory", lambda: 4 * decoded - 4)
    ds = load_dataset(str(tmp_path), resolution=8)
    assert ds.streamed and isinstance(ds.val_images, folders.FolderImages)
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


@pytest.mark.parametrize(
    ("array", "mode"),
    [
        (np.full((8, 8), 0x8000, dtype=np.uint16), "I;16"),  # a 16-bit grey PNG opens so
        (np.full((8, 8), 0x8000, dtype=np.int32), "I"),
        (np.full((8, 8), 0.5, dtype=np.float32), "F"),
    ],
)
def test_deep_greyscale_is_scaled_to_8_bits_not_clipped_to_white(tmp_path, array, mode):
    path = tmp_path / ("grey.png" if mode == "I;16" else "grey.tif")
    Image.fromarray(array).save(path)
    assert Image.open(path).mode == mode
    assert torch.equal(folders.decode_image(path, 4), torch.full((3, 4, 4), 128, dtype=torch.uint8))


@pytest.mark.parametrize(
    ("link", "target", "message"),
    [
        ("train/all", "../train", "train/all is a link to {train}, which holds the class folder"),
        ("train/bird", "..", "train/bird is a link to {root}, which holds the class folder"),
        ("val/dog", "../train/dog", "val/dog is a link to {train}/dog, the same folder as"),
        ("train/dog/cats", "../cat", "is a link to {train}/cat, inside the class folder train/cat"),
        ("train/dog/up", "..", "train/dog/up is a link to {train}, which holds the class folder"),
        ("train/dog/self", ".", "train/dog/self is a link to {train}/dog, already read as"),
    ],
    ids=["class-to-split", "class-to-root", "other-split", "into-class", "to-split", "loop"],
)
def test_linked_folders_that_would_mislabel_or_loop_are_refused(tmp_path, link, target, message):
    root = make_folder(tmp_path / "data")
    if link == "val/dog":
        for p in (root / "val" / "dog").iterdir():
            p.unlink()
        (root / "val" / "dog").rmdir()
    (root / link).symlink_to(target, target_is_directory=True)
    if link == "train/bird":
        write_image(root / "val" / "bird" / "z.png", (9, 9, 9))
    before = sorted(str(p) for p in root.rglob("*"))
    with pytest.raises(DataError) as e:
        load_dataset(str(root), resolution=8)
    real = os.path.realpath(root)
    assert message.format(train=f"{real}/train", root=real) in e.value.message
    assert str(root / link) in e.value.message and "\n" not in e.value.message
    assert sorted(str(p) for p in root.rglob("*")) == before


def test_a_loop_through_two_links_is_refused(tmp_path):
    root = make_folder(tmp_path)
    (root / "train" / "dog" / "a").mkdir()
    (root / "train" / "dog" / "a" / "b").symlink_to(root / "train" / "dog")
    with pytest.raises(DataError, match=r"dog/a/b is a link to .*/train/dog, already read as"):
        load_dataset(str(root), resolution=8)


def test_links_to_images_and_folders_outside_the_dataset_are_followed(tmp_path):
    root = make_folder(tmp_path / "data")
    write_image(tmp_path / "elsewhere" / "more" / "c.png", (0, 0, 240))
    write_image(tmp_path / "elsewhere" / "d.png", (0, 0, 230))
    (root / "train" / "dog" / "more").symlink_to(tmp_path / "elsewhere" / "more")
    (root / "train" / "dog" / "d.png").symlink_to(tmp_path / "elsewhere" / "d.png")
    (root / "train" / "cat" / ".cache").mkdir()  # hidden: ignored, as hidden files are
    write_image(root / "train" / "cat" / ".cache" / "x.png", (1, 1, 1))
    (root / "train" / ".ipynb_checkpoints").mkdir()  # not a class
    ds = load_dataset(str(root), resolution=8)
    assert ds.classes == ["cat", "dog"] and ds.train_labels.tolist() == [0, 1, 1, 1, 1]


def test_a_train_class_linked_to_its_val_twin_is_the_one_named(tmp_path):
    root = make_folder(tmp_path)
    for p in (root / "train" / "cat").iterdir():
        p.unlink()
    (root / "train" / "cat").rmdir()
    (root / "train" / "cat").symlink_to(root / "val" / "cat")
    with pytest.raises(DataError, match=r"train/cat is a link to .*/val/cat, the same folder as"):
        load_dataset(str(root), resolution=8)
