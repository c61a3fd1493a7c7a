"""A spec file (or an already-loaded mapping) and its edits → :class:`~.resolve.Spec`.

Every problem becomes a :class:`SpecError` naming the file, line, column and field.
:func:`load_spec` raises the first; :func:`spec_errors` collects every one (``validate``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import SpecError
from .check import check_flat
from .edits import Edit, from_overrides
from .read import Marks, resolve_path
from .resolve import Spec, resolve
from .variant import is_variant, read_spec


def load_spec(source: str | Path | dict, edits: Sequence[Edit] = (), /, **overrides: Any) -> Spec:
    """Read, validate and resolve a spec from a path or an already-loaded mapping.

    ``edits`` are made first, then ``overrides``: parameters (``width=0.5``) or, with dotted
    keys, any field (``{"layers.12.se": True}``), exactly like ``--set`` on the command line
    (errors at an override name the field ``set KEY=VALUE``; the CLI shows it as the flag).
    """
    return resolve(*_read(source), [*edits, *from_overrides(overrides)])


def spec_errors(source: str | Path | dict, **overrides: Any) -> tuple[Spec | None, list[SpecError]]:
    """Every error of a spec, not only the first (as :func:`load_spec` raises it): the schema's,
    then the references and the values they bring, sorted by line; the spec when there are none.
    An unreadable file, one that is not YAML, or a variant whose base cannot be had is one
    error: nothing else can be checked."""
    errors: list[SpecError] = []
    spec = None
    try:
        doc, marks = _read(source, errors)
        spec = resolve(doc, marks, from_overrides(overrides), errors)
    except SpecError as e:
        errors.append(e)
    unique = {str(e): e for e in errors}.values()  # the schema and a row's own check agree
    files = {e.file: n for n, e in reversed(list(enumerate(unique)))}  # a variant's own first
    ordered = sorted(unique, key=lambda e: (files[e.file], e.line or 0, e.column or 0))
    return (None if ordered else spec), ordered


def _read(source: str | Path | dict, errors: list[SpecError] | None = None) -> tuple[Any, Marks]:
    if isinstance(source, dict):
        if is_variant(source):  # its base is a path relative to its file, which a dict has not
            raise SpecError(
                "a variant (a spec with base:) is read from its file; give its path, or its "
                "resolved spec",
                file="<dict>",
            )
        return copy.deepcopy(source), Marks("<dict>")
    return read_spec(resolve_path(source), check_flat, errors)
