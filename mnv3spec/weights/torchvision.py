"""Everything that knows torchvision's MobileNets: their weights in compiled specs
(:func:`load_torchvision`), the download behind ``train --init torchvision``
(:func:`download_torchvision`) and the twin that ``latency --reference torchvision`` times beside
ours (:func:`torchvision_twin`; :func:`is_twin` also confirms timm's).

The compiled modules register their parameters in the order torchvision's do (stem, then each
block's expand → depthwise → SE → project, then the head), so the mapping pairs the two state dicts
in order and checks every shape. torchvision's ``Linear`` classifier weights become 1×1 convs.
Which torchvision network a spec is gets decided by trying both against the model's tensors
(shapes, not names), so any spec that compiles to the same network qualifies.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..model.builder import SpecNet
from ..model.parity import max_difference
from ..ops.layers import Bneck

TORCHVISION_V3 = ("mobilenet_v3_small", "mobilenet_v3_large")


def _head_keys(model: nn.Module) -> set[str]:
    """The weight and bias of the last layer: what ``classifier=False`` leaves untouched."""
    last = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)][-1]
    return {f"{last}.weight", f"{last}.bias"}


def load_torchvision(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    classifier: bool = True,
    source: str = "the torchvision state_dict",
) -> list[tuple[str, str]]:
    """Copy a torchvision MobileNet ``state_dict`` into a compiled model of the same network.

    With ``classifier=False`` the final layer keeps its own initialisation (for fine-tuning to a
    different number of classes). Returns the (ours, theirs) key pairs that were copied.
    Raises :class:`CheckpointError` naming ``source`` and the first entry that does not fit.
    """
    ours = model.state_dict()
    if len(ours) != len(state_dict):
        raise CheckpointError(
            f"{source} has {len(state_dict)} entries but the compiled model has {len(ours)}: "
            "they are not the same network (check the spec, width and si)"
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
                f"{source}: {theirs_key} has shape {shape} but {key} needs {tuple(mine.shape)}: "
                "not the same network (check the spec, width and num_classes)"
            )
        new_state[key] = theirs
        pairs.append((key, theirs_key))
    model.load_state_dict(new_state, strict=False)
    return pairs


def torchvision_v3(name: str, width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    """A freshly initialised torchvision MobileNetV3 (``name`` in :data:`TORCHVISION_V3`)."""
    import torchvision  # only the few callers that compare against torchvision pay for it

    return getattr(torchvision.models, name)(width_mult=width, num_classes=num_classes)


def torchvision_matches(
    model: nn.Module, width: float, num_classes: int
) -> Iterator[tuple[str, nn.Module]]:
    """The torchvision MobileNetV3s, built at ``width`` with ``num_classes`` outputs, whose weights
    :func:`load_torchvision` copies into ``model`` (same tensors, in order): ``(name, network)``.

    Chosen by data, not by name, so any spec that compiles to the same network qualifies.
    ``model`` itself is left untouched.
    """
    ours = sum(p.numel() for p in model.parameters())
    for name in TORCHVISION_V3:
        theirs = torchvision_v3(name, width, num_classes)
        if sum(p.numel() for p in theirs.parameters()) != ours:
            continue
        try:
            load_torchvision(copy.deepcopy(model), theirs.state_dict())
        except CheckpointError:
            continue
        yield name, theirs


def download_torchvision(name: str) -> dict[str, torch.Tensor]:
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
            f"elsewhere and put it at {file}, or start from a saved state_dict file instead"
        ) from None


def torchvision_twin(model: SpecNet) -> nn.Module | None:
    """torchvision's MobileNetV3 computing the same function as ``model``, or None: a candidate
    whose weights fit (:func:`torchvision_matches`) and that :func:`is_twin` confirms."""
    spec = model.spec
    for _, theirs in torchvision_matches(model, spec.width, spec.num_classes):
        if is_twin(model, theirs):
            return theirs
    return None


Loader = Callable[[nn.Module, Mapping[str, torch.Tensor]], list[tuple[str, str]]]


def is_twin(
    model: SpecNet,
    theirs: nn.Module,
    load: Loader = load_torchvision,
    shortcut: str = "use_res_connect",
) -> bool:
    """Whether ``theirs``, given our strides, BN eps and residual flags (``si=1`` is an option of
    neither torchvision nor timm; ``shortcut`` names the flag on their blocks), computes
    ``model``'s function: with its weights loaded into a copy of ours by ``load``, the outputs
    agree."""
    spec = model.spec
    probe = copy.deepcopy(model).cpu().eval()
    try:
        load(probe, theirs.state_dict())
    except CheckpointError:
        return False
    theirs.eval()
    _align(probe, theirs, shortcut)
    size = spec.resolution
    diff = max_difference(probe, theirs, [(2, spec.in_channels, size, size)])
    return diff.within(relative=1e-4)  # relative: random-init logits are tiny


def give_weights(model: nn.Module, twin: nn.Module, load: Loader = load_torchvision) -> None:
    """Copy ``model``'s tensors into its ``twin``, paired as ``load`` pairs them, so both compute
    with the same numbers."""
    pairs = load(copy.deepcopy(model), twin.state_dict())
    ours, theirs = model.state_dict(), twin.state_dict()
    with torch.no_grad():
        for mine, their_key in pairs:
            theirs[their_key].copy_(ours[mine].reshape(theirs[their_key].shape))


def _align(ours: nn.Module, theirs: nn.Module, shortcut: str) -> None:
    """Give their convolutions our strides, their BatchNorms our eps and their blocks our
    shortcuts, pairing them in order (the order :func:`load_torchvision` pairs weights in)."""
    our_convs = [m for m in ours.modules() if isinstance(m, nn.Conv2d)]
    their_convs = [m for m in theirs.modules() if isinstance(m, nn.Conv2d)]
    for o, t in zip(our_convs, their_convs, strict=False):  # ours also has the 1×1 classifier
        t.stride, t.padding = o.stride, o.padding
    our_bns = [m for m in ours.modules() if isinstance(m, nn.BatchNorm2d)]
    their_bns = [m for m in theirs.modules() if isinstance(m, nn.BatchNorm2d)]
    for o, t in zip(our_bns, their_bns, strict=False):
        t.eps = o.eps  # timm's non-tf_ models use PyTorch's 1e-5, the paper's specs 1e-3
    our_blocks = [m for m in ours.modules() if isinstance(m, Bneck)]
    their_blocks = [m for m in theirs.modules() if hasattr(m, shortcut)]
    # timm's last 1×1 conv row is a block too; a wrong pairing shows in is_twin's outputs.
    for o, t in zip(our_blocks, their_blocks, strict=False):
        setattr(t, shortcut, o.residual)
