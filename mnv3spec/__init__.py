"""MobileNetV3 (and its siblings) as data: YAML specs compiled into exact ``nn.Module``s.

The names below are imported on first use (PEP 562), so that ``import mnv3spec`` and the CLI's
``--help`` start without torch; ``from mnv3spec import build`` works as before.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from .errors import CheckpointError, DataError, SpecError, UserError

try:
    __version__ = version("mnv3spec")
except PackageNotFoundError:  # a checkout run without installing it
    __version__ = "0+unknown"

# public name → the module that defines it
_LAZY = {
    "optimize_for_inference": ".model.inference",
    "SpecNet": ".model.builder",
    "build": ".model.builder",
    "plan": ".model.plan",
    "summarize": ".model.summary",
    "Spec": ".spec.resolve",
    "load_any": ".deploy.runtimes",
    "load_spec": ".spec.load",
    "load_timm": ".weights.timm",
    "load_torchvision": ".weights.torchvision",
}

__all__ = [
    "CheckpointError",
    "DataError",
    "Spec",
    "SpecError",
    "SpecNet",
    "UserError",
    "build",
    "load_any",
    "load_spec",
    "load_timm",
    "load_torchvision",
    "optimize_for_inference",
    "plan",
    "summarize",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
