"""YAML document → :class:`Spec`: the JSON Schema, parameter overrides and references resolved,
every optional row field filled with the registry's default.

Every problem becomes a :class:`SpecError` naming the file, line, column and field.
:func:`load_spec` raises the first; :func:`spec_errors` collects every one (``validate``).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..errors import SpecError
from ..ops.registry import OPS, with_defaults
from ..text import kind_of, quoted
from .limits import MAX_DEPTH, MAX_ROWS
from .names import taken_by_torch
from .read import Marks, Where, field_name, load_scalar, report
from .read import read_yaml as read_yaml
from .read import resolve_path as resolve_path
from .read import shipped_specs as shipped_specs
from .schema import schema
from .variant import is_variant, read_spec

REF = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
# The module names of unnamed rows (r03_bneck): a row name of this form could take another's.
GENERATED = re.compile(r"^r[0-9]+_")


@dataclass(frozen=True)
class Row:
    """One row of the spec's table: ``$parameter`` references replaced by values, and every field
    the operator has that the row leaves out set to its default (``s: 1``, ``nl: none``…).
    ``name`` is the row's ``name`` field (stable when rows are inserted), None if it has none;
    ``file`` the file the row stands in at ``line`` (a variant's base, or the spec's own file)."""

    index: int
    op: str
    fields: dict[str, Any]
    line: int | None
    name: str | None = None
    file: str | None = None


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

    def derive(self, **overrides: Any) -> Spec:
        """This spec with more ``overrides`` (as :func:`load_spec` takes them), resolved again
        from its document: no file is read, and errors still point into the original file."""
        return _resolve(copy.deepcopy(self.document), self.marks.copy(), overrides)

    def to_yaml(self) -> str:
        """The document as written (no defaults added, overrides applied), loadable again by
        :func:`load_spec`: checkpoints embed it."""
        return yaml.safe_dump(self.document, sort_keys=False, default_flow_style=None)


# "integer" means an int: JSON Schema would take 2.0, which torch's layers then refuse.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool)
    ),
)
_VALIDATOR = _Validator(schema())


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


def shown(value: Any, quote: bool = False) -> str:
    """A value as an error message quotes it: JSON for plain values (cut short), else its kind."""
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, int) and value.bit_length() > 190:
        try:
            return f"an integer of {len(str(abs(value)))} digits"
        except ValueError:  # str() refuses 4,300 digits
            return "an integer of thousands of digits"
    try:
        text = json.dumps(value) if quote else str(value)
    except (TypeError, ValueError):
        return f"a {type(value).__name__} value"
    return text if len(text) <= 60 else text[:57] + "..."


def _apply_override(doc: dict, key: str, value: Any, marks: Marks) -> None:
    # An override is named by its assignment; errors at it name the field "set KEY=VALUE".
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


def _check_names(doc: dict, marks: Marks, errors: list[SpecError] | None = None) -> None:
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


def _schema_error(error: jsonschema.ValidationError, marks: Marks, prefix: Where = ()) -> SpecError:
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


def _validate(doc: Any, marks: Marks, errors: list[SpecError] | None = None) -> bool:
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
        report(_schema_error(error, marks), errors)
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
def _op_validator(op: str) -> jsonschema.Draft202012Validator:
    return _Validator({"$ref": f"#/$defs/op_{op}", "$defs": schema()["$defs"]})


def _resolve_row(
    i: int, raw: dict, params: dict, marks: Marks, errors: list[SpecError] | None = None
) -> Row:
    fields = {}
    for key, value in raw.items():
        if key == "name":
            continue
        ref = REF.match(value) if isinstance(value, str) else None
        if ref and ref.group(1) in params:
            value = params[ref.group(1)]
        elif ref:  # left as written: the schema takes a $name, so nothing else reports it
            known = ", ".join(map(str, params))  # collecting, a key may be a number
            message = f"refers to ${ref.group(1)}, but params defines only: {known}"
            report(marks.error(message, ("layers", i, key)), errors)
        fields[key] = value
    # Values that came from a parameter are checked against the same schema as literals.
    for error in _op_validator(raw["op"]).iter_errors(fields):
        err = _schema_error(error, marks, ("layers", i))
        name = error.absolute_path[0] if error.absolute_path else ""
        ref = REF.match(raw[name]) if isinstance(raw.get(name), str) else None
        if ref:
            origin = marks.overridden.get(("params", ref.group(1)))
            source = f"{raw[name]}, overridden with {origin}" if origin else raw[name]
            err = marks.error(f"{err.message} (the value comes from {source})", ("layers", i, name))
        report(err, errors)
    mark = marks.values.get(("layers", i))
    line = mark.line + 1 if mark else None
    file = marks.file_of(("layers", i))
    return Row(i, raw["op"], with_defaults(raw["op"], fields), line, raw.get("name"), file)


def load_spec(source: str | Path | dict, **overrides: Any) -> Spec:
    """Read, validate and resolve a spec from a path or an already-loaded mapping.

    ``overrides`` set parameters (``width=0.5``) or, with dotted keys, any field
    (``{"layers.12.se": True}``), exactly like ``--set`` on the command line (errors
    at an override name the field ``set KEY=VALUE``; the CLI shows it as the flag).
    """
    return _resolve(*_read(source), overrides)


def _read(source: str | Path | dict, errors: list[SpecError] | None = None) -> tuple[Any, Marks]:
    if isinstance(source, dict):
        if is_variant(source):  # its base is a path relative to its file, which a dict has not
            raise SpecError(
                "a variant (a spec with base:) is read from its file; give its path, or its "
                "resolved spec",
                file="<dict>",
            )
        return copy.deepcopy(source), Marks("<dict>")
    return read_spec(resolve_path(source), _check_flat, errors)


def _check_flat(doc: Any, marks: Marks) -> None:
    """A flat document is valid as far as a variant needs of its base: the schema, row names."""
    if _validate(doc, marks):
        _check_names(doc, marks)


def spec_errors(source: str | Path | dict, **overrides: Any) -> tuple[Spec | None, list[SpecError]]:
    """Every error of a spec, not only the first (as :func:`load_spec` raises it): the schema's,
    then the references and the values they bring, sorted by line; the spec when there are none.
    An unreadable file, one that is not YAML, or a variant whose base cannot be had is one
    error: nothing else can be checked."""
    errors: list[SpecError] = []
    spec = None
    try:
        spec = _resolve(*_read(source, errors), overrides, errors)
    except SpecError as e:
        errors.append(e)
    unique = {str(e): e for e in errors}.values()  # the schema and a row's own check agree
    files = {e.file: n for n, e in reversed(list(enumerate(unique)))}  # a variant's own first
    ordered = sorted(unique, key=lambda e: (files[e.file], e.line or 0, e.column or 0))
    return (None if ordered else spec), ordered


def _resolve(
    doc: Any, marks: Marks, overrides: dict[str, Any], errors: list[SpecError] | None = None
) -> Spec | None:
    """The spec of ``doc``, or (collecting ``errors``) None when it has any. An error at a row
    names the row, raised or collected."""
    before = len(errors or ())
    try:
        spec = _resolve_doc(doc, marks, overrides, errors)
    except SpecError as e:
        raise _with_row_name(e, doc) from None
    if errors is not None and len(errors) > before:
        errors[before:] = [_with_row_name(e, doc) for e in errors[before:]]
        return None
    return spec


def _resolve_doc(
    doc: Any, marks: Marks, overrides: dict[str, Any], errors: list[SpecError] | None
) -> Spec | None:
    if isinstance(doc, dict):
        for key, value in overrides.items():
            try:
                _apply_override(doc, key, value, marks)
            except SpecError as e:
                report(e, errors)
    if not _validate(doc, marks, errors):
        return None
    params, layers = doc.get("params"), doc.get("layers")
    if not isinstance(params, dict) or not isinstance(layers, list):
        return None  # the schema said so
    _check_names(doc, marks, errors)
    rows = tuple(
        _resolve_row(i, r, params, marks, errors)
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
