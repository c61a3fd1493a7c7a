"""The grids of a sweep (``--grid KEY=V1,V2,...``), checked against the specs before any work, and
the variants they make: the cartesian product of the grids over each spec."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SpecError, UserError
from ..spec.draft import Draft
from ..spec.edits import Edit, flag, parse_assignment
from ..spec.read import resolve_path
from ..spec.resolve import Spec
from ..text import quoted
from . import MAX_VARIANTS

MAX_ID_BYTES = 120  # a variant's id names its run folder and log: well inside a 255-byte name


@dataclass(frozen=True)
class Grid:
    key: str
    values: tuple[Any, ...]

    def edit(self, n: int) -> Edit:
        """The edit its ``n``-th value makes: ``--set KEY=VALUE``'s."""
        return flag(self.key, self.values[n])


def parse_grid(text: str) -> Grid:
    """``"width=0.5,1.0"`` → ``Grid("width", (0.5, 1.0))``, each value read as --set reads it."""
    key, sep, values = text.partition("=")
    where = _label(text)
    if not sep or not key.strip():
        raise UserError("not KEY=V1,V2,...; for example width=0.5,1.0", field=where)
    parts = [v.strip() for v in values.split(",")]
    if not any(parts):
        raise UserError(f"no values for {key.strip()}; give KEY=V1,V2,...", field=where)
    if not all(parts):
        raise UserError("an empty value between commas", field=where)
    try:
        grid = Grid(key.strip(), tuple(parse_assignment(f"{key}={v}")[1] for v in parts))
        grid.edit(0)  # the key is read as --set reads it (a row's index of 5,000 digits)
    except SpecError as e:
        raise UserError(e.message, field=where) from None
    if len(set(map(repr, grid.values))) < len(grid.values):
        raise UserError("a value appears twice", field=where)
    return grid


def _label(grid: str) -> str:
    """The field an error at a grid names: ``grid KEY=V1,V2``, cut short (a key may be a row
    index of thousands of digits)."""
    return f"grid {grid if len(grid) <= 80 else grid[:77] + '...'}"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    return "a number" if isinstance(value, (int, float)) else "a word"


def _current(spec: Spec, edit: Edit) -> Any:
    """The value ``edit`` replaces in ``spec`` (a ``$parameter`` resolved); a SpecError where
    ``spec`` has none there."""
    value = Draft.of(spec.document, spec.marks).get(edit)
    if isinstance(value, str) and value.startswith("$"):
        return spec.params.get(value[1:], value)
    return value


def check_grids(specs: list[Spec], grids: list[Grid]) -> None:
    """Before any work: every key names a value of every spec, and every value is of its kind
    (a value that is of the right kind but breaks the network makes an error row instead)."""
    keys = [g.key for g in grids]
    for key in {k for k in keys if keys.count(k) > 1}:
        raise UserError(f"{key} has two grids; give its values in one", field=f"grid {key}")
    for spec in specs:
        for g in grids:
            where = _label(f"{g.key}={','.join(map(text, g.values))}")
            try:
                current = _current(spec, g.edit(0))
            except SpecError:
                try:
                    spec.derive([g.edit(0)])
                except SpecError as e:
                    raise UserError(f"{spec.source}: {e.message}", field=where) from None
                continue  # a field the row may take but does not set: the schema judges it
            for v in g.values:
                if _kind(v) != _kind(current):
                    raise UserError(
                        f"{quoted(text(v))} is not {_kind(current)}, as {g.key} is in "
                        f"{spec.source} ({text(current)})",
                        field=where,
                    )


def text(value: Any) -> str:
    """A grid value as written on the command line (``true``, not ``True``)."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Variant:
    id: str  # also its run folder's name
    spec: str  # absolute path
    label: str  # the grid values in a few characters, for tables and plots
    overrides: dict[str, Any]  # --set first, then the grid values
    spec_name: str = ""  # the spec's stem, numbered where two specs share one


def _short(key: str, value: Any) -> str:
    name = "w" if key == "width" else re.sub(r"^layers\.(\d+)\.", r"L\1.", key) + "="
    return f"{name}{text(value)}"


def check_count(specs: list[str], grids: list[Grid], limit: int = MAX_VARIANTS) -> int:
    """The number of variants, refused above ``limit`` before any is made (the product of the
    grids grows fast: 10 keys of 10 values are 10 billion)."""
    count = len(specs) * math.prod(len(g.values) for g in grids)
    if count > limit:
        raise UserError(
            f"{count:,} variants ({len(specs)} specs × "
            f"{' × '.join(str(len(g.values)) for g in grids) or '1'} grid values) is more than "
            f"{limit}; give fewer grid values, or raise this bound to {count}",
            field="max_variants",
        )
    return count


def spec_names(specs: list[str]) -> list[str]:
    """A short name per spec for ids, tables and plots: its file stem, numbered where two specs
    share one (``small``, ``small-2``); the same file twice is refused."""
    paths = [str(resolve_path(s).resolve()) for s in specs]
    twice = next((p for i, p in enumerate(paths) if p in paths[:i]), None)
    if twice:
        raise UserError(f"{twice} is given twice; give each spec once", field="specs")
    stems = [Path(p).stem for p in paths]
    return [
        stem if stems.count(stem) == 1 or stems[:i].count(stem) == 0 else f"{stem}-{i + 1}"
        for i, stem in enumerate(stems)
    ]


def _id(name: str) -> str:
    """A folder name: safe characters, and at most :data:`MAX_ID_BYTES` (a long one is cut and
    told apart from its neighbours by a hash of the whole)."""
    name = re.sub(r"[^\w.=+-]", "_", name, flags=re.ASCII)
    if len(name) > MAX_ID_BYTES:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_ID_BYTES - 9]}~{digest}"
    return name


def variants(specs: list[str], fixed: dict[str, Any], grids: list[Grid]) -> list[Variant]:
    """Every spec × every combination of grid values, in order."""
    out = []
    for source, stem in zip(specs, spec_names(specs), strict=True):
        path = str(resolve_path(source).resolve())
        for combo in itertools.product(*(g.values for g in grids)):
            chosen = {g.key: v for g, v in zip(grids, combo, strict=True)}
            parts = [_short(k, v) for k, v in chosen.items()]
            out.append(
                Variant(_id("-".join([stem, *parts])), path, " ".join(parts), fixed | chosen, stem)
            )
    return out
