"""MobileNetV3 (and its siblings) as data: YAML specs compiled into exact ``nn.Module``s."""

from .deploy.export import optimize_for_inference
from .errors import CheckpointError, DataError, SpecError, UserError
from .model.builder import SpecNet, build, plan
from .model.summary import summarize
from .spec.load import Spec, load_spec
from .weights.timm import load_timm
from .weights.torchvision import load_torchvision

__all__ = [
    "CheckpointError",
    "DataError",
    "Spec",
    "SpecError",
    "SpecNet",
    "UserError",
    "build",
    "load_spec",
    "load_timm",
    "load_torchvision",
    "optimize_for_inference",
    "plan",
    "summarize",
]
