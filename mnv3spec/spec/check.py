"""A flat spec document checked: against the JSON Schema, with each of its errors said in our
words at the file, line and column it points to, and against the rules for row names.

Every problem becomes a :class:`SpecError`; with a list to collect them (``validate``), every one.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema

from ..errors import SpecError
from ..text import kind_of, quoted, shown
from .limits import MAX_DEPTH
from .names import taken_by_torch
from .read import Marks, Where, field_name, report
from .schema import schema

# The module names of unnamed rows (r03_bneck): a row name of this form could take another's.
GENERATED = re.compile(r"^r[0-9]+_")

# "integer" means an int: JSON Schema would take 2.0, which torch's layers then refuse.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool)
    ),
)
_VALIDATOR = _Validator(schema())


def check_names(doc: dict, marks: Marks, errors: list[SpecError] | None = None) -> None:
    """Row names are unique, never the generated module name of another row, nor an attribute
    PyTorch's modules have (the name becomes one): wherever the name came from (the file, a
    variant's insert or rename, ``--set layers.X.name=``), since all are checked here."""
    seen: dict[str, int] = {}
    for i, row in enumerate(doc["layers"]):
        name = row.get("name") if isinstance(row, dict) else None
        if not isinstance(name, str):
            continue  # the schema reports a name that is not a string
        at, message = i, _name_problem(name)
        if name in seen:
            # blame the row this file or a --set named, not the base's row it collides with
            at, other = (seen[name], i) if _edited(marks, seen[name], i) else (i, seen[name])
            message = (
                f"the row name {quoted(name)} is already used by layers[{other}]; "
                "names are unique within a spec"
            )
        if message:
            report(marks.error(message, ("layers", at, "name")), errors)
        seen.setdefault(name, i)


def _name_problem(name: str) -> str | None:
    if GENERATED.match(name):
        return (
            f"{quoted(name)} has the form of the module name of an unnamed row (r03_bneck); "
            "choose another, such as bneck3"
        )
    if taken_by_torch(name):
        return f"the row name '{name}' is taken by PyTorch (nn.Module.{name}); choose another"
    return None


def _edited(marks: Marks, first: int, second: int) -> bool:
    """Whether the name of row ``first`` is nearer the user than that of row ``second``: a
    ``--set`` before the spec's own file, its own file before a base it names."""

    def rank(i: int) -> int:
        where = ("layers", i, "name")
        if any(where[:n] in marks.overridden for n in (2, 3)):
            return 2
        return int(where in marks.values and marks.file_of(where) == marks.file)

    return rank(first) > rank(second)


def schema_error(error: jsonschema.ValidationError, marks: Marks, prefix: Where = ()) -> SpecError:
    where = prefix + tuple(error.absolute_path)
    described = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator == "additionalProperties":
        allowed = ", ".join(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in error.schema.get("properties", {})]
        return marks.error(
            f"unknown key '{extra[0]}'; allowed here: {allowed}",
            (*where, extra[0]),
            key=True,
        )
    if error.validator == "required":
        missing = re.match(r"'([^']*)'", error.message)
        name = missing.group(1) if missing else error.message
        return marks.error(f"missing the required key '{name}'", where)
    if "propertyNames" in error.absolute_schema_path:  # the error is about a key, not a value
        return marks.error(
            f"{quoted(str(error.instance))} is not a valid parameter name; allowed: letters, "
            "digits and _, "
            "not starting with a digit",
            (*where, str(error.instance)),
            key=True,
        )
    # A base's value is described by its kind only: the base may be any file of the folder.
    found = kind_of(error.instance) if marks.private else shown(error.instance, quote=True)
    if described:
        allowed = described
    elif error.validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
    else:  # jsonschema's own words quote the value
        allowed = (
            f"{error.validator} {json.dumps(error.validator_value)}"
            if marks.private
            else error.message
        )
    hint = _spelled(error.instance, described) if not marks.private else ""
    return marks.error(f"found {found}; allowed: {allowed}{hint}", where)


def _spelled(value: Any, described: str | None) -> str:
    """For a word the description spells another way (``relu`` for ``RE (ReLU)``, ``hs`` for
    ``HS``): which word to write. Only exact names, never a guess by likeness."""
    if not isinstance(value, str) or not described:
        return ""
    typed = value.strip().lower()
    for code, name in re.findall(r"\b([A-Za-z0-9]+) \(([^)]+)\)", described):
        if typed in (code.lower(), name.lower()) and value != code:
            return f" (for {name} write {code})"
    return ""


def validate(doc: Any, marks: Marks, errors: list[SpecError] | None = None) -> bool:
    """Check ``doc`` against the schema; False when it is not even a mapping."""
    if doc is None:
        empty = "the file is empty; a spec needs name, params and layers"
        report(marks.at(empty, None), errors)  # a base's error says whose base it is
        return False
    if not isinstance(doc, dict):
        kind = "a list" if isinstance(doc, list) else "plain text"
        message = (
            f"the top level is {kind}, not a mapping with name, params and layers "
            "(is this a spec file?)"
        )
        error = marks.at(message, None)
        error.line = 1
        report(error, errors)
        return False
    infinite = set()
    for where, value in _numbers(doc):
        if not math.isfinite(value):
            report(marks.error(f"found {value}; allowed: a finite number", where), errors)
            infinite.add(where)
    found = [e for e in _VALIDATOR.iter_errors(doc) if tuple(e.absolute_path) not in infinite]
    for error in sorted(found, key=_position(marks)):
        report(schema_error(error, marks), errors)
    return True


def _numbers(node: Any, where: Where = ()) -> Iterator[tuple[Where, float]]:
    """Every float of the document with its position (YAML reads .inf and .nan as floats)."""
    if len(where) > MAX_DEPTH:  # a mapping handed to load_spec: YAML text is checked on reading
        raise SpecError(f"nested more than {MAX_DEPTH} levels deep", field=field_name(where[:3]))
    if isinstance(node, float):
        yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _numbers(value, (*where, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _numbers(value, (*where, i))


def _position(marks: Marks) -> Callable[[jsonschema.ValidationError], tuple]:
    """Sort key: errors nearest the top of the file first, the most specific one on a line."""

    def line(e: jsonschema.ValidationError) -> tuple:
        mark = marks.values.get(tuple(e.absolute_path))
        return (mark.line if mark else 0, -len(e.absolute_path))

    return line


@functools.cache
def op_validator(op: str) -> jsonschema.Draft202012Validator:
    """The schema of one operator's rows, for a row's values once its references are resolved."""
    return _Validator({"$ref": f"#/$defs/op_{op}", "$defs": schema()["$defs"]})


def check_flat(doc: Any, marks: Marks) -> None:
    """A flat document is valid as far as a variant needs of its base: the schema, row names."""
    if validate(doc, marks):
        check_names(doc, marks)
