"""int8 models written by ``quantize``, read back: one ``.onnx`` whose ``metadata_props`` carry
what a checkpoint's metadata carries (spec, classes, resolution, mean, std, extra), run by ONNX
Runtime on the CPU. ``eval`` and ``infer`` take these files as they take checkpoints
(:func:`load_any`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, UserError
from ..spec.load import load_spec, read_yaml
from ..weights.checkpoint import _metadata_problem, load_model
from .export import ort_session, require_onnx

FORMAT = "mnv3spec-int8"  # metadata_props["format"] of our int8 files
SUFFIX = ".onnx"


def is_int8_model(path: str | Path) -> bool:
    """Whether ``path`` is an int8 model written by :func:`quantize_checkpoint` (an ``.onnx``
    whose metadata says so); cheap enough to call on every file ``infer`` meets."""
    path = Path(path)
    if path.suffix.lower() != SUFFIX or not path.is_file():
        return False
    try:
        return _read_props(path).get("format") == FORMAT
    except (CheckpointError, ImportError):  # without onnx nothing is an int8 model
        return False


def _read_props(path: Path) -> dict[str, str]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, ValueError, OSError... for a bad file
        raise CheckpointError(
            f"not a readable ONNX file ({type(e).__name__})", file=str(path)
        ) from None
    return {p.key: p.value for p in proto.metadata_props}


class Int8Model(nn.Module):
    """An int8 ``.onnx`` as a module: ``model(x)`` runs ONNX Runtime on the CPU on a normalised
    float NCHW batch and returns float logits on ``x``'s device. It has no parameters, so
    ``evaluate`` and ``infer`` use it as they use a :class:`SpecNet` (``.spec`` included)."""

    def __init__(self, path: Path, spec: Any, threads: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.path = path
        self._session = ort_session(path, "cpu", threads=threads or torch.get_num_threads())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {"input": x.detach().to("cpu", torch.float32).contiguous().numpy()}
        return torch.from_numpy(self._session.run(None, feed)[0]).to(x.device)


def load_int8(path: str | Path, threads: int | None = None) -> tuple[Int8Model, dict]:
    """``(Int8Model, metadata)`` from an int8 file; the metadata is decoded and checked as
    :func:`~mnv3spec.weights.checkpoint.read_metadata` decodes a checkpoint's."""
    require_onnx()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such file", file=str(path))
    raw = _read_props(path)
    if raw.get("format") != FORMAT:
        raise CheckpointError("an ONNX file, but not an mnv3spec int8 model", file=str(path))
    try:
        spec, _ = read_yaml(raw["spec"], f"{path} (embedded spec)")
        meta = {key: json.loads(raw[key]) for key in ("classes", "resolution", "mean", "std")}
        meta["extra"] = json.loads(raw.get("extra", "{}"))
        problem = _metadata_problem(spec, meta)
    except (KeyError, ValueError, UserError) as e:
        raise CheckpointError(f"damaged metadata ({e})", file=str(path)) from None
    if problem:
        raise CheckpointError(f"damaged metadata: {problem}", file=str(path))
    meta = {**meta, "spec": spec, "mean": tuple(meta["mean"]), "std": tuple(meta["std"])}
    return Int8Model(path, load_spec(spec), threads), meta


def load_any(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """A checkpoint or an int8 file, as ``(model, metadata)``: the one call ``eval`` and
    ``infer`` need to accept both. An int8 model always runs on the CPU (ONNX Runtime) and hands
    its logits back on ``device``."""
    if is_int8_model(path):
        return load_int8(path)
    return load_model(path, device)
