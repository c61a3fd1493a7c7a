"""The ``--set`` grammar: ``KEY=VALUE`` read as the spec loader reads values, and an override
applied to a spec document (a parameter, or any field by its dotted key, a row by index or name).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import yaml

from ..errors import SpecError
from ..text import quoted, shown
from .limits import MAX_ROWS
from .read import Marks, field_name, load_scalar


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"width=0.5"`` → ``("width", 0.5)``: the value is read as a YAML scalar."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(
            f"'{text}' is not KEY=VALUE; for example width=0.5 or layers.12.se=true",
            field="set",
        )
    try:
        parsed = load_scalar(value) if value.strip() else None
    except (yaml.YAMLError, ValueError):
        parsed = value
    if isinstance(parsed, float) and not math.isfinite(parsed):
        raise SpecError(f"'{text}': the value must be a finite number", field="set")
    if parsed is None or isinstance(parsed, (list, dict)):
        raise SpecError(f"'{text}': the value must be a number, true/false or a word", field="set")
    return key.strip(), parsed


def apply_override(doc: dict, key: str, value: Any, marks: Marks) -> None:
    """Set ``key`` to ``value`` in ``doc``, recording in ``marks`` that the override set it: an
    error at it names the field ``set KEY=VALUE``."""
    assignment = f"{shown(key)}={json.dumps(value) if isinstance(value, bool) else shown(value)}"
    label = f"set {assignment}"
    if "." not in key:
        params = doc.get("params")
        if not isinstance(params, dict) or key not in params:
            known = ", ".join(params) if isinstance(params, dict) else "none"
            message = f"unknown parameter {quoted(key)}; the spec defines: {known}"
            raise SpecError(message, field=label)
        params[key] = value
        marks.overridden[("params", key)] = assignment
        return
    where: list = []
    target: Any = doc
    parts = key.split(".")
    for part in parts[:-1]:
        if where == ["layers"]:  # a row by index or by name
            step = row_position(target, part, label)
        else:
            index = _index(part, label) if isinstance(target, list) else None
            step = part if index is None else index
        try:
            target = target[step]
        except (KeyError, IndexError, TypeError):
            raise SpecError(
                f"the spec has no '{field_name((*where, step))}'", field=label
            ) from None
        where.append(step)
    last = parts[-1]
    if not isinstance(target, dict):
        raise SpecError(f"'{field_name(tuple(where))}' is not a mapping", field=label)
    target[last] = value
    marks.overridden[(*where, last)] = assignment


def _index(part: str, label: str) -> int | None:
    """``part`` of a dotted key as a list index when it is digits, else None; digits too many
    for any index are refused before they are converted (Python refuses 4,300)."""
    if not re.fullmatch("[0-9]+", part):
        return None
    if len(part) > 6:
        raise SpecError(
            f"{quoted(part)} is no row's index: a spec has at most {MAX_ROWS} rows", field=label
        )
    return int(part)


def row_names(layers: Any) -> list[str]:
    """The ``name`` of each row of ``layers`` that has one, in order."""
    rows = layers if isinstance(layers, list) else []
    return [r["name"] for r in rows if isinstance(r, dict) and isinstance(r.get("name"), str)]


def row_position(layers: Any, part: str, label: str = "set") -> int | str:
    """The index of the row that ``part`` of a dotted key names: an index (``12``) or a row's
    ``name`` (``bneck3``); ``part`` as given when ``layers`` is not a list."""
    if not isinstance(layers, list):
        return part
    index = _index(part, label)
    if index is not None:
        return index
    for i, row in enumerate(layers):
        if isinstance(row, dict) and row.get("name") == part:
            return i
    names = ", ".join(row_names(layers)) or "none (address rows by index)"
    raise SpecError(
        f"the spec has no row named {quoted(part)}; its rows are 0..{len(layers) - 1}, "
        f"named: {names}",
        field=label,
    )
