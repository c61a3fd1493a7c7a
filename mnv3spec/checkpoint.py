"""Weights files: safetensors carrying everything needed to rebuild the model.

The metadata holds the resolved spec, class names, input resolution and normalisation, so
``eval``, ``infer`` and ``export`` need nothing but the file. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .builder import SpecNet, build
from .errors import CheckpointError, SpecError

FORMAT = "mnv3spec"
VERSION = "1"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds,
    so a crash never leaves a half-written file. The result gets the usual permissions (some
    writers, safetensors among them, create files readable by their owner only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_weights(
    path: str | Path,
    model: SpecNet,
    *,
    classes: list[str] | None = None,
    mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    std: tuple[float, ...] = (0.5, 0.5, 0.5),
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``model``'s weights and the metadata that rebuilds it, atomically."""
    spec = model.spec
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "spec": spec.to_yaml(),
        "classes": json.dumps(classes or [str(i) for i in range(spec.params["num_classes"])]),
        "resolution": str(spec.params["resolution"]),
        "mean": json.dumps(list(mean)),
        "std": json.dumps(list(std)),
        "extra": json.dumps(extra or {}),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of one of our weights files; :class:`CheckpointError` otherwise."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError("no such file", file=str(path)) from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"not a safetensors weights file ({e})", file=str(path)) from None
    if raw.get("format") != FORMAT:
        raise CheckpointError(
            "a safetensors file, but not an mnv3spec checkpoint (no embedded spec); "
            "torchvision weights load with --init",
            file=str(path),
        )
    try:
        return {
            "spec": yaml.safe_load(raw["spec"]),
            "classes": json.loads(raw["classes"]),
            "resolution": int(raw["resolution"]),
            "mean": tuple(json.loads(raw["mean"])),
            "std": tuple(json.loads(raw["std"])),
            "extra": json.loads(raw.get("extra", "{}")),
        }
    except (KeyError, ValueError, yaml.YAMLError) as e:
        raise CheckpointError(f"damaged metadata ({e})", file=str(path)) from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[SpecNet, dict]:
    """Rebuild the model from the file's own spec, load its weights; return (model, metadata)."""
    meta = read_metadata(path)
    try:
        model = build(meta["spec"])
    except SpecError as e:
        raise CheckpointError(f"its embedded spec does not compile: {e}", file=str(path)) from None
    try:
        state = load_file(str(path), device=str(device))
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError) as e:
        raise CheckpointError(
            f"weights do not fit the embedded spec ({e})", file=str(path)
        ) from None
    return model.to(device), meta
