"""Datasets by name: unknown names refused, synthetic data deterministic and learnable."""

from __future__ import annotations

import pytest
import torch

from mnv3spec.data import folders
from mnv3spec.data.datasets import load_dataset
from mnv3spec.errors import DataError


def test_unknown_name_lists_choices(tmp_path):
    with pytest.raises(DataError, match="cifar100, cifar10, fashion-mnist, mnist, synthetic"):
        load_dataset(str(tmp_path / "nope"))


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


def test_synthetic_data_too_large_for_memory_is_refused(monkeypatch):
    monkeypatch.setattr(folders, "MEMORY_FRACTION", 0)  # no room for anything
    with pytest.raises(DataError, match=r"640 synthetic images at 8×8 take .* lower"):
        load_dataset("synthetic", resolution=8)


@pytest.mark.parametrize("where", ["root", "dataset", "parent"])
def test_a_file_in_the_way_of_the_data_root_is_one_paragraph_before_any_work(
    tmp_path, capsys, where
):
    """Issue 31: ``--data-dir`` a file, or ``D/mnist`` a file: exit 2 naming it, no run."""
    from cli import main

    (tmp_path / "D").mkdir()
    blocker = {"root": tmp_path / "f", "dataset": tmp_path / "D" / "mnist"}.get(where)
    blocker = blocker or tmp_path / "f"
    blocker.write_text("mine")
    data_dir = {"root": "f", "dataset": "D", "parent": "f/below"}[where]
    argv = ["train", "small", "--data", "mnist", "--data-dir", str(tmp_path / data_dir)]
    assert main([*argv, "--epochs", "1", "--out", str(tmp_path / "runs"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: {blocker}: --data-dir: is a file, not a folder")
        and err.count("\n") == 1
    )
    assert not (tmp_path / "runs").exists() and blocker.read_text() == "mine"
