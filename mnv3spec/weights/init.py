"""Starting weights for ``train --init``: torchvision's or timm's ImageNet MobileNetV3s, or a
state_dict file (either library's, as ``torch.save`` or safetensors wrote it), or one of our
checkpoints, of the same network or of a wider one (narrowed by :mod:`.inherit`).

Which network a file holds is decided by its tensors (names and shapes), not by its name: the
mapping pairs tensors in the network's own order, so any spec that compiles to the same network
qualifies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..kinds import named_or_is
from ..model.builder import SpecNet
from . import timm
from .checkpoint import carries_spec, check_file, load_model
from .inherit import inherit
from .torchvision import (
    TORCHVISION_V3,
    download_torchvision,
    load_torchvision,
    torchvision_matches,
    torchvision_v3,
)

SOURCES = "'torchvision', 'timm:NAME[.TAG]' or a state_dict file"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict file: safetensors, or ``torch.load`` with ``weights_only=True``."""
    safetensors = named_or_is(path, "safetensors")
    if safetensors:
        check_file(path)  # a folder, a pipe, a device or a huge header refused before reading
    elif not path.is_file():  # torch.load of a pipe or a device would never end
        problem = "not a file (a folder or a device)" if path.exists() else "no such file"
        raise CheckpointError(f"{problem}; starting weights are {SOURCES}", file=str(path))
    try:
        if safetensors:
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable files fail in many ways; all mean "not a state_dict"
        raise CheckpointError(f"not a readable state_dict ({_reason(e)})", file=str(path)) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(
            f"does not hold a state_dict (a mapping of names to tensors); starting weights are "
            f"{SOURCES}",
            file=str(path),
        )
    return dict(state)


def _reason(error: Exception) -> str:
    """An exception's text as one line: torch.load's refusal of a file runs over pages, telling
    how to unpickle anything; the reason is the line after "WeightsUnpickler error:"."""
    text = str(error)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return found.group(1).strip() if found else " ".join(text.split())


def _torchvision_state(model: SpecNet) -> tuple[dict[str, torch.Tensor], str]:
    fits = [name for name, _ in torchvision_matches(model, 1.0, model.spec.num_classes)]
    if not fits:
        raise CheckpointError(
            "torchvision's weights need a spec whose tensors match torchvision's "
            "mobilenet_v3_small or mobilenet_v3_large (width 1.0); this one matches neither"
        )
    return download_torchvision(fits[0]), f"torchvision's {fits[0]}"


def _in_network_order(model: SpecNet, state: dict[str, torch.Tensor]) -> dict:
    """safetensors files come back sorted by name; the mapping needs the network's own order."""
    orders = [list(torchvision_v3(name).state_dict()) for name in TORCHVISION_V3]
    by_row = _by_row_index(model, state)
    for order in (list(model.state_dict()), *orders, by_row, timm.timm_order(state)):
        if set(order) == set(state):
            return {k: state[k] for k in order}
    return state


def _by_row_index(model: SpecNet, state: dict[str, torch.Tensor]) -> list[str]:
    """The keys of a file of this network saved with other row names (``layers.r03_bneck``,
    before rows had names; ``layers.bneck3`` now) in the network's order, rows matched by index;
    [] when its keys are not of that form."""
    index = {p.name: p.row.index for p in model.plans}
    ours = {_row_key(k, index): k for k in model.state_dict()}
    theirs = {_row_key(k, None): k for k in state}
    if None in ours or None in theirs or set(ours) != set(theirs):
        return []
    return [theirs[key] for key in ours]


def _row_key(key: str, index: dict[str, int] | None) -> tuple | None:
    """``layers.bneck3.dw.conv.weight`` → ``(3, "dw.conv.weight")`` (a generated name r03_bneck
    gives its index when ``index`` is None); None for a key of no row."""
    head, row, rest = [*key.split(".", 2), "", ""][:3]
    if head != "layers" or not rest:
        return None
    if index is not None:
        return (index[row], rest) if row in index else None
    found = re.fullmatch(r"r([0-9]+)_[a-z0-9]+", row)
    return (int(found.group(1)), rest) if found else None


def init_from(model: SpecNet, source: str) -> str:
    """Load starting weights from ``source`` (see :data:`SOURCES`); the classifier is
    re-initialised when the number of classes differs, and the weights of one of our checkpoints
    of a wider network are narrowed into ``model`` (:func:`.inherit.inherit`). Returns the lines
    for the log."""
    parent = None
    if source == "torchvision":
        state, origin = _torchvision_state(model)
    elif source.startswith(timm.PREFIX):
        state, origin = timm.init_state(source)
    elif carries_spec(Path(source)):  # rebuilt from its own spec: it may be a wider network
        parent, _ = load_model(source)
        state, origin = parent.state_dict(), source
    else:
        state, origin = read_state_dict(Path(source)), source
    state = _in_network_order(model, state)
    try:
        load_torchvision(model, state, source=origin)
        return f"initialised from {origin}"
    except CheckpointError:  # then everything but the classifier must fit, or this names what not
        try:
            load_torchvision(model, state, classifier=False, source=origin)
        except CheckpointError as e:
            if parent is not None:
                return _narrowed(model, parent, origin)
            raise (_only_ours_narrow(e) if origin == source else e) from None
        classes = model.spec.num_classes
        return f"initialised from {origin}; classifier re-initialised for {classes} classes"


def _narrowed(model: SpecNet, parent: SpecNet, origin: str) -> str:
    """``parent``'s weights narrowed into ``model``, and the log's lines: one per narrowed width."""
    try:
        kept = inherit(parent, model)
    except CheckpointError as e:
        raise CheckpointError(e.message, file=origin) from None
    lines = [f"  {k}" for k in kept]
    for theirs, mine in zip(parent.plans, model.plans, strict=True):  # adapt's --moves kernel se
        was, now = theirs.row.fields, mine.row.fields
        if was.get("k") != now.get("k"):
            lines.append(
                f"  {mine.name}: k {was['k']} → {now['k']}, the centre of each filter kept"
            )
        if was.get("se") and not now.get("se"):
            lines.append(f"  {mine.name}: se dropped, the rest kept")
    return "\n".join([f"initialised from {origin}, a wider network:", *lines])


def _only_ours_narrow(error: CheckpointError) -> CheckpointError:
    """A file of another network, not ours: only ours carry the spec a narrowing needs."""
    hint = "; only an mnv3spec checkpoint (its spec in the metadata) can start a narrower network"
    return CheckpointError(error.message + hint, file=error.file)
