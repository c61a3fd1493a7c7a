"""A flat document and its edits → :class:`Spec`: the edits made, the document checked against
the schema and the row-name rules, the references to parameters resolved, every optional row
field filled with the registry's default."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import SpecError
from ..ops.registry import OPS
from .check import check_names, validate
from .draft import Draft
from .edits import Edit, from_overrides
from .read import Marks
from .rows import Row, resolve_row


@dataclass(frozen=True)
class Spec:
    """A validated spec: parameters resolved, rows typed, the document kept for saving."""

    name: str
    params: dict[str, Any]
    rows: tuple[Row, ...]
    source: str
    document: dict[str, Any] = field(repr=False)
    marks: Marks = field(repr=False, compare=False)  # where each value stands, for errors

    @property
    def width(self) -> float:
        return float(self.params["width"])

    @property
    def divisor(self) -> int:
        return int(self.params["divisor"])

    @property
    def resolution(self) -> int:
        return int(self.params["resolution"])

    @property
    def num_classes(self) -> int:
        return int(self.params["num_classes"])

    @property
    def in_channels(self) -> int:
        """Input channels: 3 (RGB) unless the spec says otherwise."""
        return int(self.params.get("in_channels", 3))

    @property
    def bn(self) -> dict[str, float]:
        """BatchNorm2d's keyword arguments: ``eps`` and ``momentum`` (PyTorch's convention)."""
        return {"eps": float(self.params["bn_eps"]), "momentum": float(self.params["bn_momentum"])}

    def derive(self, edits: Sequence[Edit] = (), /, **overrides: Any) -> Spec:
        """This spec with more ``edits``, then ``overrides`` (as :func:`~.load.load_spec` takes
        them), resolved again from its document: no file is read, and errors still point into
        the original file."""
        changes = [*edits, *from_overrides(overrides)]
        return resolve(copy.deepcopy(self.document), self.marks.copy(), changes)

    def to_yaml(self) -> str:
        """The document as written (no defaults added, edits made), loadable again by
        :func:`~.load.load_spec`: checkpoints embed it."""
        return yaml.safe_dump(self.document, sort_keys=False, default_flow_style=None)


def resolve(
    doc: Any, marks: Marks, edits: Sequence[Edit], errors: list[SpecError] | None = None
) -> Spec | None:
    """The spec of ``doc`` with ``edits`` made, or (collecting ``errors``) None when it has any.
    An error at a row names the row, raised or collected."""
    before = len(errors or ())
    try:
        spec = _resolve(doc, marks, edits, errors)
    except SpecError as e:
        raise _with_row_name(e, doc) from None
    if errors is not None and len(errors) > before:
        errors[before:] = [_with_row_name(e, doc) for e in errors[before:]]
        return None
    return spec


def _resolve(
    doc: Any, marks: Marks, edits: Sequence[Edit], errors: list[SpecError] | None
) -> Spec | None:
    if isinstance(doc, dict) and edits:
        draft = Draft.of(doc, marks)
        for edit in edits:  # each sees the ones before it: --set layers.3.name=a layers.a.k=5
            draft.apply([edit], errors)
        doc, marks = draft.document()
    if not validate(doc, marks, errors):
        return None
    params, layers = doc.get("params"), doc.get("layers")
    if not isinstance(params, dict) or not isinstance(layers, list):
        return None  # the schema said so
    check_names(doc, marks, errors)
    rows = tuple(
        resolve_row(i, r, params, marks, errors)
        for i, r in enumerate(layers)
        if isinstance(r, dict) and isinstance(r.get("op"), str) and r["op"] in OPS
    )
    name = doc.get("name", "")  # missing only while collecting errors: the spec is then dropped
    return Spec(name, dict(params), rows, marks.file, doc, marks)


def _with_row_name(error: SpecError, doc: Any) -> SpecError:
    """An error at ``layers[3]`` says ``(row bneck3)`` at its end: the name a reader knows."""
    found = re.search(r"layers\[([0-9]+)\]", error.field or "")
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if found and isinstance(layers, list) and int(found.group(1)) < len(layers):
        row = layers[int(found.group(1))]
        name = row.get("name") if isinstance(row, dict) else None
        named = isinstance(name, str) and re.fullmatch("[A-Za-z_][A-Za-z0-9_]{0,63}", name)
        if named and not error.message.endswith(f"(row {name})"):
            error.message = f"{error.message} (row {name})"
    return error
