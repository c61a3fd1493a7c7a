"""MobileNetV3 (and its siblings) as data: YAML specs compiled into exact ``nn.Module``s."""

from .analysis import summarize
from .builder import SpecNet, build, plan
from .errors import CheckpointError, DataError, SpecError, UserError
from .export import optimize_for_inference
from .spec import Spec, load_spec
from .torchvision_compat import load_torchvision

__all__ = [
    "CheckpointError",
    "DataError",
    "Spec",
    "SpecError",
    "SpecNet",
    "UserError",
    "build",
    "load_spec",
    "load_torchvision",
    "optimize_for_inference",
    "plan",
    "summarize",
]
