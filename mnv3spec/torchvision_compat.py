"""Weights of torchvision's MobileNets into compiled specs.

The compiled modules register their parameters in the order torchvision's do (stem, then each
block's expand → depthwise → SE → project, then the head), so the mapping pairs the two state dicts
in order and checks every shape. torchvision's ``Linear`` classifier weights become 1×1 convs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .errors import CheckpointError


def _head_keys(model: nn.Module) -> set[str]:
    """The weight and bias of the last layer: what ``classifier=False`` leaves untouched."""
    last = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)][-1]
    return {f"{last}.weight", f"{last}.bias"}


def load_torchvision(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, classifier: bool = True
) -> list[tuple[str, str]]:
    """Copy a torchvision MobileNet ``state_dict`` into a compiled model of the same network.

    With ``classifier=False`` the final layer keeps its own initialisation (for fine-tuning to a
    different number of classes). Returns the (ours, theirs) key pairs that were copied.
    Raises :class:`CheckpointError` naming the first entry that does not fit.
    """
    ours = model.state_dict()
    if len(ours) != len(state_dict):
        raise CheckpointError(
            f"the torchvision state_dict has {len(state_dict)} entries but the compiled model "
            f"has {len(ours)}: they are not the same network (check the spec, width and si)"
        )
    skip = set() if classifier else _head_keys(model)
    pairs, new_state = [], {}
    for (key, mine), (theirs_key, theirs) in zip(ours.items(), state_dict.items(), strict=True):
        if key in skip:
            continue
        shape = tuple(theirs.shape)
        if theirs.dim() == 2 and mine.dim() == 4 and mine.shape[2:] == (1, 1):
            theirs = theirs[:, :, None, None]  # Linear → 1×1 conv
        if theirs.shape != mine.shape:
            raise CheckpointError(
                f"torchvision's {theirs_key} has shape {shape} but {key} needs "
                f"{tuple(mine.shape)}: not the same network (check the spec, width and num_classes)"
            )
        new_state[key] = theirs
        pairs.append((key, theirs_key))
    model.load_state_dict(new_state, strict=False)
    return pairs
