"""``eval`` of damaged or hostile checkpoints: exit 2, one paragraph, no traceback, files intact;
and :func:`evaluate` itself on a tiny model."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mnv3spec.services.evaluate import evaluate
from mnv3spec.weights.checkpoint import save_weights

from .conftest import tiny_checkpoint

CLASSES = ["a", "b", "c"]


def _digest(folder: Path) -> dict[str, str]:
    """Every regular file under ``folder`` and its md5, to show nothing was changed."""
    return {
        str(p): hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _refused(cli, tmp_path, *args) -> str:
    before = _digest(tmp_path)
    result = cli("eval", *args, "--data", "synthetic", "--device", "cpu", timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert _digest(tmp_path) == before
    return result.stderr


def test_eval_refuses_a_metadata_version_it_does_not_read(tmp_path, cli):
    good = tmp_path / "good.safetensors"
    tiny_checkpoint(good, CLASSES)
    with safe_open(str(good), framework="pt") as f:
        metadata = {**f.metadata(), "version": "99"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    save_file(tensors, str(tmp_path / "new.safetensors"), metadata=metadata)
    err = _refused(cli, tmp_path, tmp_path / "new.safetensors")
    assert err == (
        f"error: {tmp_path / 'new.safetensors'}: metadata has version '99'; this release reads "
        "version 1 (a file from a newer mnv3spec needs that release)\n"
    )


def test_eval_refuses_nan_weights(tmp_path, cli):
    model = tiny_checkpoint(tmp_path / "good.safetensors", CLASSES)
    with torch.no_grad():
        [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1].weight[0, 0] = torch.nan
    save_weights(tmp_path / "nan.safetensors", model, classes=CLASSES)
    err = _refused(cli, tmp_path, tmp_path / "nan.safetensors")
    assert err.startswith(f"error: {tmp_path / 'nan.safetensors'}: weight ")
    assert "holds NaN or infinite values" in err


def test_eval_of_a_folder_named_like_a_checkpoint(tmp_path, cli):
    (tmp_path / "best.safetensors").mkdir()
    err = _refused(cli, tmp_path, tmp_path / "best.safetensors")
    assert err == f"error: {tmp_path / 'best.safetensors'}: is a folder, not a checkpoint file\n"


def test_eval_of_a_fifo_or_a_device_does_not_wait_or_read_forever(tmp_path, cli):
    os.mkfifo(tmp_path / "pipe.safetensors")
    (tmp_path / "zero.safetensors").symlink_to("/dev/zero")
    for name in ("pipe.safetensors", "zero.safetensors"):
        err = _refused(cli, tmp_path, tmp_path / name)
        assert "is not a regular file (a pipe, device or socket)" in err


def test_eval_at_a_batch_too_large_for_memory_is_refused_before_allocating(tmp_path, cli):
    tiny_checkpoint(tmp_path / "best.safetensors", CLASSES)
    err = _refused(cli, tmp_path, tmp_path / "best.safetensors", "--batch", "100000000")
    assert err.startswith("error: eval would need about ")
    assert "a forward pass at batch 100000000, 32×32" in err and "lower the batch size" in err


def test_evaluate_counts_top1_topk_and_loss():
    class Fixed(torch.nn.Module):
        def forward(self, x):  # class 0 for every image, class 1 second
            return torch.tensor([[2.0, 1.0, 0.0]]).expand(len(x), 3)

    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 2])
    r = evaluate(
        Fixed(), [(images, labels)], mean=(0.5,) * 3, std=(0.5,) * 3, device=torch.device("cpu")
    )
    assert (r.top1, r.topk, r.images, r.k) == (50.0, 100.0, 4, 3)


def test_evaluate_takes_a_function_of_a_batch_and_hands_it_contiguous_images():
    """What a runtime's session or a PT2E graph is: no eval mode, and a contiguous batch."""
    seen = []

    def run(x):
        seen.append(x.is_contiguous())
        return torch.tensor([[2.0, 1.0, 0.0]]).expand(len(x), 3)

    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 2])
    r = evaluate(
        run, [(images, labels)], mean=(0.5,) * 3, std=(0.5,) * 3, device=torch.device("cpu")
    )
    assert (r.top1, r.topk, r.images, r.k) == (50.0, 100.0, 4, 3) and seen == [True]


def test_eval_on_a_folder_whose_class_is_a_link_to_the_other_split(tmp_path, cli):
    from PIL import Image

    tiny_checkpoint(tmp_path / "best.safetensors", CLASSES)
    for split in ("train", "val"):
        for c in CLASSES[:2]:
            (tmp_path / "data" / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "data" / split / c / "i.png")
    (tmp_path / "data" / "train" / "c").mkdir()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "data" / "train" / "c" / "i.png")
    (tmp_path / "data" / "val" / "c").symlink_to(tmp_path / "data" / "train")
    before = _digest(tmp_path)
    result = cli("eval", tmp_path / "best.safetensors", "--data", tmp_path / "data")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    real = os.path.realpath(tmp_path / "data" / "train")
    assert result.stderr == (
        f"error: {tmp_path / 'data' / 'val' / 'c'} is a link to {real}, which holds the class "
        "folder train/c: its images would be read again as val/c\n"
    )
    assert _digest(tmp_path) == before


def test_eval_on_cifar_with_its_meta_file_missing_names_it(tmp_path, cli):
    tiny_checkpoint(tmp_path / "best.safetensors", CLASSES)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4"):
        (folder / name).write_bytes(b"x")
    (folder / "data_batch_5").write_bytes(b"x")
    (folder / "test_batch").write_bytes(b"x")
    before = _digest(tmp_path)
    args = ("--data", "cifar10", "--data-dir", tmp_path / "data")
    result = cli("eval", tmp_path / "best.safetensors", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        f"error: {folder}: the extracted CIFAR-10 folder is incomplete: it lacks batches.meta "
    )
    assert "downloading" not in result.stderr and "Delete the folder" in result.stderr
    assert _digest(tmp_path) == before
