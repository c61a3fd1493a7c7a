"""Batches and augmentation: the batched ops checked against a per-image reference, epoch
orders sharded across ranks, and a folder decoded per batch by workers giving the same batches."""

from __future__ import annotations

import multiprocessing

import pytest
import torch
import torchvision.transforms.functional as TF

from mnv3spec.data import cifar, folders
from mnv3spec.data.batches import augment, batches, loader, normalize
from mnv3spec.data.datasets import load_dataset
from mnv3spec.errors import DataError

from .test_folders import noise_folder


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
    monkeypatch.setattr(folders, "MEMORY_FRACTION", 0)
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
    monkeypatch.setattr(folders, "MEMORY_FRACTION", 0)
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
    monkeypatch.setattr(folders, "MEMORY_FRACTION", 0)
    ds = load_dataset(str(root), resolution=8)  # nothing decoded yet
    with pytest.raises(DataError) as e:
        list(loader(ds.train_images, ds.train_labels, 4, shuffle=False, workers=2))
    assert str(e.value).startswith(f"{broken}: cannot read this image")
    assert "Traceback" not in str(e.value) and "worker" not in str(e.value)


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
    mean, std = cifar.CIFAR100_MEAN, cifar.CIFAR100_STD
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
