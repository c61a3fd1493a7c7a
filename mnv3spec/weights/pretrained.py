"""Starting weights for ``train --init``: torchvision's ImageNet MobileNetV3s or a state_dict file.

Which torchvision network a spec is gets decided by trying both against the model's tensors
(shapes, not names), so any spec that compiles to the same network qualifies.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..model.builder import SpecNet
from . import timm
from .torchvision import (
    TORCHVISION_V3,
    load_torchvision,
    torchvision_matches,
    torchvision_v3,
)


def _download_torchvision(name: str) -> dict[str, torch.Tensor]:
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, map_location="cpu", check_hash=True, weights_only=True
        )
    except (OSError, RuntimeError) as e:
        file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise CheckpointError(
            f"cannot download torchvision's {name} weights ({e}). Offline, download {weights.url} "
            f"elsewhere and put it at {file}, or pass --init PATH to a saved torchvision state_dict"
        ) from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        problem = "not a file (a folder or a device)" if path.exists() else "no such file"
        raise CheckpointError(
            f"{problem}; --init takes 'torchvision' or a state_dict file", file=str(path)
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable files fail in many ways; all mean "not a state_dict"
        raise CheckpointError(f"not a readable state_dict ({e})", file=str(path)) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(
            "does not hold a state_dict (a mapping of names to tensors)", file=str(path)
        )
    return dict(state)


def init_from(model: SpecNet, source: str) -> str:
    """Load ImageNet weights from torchvision (``source == "torchvision"``) or a state_dict file.

    Which torchvision network a spec is gets decided by trying both (shapes, not names). The
    classifier is re-initialised when the number of classes differs. Returns a line for the log.
    """
    if source == "torchvision":
        classes = model.spec.num_classes
        fits = [name for name, _ in torchvision_matches(model, 1.0, classes)]
        if not fits:
            raise CheckpointError(
                "--init torchvision needs a spec whose tensors match torchvision's "
                "mobilenet_v3_small or mobilenet_v3_large (width 1.0); this one matches neither"
            )
        state, origin = _download_torchvision(fits[0]), f"torchvision's {fits[0]}"
    elif source.startswith(timm.PREFIX):
        state, origin = timm.init_state(source)
    else:
        state, origin = _read_state_dict(Path(source)), source
    # safetensors files come back sorted by name; the mapping needs the network's own order.
    orders = [list(torchvision_v3(name).state_dict()) for name in TORCHVISION_V3]
    for order in (list(model.state_dict()), *orders, timm.timm_order(state)):
        if set(order) == set(state):
            state = {k: state[k] for k in order}
            break
    try:
        load_torchvision(model, state, source=origin)
        return f"initialised from {origin}"
    except CheckpointError:  # then everything but the classifier must fit, or this names what not
        load_torchvision(model, state, classifier=False, source=origin)
        classes = model.spec.params["num_classes"]
        return f"initialised from {origin}; classifier re-initialised for {classes} classes"
