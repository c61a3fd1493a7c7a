"""timm's MobileNetV3s: their weights into compiled specs, and their architectures as specs.

timm registers a MobileNetV3's tensors in the order the compiled specs do (stem, each block's
expand → depthwise → SE → project, the head), so :func:`load_timm` pairs the two state dicts in
order with every shape checked, as :func:`load_torchvision` does. Files that come back sorted by
name (safetensors) are put back in timm's module order first (:func:`timm_order`). The twin that
``latency --reference timm`` times beside ours is found by trying each timm MobileNetV3
(:func:`timm_twin`).

timm is optional (the ``test`` extra); only the functions that build timm models import it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ..errors import CheckpointError, UserError
from ..model.builder import SpecNet
from ..text import quoted
from .torchvision import is_twin, load_torchvision

PREFIX = "timm:"
ACTIVATIONS = {nn.ReLU: "RE", nn.Hardswish: "HS", nn.ReLU6: "R6", nn.Identity: "none"}

# Within one timm block, the order its modules register their tensors in.
_BLOCK_ORDER = {
    "ir": ("conv_pw", "bn1", "conv_dw", "bn2", "se", "conv_pwl", "bn3"),  # InvertedResidual
    "ds": ("conv_dw", "bn1", "se", "conv_pw", "bn2"),  # DepthwiseSeparableConv
    "cn": ("conv", "bn1"),  # ConvBnAct
}
_TENSOR_ORDER = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_TOP_ORDER = ("conv_stem", "bn1", "blocks", "conv_head", "classifier")
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(\d+)\.(\w+)\.(.+)$")


def _kind(subs: set[str]) -> str:
    return "ir" if "conv_pwl" in subs else ("ds" if "conv_dw" in subs else "cn")


def timm_order(keys: Iterable[str]) -> list[str]:
    """``keys`` of a timm MobileNetV3 state_dict in the order timm's modules register them
    (a safetensors file stores them sorted by name). Other networks' keys come back as given."""
    keys = list(keys)
    if "conv_stem.weight" not in keys:
        return keys
    subs: dict[tuple[int, int], set[str]] = {}
    for k in keys:
        if m := _BLOCK_KEY.match(k):
            subs.setdefault((int(m[1]), int(m[2])), set()).add(m[3])

    def rank(key: str) -> tuple:
        top, _, rest = key.partition(".")
        if m := _BLOCK_KEY.match(key):
            order = _BLOCK_ORDER[_kind(subs[int(m[1]), int(m[2])])]
            sub = m[3]
            return (
                2,
                int(m[1]),
                int(m[2]),
                order.index(sub) if sub in order else 99,
                _tensor(m[4]),
            )
        return (_index(_TOP_ORDER, top), 0, 0, 0, _tensor(rest))

    return sorted(keys, key=rank)


def _index(order: tuple[str, ...], name: str) -> int:
    return order.index(name) if name in order else len(order)


def _tensor(name: str) -> tuple[int, int]:
    """SE convs (conv_reduce before conv_expand), then weight, bias, running statistics."""
    module, _, tensor = name.rpartition(".")
    return (_index(("conv_reduce", "conv_expand"), module), _index(_TENSOR_ORDER, tensor))


def load_timm(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    classifier: bool = True,
    source: str = "the timm state_dict",
) -> list[tuple[str, str]]:
    """Copy a timm MobileNetV3 ``state_dict`` into a compiled model of the same network.

    Shapes are checked tensor by tensor; timm's ``Linear`` classifier becomes our 1×1 conv. With
    ``classifier=False`` the last layer keeps its own initialisation (fine-tuning to other classes).
    Returns the (ours, theirs) key pairs copied; raises :class:`CheckpointError` naming ``source``.
    """
    ordered = {k: state_dict[k] for k in timm_order(state_dict)}
    return load_torchvision(model, ordered, classifier=classifier, source=source)


# --- timm models by name -------------------------------------------------------------------------


def parse_source(source: str) -> tuple[str, str | None]:
    """``"timm:NAME[.TAG]"`` → ``(NAME, TAG)``, checked to be a timm MobileNetV3."""
    if not source.startswith(PREFIX):
        raise UserError(
            f"{quoted(source)} does not start with timm: (say timm:mobilenetv3_large_100)"
        )
    name, _, tag = source[len(PREFIX) :].partition(".")
    if not re.fullmatch("[A-Za-z0-9_]{1,100}", name) or not re.fullmatch("[A-Za-z0-9_.-]*", tag):
        raise UserError(
            f"{quoted(source)} is not timm:NAME[.TAG]: a model name is letters, digits and _ "
            "(say timm:mobilenetv3_large_100)"
        )
    _check_name(name)
    return name, tag or None


def import_timm():
    """The timm module, or a :class:`UserError` saying how to install it."""
    try:
        import timm
    except ImportError:
        raise UserError("timm is not installed; pip install timm (1.0 or later)") from None
    return timm


def _check_name(name: str) -> None:
    timm = import_timm()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name[:12]}*")[:5] if name else []
        hint = f" (close: {', '.join(close)})" if close else ""
        raise UserError(f"timm has no model '{name}'{hint}; its MobileNetV3s: {_v3_names()}")
    module = timm.models.model_entrypoint(name).__module__
    if not module.endswith(".mobilenetv3") or "mobilenetv3" not in name:
        raise UserError(
            f"timm's {name} is not a MobileNetV3 (it comes from {module}); "
            f"its MobileNetV3s: {_v3_names()}"
        )


def _v3_names() -> str:
    return ", ".join(n for n in import_timm().list_models("*mobilenetv3*"))


def timm_model(name: str, **kwargs) -> nn.Module:
    """timm's MobileNetV3 ``name`` (no weights unless ``pretrained=True``), in eval mode."""
    _check_name(name)
    return import_timm().create_model(name, **kwargs).eval()


def timm_weights(source: str) -> dict[str, torch.Tensor]:
    """The pretrained state_dict of ``timm:NAME[.TAG]`` (no tag: timm's default) through timm's
    own loader: from the Hugging Face cache when it is there, else from the Hub. Offline, a
    :class:`CheckpointError` at once, naming the file to fetch and where to put it."""
    name, tag = parse_source(source)
    timm = import_timm()
    tags = timm.list_pretrained(f"{name}.*")
    full = f"{name}.{tag or timm.models.get_pretrained_cfg(name).tag}"
    if not tags:
        raise UserError(f"timm has no pretrained weights for {name}")
    if full not in tags:
        raise UserError(f"timm has no weights '{full}'; it has: {', '.join(tags)}")
    cfg = timm.models.get_pretrained_cfg(full)
    repo = cfg.hf_hub_id.partition("@")[0]
    cached = _cached(repo)
    if cached is None and not _reachable("huggingface.co"):
        raise CheckpointError(_offline_message(full, repo, "huggingface.co cannot be reached"))
    overlay = {"pretrained_cfg_overlay": {"file": cached}} if cached else {}
    try:
        return timm.create_model(full, pretrained=True, **overlay).state_dict()
    except Exception as e:  # network, hub and file failures take many forms
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise CheckpointError(_offline_message(full, repo, first)) from None


def _cached(repo: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for file in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo, file)
        if isinstance(path, str):
            return path
    return None


def _reachable(host: str, timeout: float = 5.0) -> bool:
    """Whether ``host``:443 answers: offline, the Hub client would retry for a minute first."""
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _offline_message(full: str, repo: str, problem: str) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    url = f"https://huggingface.co/{repo}/resolve/main/model.safetensors"
    folder = f"models--{repo.replace('/', '--')}"
    return (
        f"cannot get timm's {full} weights ({problem}). Offline, fetch {url} (the Hugging Face Hub "
        f"repo {repo}) elsewhere, then either copy the cache folder {folder} "
        f"(`hf download {repo}` fills it) into {HF_HUB_CACHE} here, or start from "
        "PATH/model.safetensors as the init weights"
    )


def init_state(source: str) -> tuple[dict[str, torch.Tensor], str]:
    """``train --init timm:NAME[.TAG]``: the weights and a name for the log."""
    return timm_weights(source), f"timm's {source[len(PREFIX) :]}"


def timm_twin(model: SpecNet) -> nn.Module | None:
    """timm's MobileNetV3 computing the same function as ``model``, or None: each one with as
    many parameters (counted on the meta device, so trying all of them costs little) that
    :func:`is_twin` confirms, given our strides, shortcuts and BN eps."""
    spec = model.spec
    want = sum(p.numel() for p in model.parameters())
    options = {"num_classes": spec.num_classes, "in_chans": spec.in_channels}
    for name in import_timm().list_models("*mobilenetv3*"):
        with torch.device("meta"):
            shapes = timm_model(name, **options)
        if sum(p.numel() for p in shapes.parameters()) != want:
            continue
        theirs = timm_model(name, **options)
        if is_twin(model, theirs, load_timm, shortcut="has_skip"):
            return theirs
    return None


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics, so that a comparison also tests the copy of the buffers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def max_logit_difference(ours: nn.Module, theirs: nn.Module, size: int, seed: int = 0) -> float:
    """Largest absolute difference of the two networks' logits on random ``size``² images, in
    float64: the same function then agrees to ~1e-14 whatever the logits' scale (in float32,
    random-weight logits near 80 differ by rounding alone, ~2e-5)."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    a, b = copy.deepcopy(ours).double().eval(), copy.deepcopy(theirs).double().eval()
    with torch.no_grad():
        return (a(x.double()) - b(x.double())).abs().max().item()


def same_function(ours: nn.Module, theirs: nn.Module, size: int) -> float:
    """Load ``theirs`` (BN statistics randomised) into a copy of ``ours``; the largest logit
    difference at ``size`` (:func:`max_logit_difference`). :class:`CheckpointError` when the tensors
    do not fit."""
    theirs = randomize_bn(copy.deepcopy(theirs))
    probe = copy.deepcopy(ours)
    load_timm(probe, theirs.state_dict(), source=f"timm's {type(theirs).__name__}")
    return max_logit_difference(probe, theirs, size)
