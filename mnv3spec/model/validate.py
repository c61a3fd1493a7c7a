"""A spec file → every error it holds, for ``validate``: the schema's, the references', the
shapes'. Arithmetic on the registry only: no torch is imported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..spec.load import spec_errors
from ..spec.resolve import Spec
from .plan import head_errors, plan_rows


def validate(source: str | Path | dict, **overrides: Any) -> tuple[Spec | None, list[SpecError]]:
    """The spec and no errors, or None and every error found, sorted by line. The shapes are
    checked (the network must end in ``num_classes`` scores) once the rest is valid."""
    spec, errors = spec_errors(source, **overrides)
    if spec is not None:
        errors = head_errors(spec, plan_rows(spec))
    return (None if errors else spec), errors
