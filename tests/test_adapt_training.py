"""What adapt asks of a training: ``holdout`` (training images that validate instead of the test
split, a fixed draw never trained on) and ``steps_per_epoch`` (an epoch cut short: a fine-tune)."""

from __future__ import annotations

import pytest
import torch

from mnv3spec.data.datasets import load_dataset
from mnv3spec.errors import DataError

from .conftest import run_cli


def test_a_holdout_is_taken_from_training_and_never_trained_on():
    data = load_dataset("synthetic", "./data", 16, num_classes=4)
    held = data.held_out(50)
    assert len(held.val_labels) == 50 and len(held.train_labels) == len(data.train_labels) - 50
    assert torch.equal(held.val_images, data.held_out(50).val_images)  # the same draw each time
    train = {bytes(x.numpy()) for x in held.train_images}
    assert not any(bytes(x.numpy()) in train for x in held.val_images)


@pytest.mark.parametrize("count", [0, 10**6])
def test_a_holdout_of_no_or_every_image_is_refused(count):
    data = load_dataset("synthetic", "./data", 16, num_classes=4)
    with pytest.raises(DataError, match="a holdout must be 1"):
        data.held_out(count)


def test_train_with_holdout_and_steps_per_epoch(tmp_path):
    r = run_cli("train", "tests/data/tiny_phone.yaml", "--data", "synthetic", "--epochs", "1",
                "--batch", "16", "--holdout", "40", "--steps-per-epoch", "3", "--device", "cpu",
                "--out", str(tmp_path), "--name", "h")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "/ 40 val" in r.stdout and "3 steps/epoch" in r.stdout
