"""``eval``: a weights file (our safetensors checkpoint, or a runtime's file from export or
quantize: an ``.onnx``, an ExecuTorch ``.pte``, a LiteRT ``.tflite``) scored on the validation
split of the data it was trained on."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.batches import loader, worker_count
from ..data.datasets import load_dataset
from ..errors import DataError
from ..model.memory import check_fits
from ..services.device import pick_device
from ..services.evaluate import EvalResult, evaluate
from .runtimes import load_any, runtime_of


def evaluate_checkpoint(
    path: str | Path,
    *,
    data: str | None = None,
    data_dir: str = "./data",
    batch_size: int = 256,
    device: str = "auto",
) -> EvalResult:
    """Rebuild the model from a weights file alone; evaluate it on ``data``'s validation split
    (by default the data it was trained on, as recorded in the file, else CIFAR-100)."""
    runtime = runtime_of(path) is not None  # a runtime's file: it runs on the CPU
    dev = torch.device("cpu") if runtime else pick_device(device)
    model, meta = load_any(path, dev)
    if not runtime:
        model = model.to(memory_format=torch.channels_last)
        check_fits(model, batch_size, meta["resolution"], training=False, device=dev, what="eval")
    data = data or meta["extra"].get("data", "cifar100")
    ds = load_dataset(data, data_dir, meta["resolution"], num_classes=len(meta["classes"]))
    if list(ds.classes) != list(meta["classes"]):
        raise DataError(
            f"the checkpoint was trained on {len(meta['classes'])} classes "
            f"({_preview(meta['classes'])}) but '{data}' has {len(ds.classes)} "
            f"({_preview(ds.classes)}); evaluate it on the data it was trained for",
            file=str(path),
        )
    val = loader(
        ds.val_images,
        ds.val_labels,
        batch_size,
        shuffle=False,
        workers=worker_count(),
        pin_memory=dev.type == "cuda",
    )
    return evaluate(model, val, mean=meta["mean"], std=meta["std"], device=dev)


def _preview(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (", …" if len(names) > n else "")
