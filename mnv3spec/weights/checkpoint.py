"""Weights files: safetensors carrying everything needed to rebuild the model.

The metadata holds the resolved spec, class names, input resolution and normalisation, so
``eval``, ``infer`` and ``export`` need nothing but the file. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError, SpecError
from ..files import atomic_path
from ..model.builder import SpecNet, build
from ..spec.limits import MAX_CLASSES
from ..spec.load import load_spec
from ..spec.read import read_yaml

FORMAT = "mnv3spec"
VERSION = "1"  # what save_weights writes
READABLE_VERSIONS = ("1",)  # what this release reads: a later layout is refused, not guessed at
MAX_HEADER = 16 << 20  # bytes of safetensors header (tensor index + metadata) we agree to read
MAX_RESOLUTION = 8192  # a file's word is not trusted with the memory an image of that size takes


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
        "classes": json.dumps(classes or [str(i) for i in range(spec.num_classes)]),
        "resolution": str(spec.resolution),
        "mean": json.dumps(list(mean)),
        "std": json.dumps(list(std)),
        "extra": json.dumps(extra or {}),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def check_file(path: str | Path) -> Path:
    """``path`` if it is a regular file whose safetensors header is a sane size; a
    :class:`CheckpointError` otherwise, before anything large is read: a folder, a FIFO or a
    device (a link to ``/dev/zero``) is refused by :func:`os.stat`, and the header length (the
    file's first 8 bytes) is checked against :data:`MAX_HEADER` and the file's size."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError("no such file", file=str(path)) from None
    except OSError as e:
        raise CheckpointError(f"cannot read ({e.strerror or e})", file=str(path)) from None
    if stat.S_ISDIR(info.st_mode):
        named_like_one = path.suffix == ".safetensors"  # e.g. found by infer's search
        hint = (
            ", not a checkpoint file"
            if named_like_one
            else f"; give a .safetensors file (e.g. {path / 'best.safetensors'})"
        )
        raise CheckpointError(f"is a folder{hint}", file=str(path))
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(
            "is not a regular file (a pipe, device or socket), not a checkpoint file",
            file=str(path),
        )
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CheckpointError(f"cannot read ({e.strerror or e})", file=str(path)) from None
    if len(head) < 8:
        raise CheckpointError(
            f"not a safetensors weights file ({info.st_size} bytes)", file=str(path)
        )
    (length,) = struct.unpack("<Q", head)
    if length > min(MAX_HEADER, info.st_size - 8):
        raise CheckpointError(
            f"not a safetensors weights file (its header claims {length:,} bytes; "
            f"the file has {info.st_size:,} and at most {MAX_HEADER:,} are read)",
            file=str(path),
        )
    return path


def carries_spec(path: str | Path) -> bool:
    """Whether ``path`` is a safetensors file whose metadata names it one of ours; False for any
    other file, readable or not (its own reader then says what is wrong with it)."""
    try:
        with safe_open(str(check_file(path)), framework="pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except (CheckpointError, SafetensorError, OSError, ValueError):
        return False


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of one of our weights files; :class:`CheckpointError` otherwise."""
    path = check_file(path)
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
            "torchvision weights load as starting weights (init)",
            file=str(path),
        )
    if raw.get("version") not in READABLE_VERSIONS:
        found = "no version" if "version" not in raw else f"version {raw['version']!r}"
        raise CheckpointError(
            f"metadata has {found}; this release reads version "
            f"{', '.join(READABLE_VERSIONS)} (a file from a newer mnv3spec needs that release)",
            file=str(path),
        )
    try:
        spec, _ = read_yaml(raw["spec"], f"{path} (embedded spec)")
        meta = {key: json.loads(raw[key]) for key in ("classes", "resolution", "mean", "std")}
        meta["extra"] = json.loads(raw.get("extra", "{}"))
    except KeyError as e:
        raise CheckpointError(f"damaged metadata (no {e})", file=str(path)) from None
    except (ValueError, SpecError, RecursionError) as e:
        raise CheckpointError(f"damaged metadata ({e})", file=str(path)) from None
    problem = metadata_problem(spec, meta)
    if problem:
        raise CheckpointError(f"damaged metadata: {problem}", file=str(path))
    return {**meta, "spec": spec, "mean": tuple(meta["mean"]), "std": tuple(meta["std"])}


def metadata_problem(spec: Any, meta: dict[str, Any]) -> str | None:
    """What is wrong with decoded metadata, or None: it comes from a file, so trust nothing.

    ``spec`` is the embedded spec as read (a mapping, not yet loaded) and ``meta`` the decoded
    ``classes``, ``resolution``, ``mean``, ``std`` and ``extra``: the keys a checkpoint carries
    and every runtime's file carries with it (an ``.onnx``'s properties, a ``.pte``'s or
    ``.tflite``'s metadata file), so each reader checks them by this one rule. The answer is one
    phrase for a message ("3 class names for a spec with num_classes 4")."""
    if not isinstance(spec, dict) or not isinstance(spec.get("params"), dict):
        return "the embedded spec is not a mapping with params"
    classes, resolution = meta["classes"], meta["resolution"]
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        return "classes is not a list of names"
    if len(classes) > MAX_CLASSES:
        return f"classes lists {len(classes):,} names, more than the {MAX_CLASSES:,} a spec allows"
    if len(set(classes)) != len(classes):  # counted once each: a huge list must not take hours
        repeated = sorted(c for c, n in Counter(classes).items() if n > 1)
        return f"classes lists {', '.join(map(repr, repeated[:3]))} more than once"
    expected = spec["params"].get("num_classes")
    if len(classes) != expected:
        return f"{len(classes)} class names for a spec with num_classes {expected}"
    if isinstance(resolution, bool) or not isinstance(resolution, int):
        return f"resolution {resolution!r} is not an integer"
    if not 1 <= resolution <= MAX_RESOLUTION:
        return f"resolution {resolution} is outside 1..{MAX_RESOLUTION}"
    channels = spec["params"].get("in_channels", 3)
    for key in ("mean", "std"):
        values = meta[key]
        if not (isinstance(values, list) and all(_finite(v) for v in values)):
            return f"{key} is not a list of finite numbers"
        if len(values) != channels:
            return f"{key} has {len(values)} values for {channels} input channels"
    if any(v <= 0 for v in meta["std"]):
        return "std must be positive"
    if not isinstance(meta["extra"], dict):
        return "extra is not a mapping"
    data = meta["extra"].get("data", "cifar100")  # eval's default dataset: a name or a path
    if not isinstance(data, str) or not data or "\0" in data:
        return f"extra.data {data!r} is not a dataset name or folder"
    return None


def _finite(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[SpecNet, dict]:
    """Rebuild the model from the file's own spec, load its weights; return (model, metadata)."""
    meta = read_metadata(path)
    try:
        model = build(load_spec(meta["spec"]))
    except SpecError as e:
        e.file = None if e.file == "<dict>" else e.file  # the spec is the file's own: say so
        raise CheckpointError(f"its embedded spec does not compile: {e}", file=str(path)) from None
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"unreadable weights ({e})", file=str(path)) from None
    problem = _weights_problem(state, model.state_dict())
    if problem:
        raise CheckpointError(problem, file=str(path))
    model.load_state_dict(state)
    return model.to(device), meta


def _weights_problem(state: dict[str, torch.Tensor], mine: dict[str, torch.Tensor]) -> str | None:
    """What makes the file's tensors unfit for the model, or None: names and shapes, kinds of
    number (``load_state_dict`` would silently cast integers or booleans to float), and NaN or
    infinity, which would make every prediction NaN."""
    misfit = [k for k in mine if k not in state or state[k].shape != mine[k].shape]
    misfit += [k for k in state if k not in mine]
    if misfit:
        return f"{len(misfit)} weights do not fit the embedded spec, the first being {misfit[0]}"
    for name, tensor in state.items():
        if tensor.dtype.is_floating_point != mine[name].dtype.is_floating_point:
            return f"weight {name} is {tensor.dtype}, expected {mine[name].dtype}"
    for name, tensor in state.items():
        if tensor.dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
            return (
                f"weight {name} (the first such) holds NaN or infinite values, so every "
                "prediction would be NaN: the training that wrote it diverged, or the file "
                "is damaged"
            )
    return None
