"""MobileNetV3 (and its siblings) as data: YAML specs compiled into exact ``nn.Module``s.

The names below are imported when first used (PEP 562), so ``import mnv3spec`` and the commands
that need no network (``validate``, every ``--help``) do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "optimize_for_inference": ".deploy.export",
    "CheckpointError": ".errors",
    "DataError": ".errors",
    "SpecError": ".errors",
    "UserError": ".errors",
    "SpecNet": ".model.builder",
    "build": ".model.builder",
    "plan": ".model.plan",
    "summarize": ".model.summary",
    "Spec": ".spec.load",
    "load_spec": ".spec.load",
    "load_timm": ".weights.timm",
    "load_torchvision": ".weights.torchvision",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'mnv3spec' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
