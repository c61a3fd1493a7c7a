"""Text → :class:`Spec`: safe YAML, the JSON Schema, parameter overrides and references resolved.

Every problem becomes a :class:`SpecError` naming the file, line, column and field.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..errors import SpecError

REF = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
Where = tuple  # a position in the document: ("layers", 3, "nl")


@dataclass(frozen=True)
class Row:
    """One row of the spec's table, its ``$parameter`` references replaced by values."""

    index: int
    op: str
    fields: dict[str, Any]
    line: int | None


@dataclass(frozen=True)
class Spec:
    """A validated spec: parameters resolved, rows typed, the document kept for saving."""

    name: str
    params: dict[str, Any]
    rows: tuple[Row, ...]
    source: str
    document: dict[str, Any] = field(repr=False)
    marks: _Marks = field(repr=False, compare=False)  # where each value stands, for errors

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
        """The spec with its resolved parameters, loadable again by :func:`load_spec`."""
        return yaml.safe_dump(self.document, sort_keys=False, default_flow_style=None)


def schema() -> dict:
    """The JSON Schema of the spec format (``mnv3spec/schema.json``)."""
    return json.loads(resources.files(__package__).joinpath("schema.json").read_text())


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when present: 6× faster
    """The safe loader, also reading YAML 1.2 floats such as ``1e-5`` (YAML 1.1 wants a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)
# "integer" means an int: JSON Schema would take 2.0, which torch's layers then refuse.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool)
    ),
)
_VALIDATOR = _Validator(schema())


class _Marks:
    """Line and column of every key and value in a YAML document, for error messages."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.values: dict[Where, yaml.Mark] = {}
        self.keys: dict[Where, yaml.Mark] = {}
        self.overridden: dict[Where, str] = {}
        self.nodes: set[int] = set()

    def copy(self) -> _Marks:
        """Marks for a derived document: the same positions, its own record of overrides."""
        other = _Marks(self.file)
        other.values, other.keys, other.nodes = self.values, self.keys, self.nodes
        other.overridden = dict(self.overridden)
        return other

    def error(self, message: str, where: Where = (), key: bool = False) -> SpecError:
        field_name = _field_name(where) or None
        for n in range(len(where), 0, -1):
            if where[:n] in self.overridden:
                return SpecError(message, file=self.overridden[where[:n]], field=field_name)
        # A --set elsewhere in the same row (say layers.3.op=pool) may be what broke it.
        row_edits = [v for k, v in self.overridden.items() if len(where) > 1 and k[:2] == where[:2]]
        if row_edits:
            message = f"{message} (the row as changed by {', '.join(row_edits)})"
        mark = (self.keys if key else self.values).get(where)
        while mark is None and where:
            where = where[:-1]
            mark = self.values.get(where)
        if mark is None:
            return SpecError(message, file=self.file, field=field_name)
        return SpecError(
            message,
            file=self.file,
            line=mark.line + 1,
            column=mark.column + 1,
            field=field_name,
        )

    def record(self, node: yaml.Node, where: Where = ()) -> None:
        if id(node) in self.nodes:  # an alias: the composer hands back the anchored node again
            m = node.start_mark
            raise SpecError(
                "anchors and aliases (&name, *name) are not allowed in a spec; write the value out",
                file=self.file,
                line=m.line + 1,
                column=m.column + 1,
                field=_field_name(where) or None,
            )
        self.nodes.add(id(node))
        self.values[where] = node.start_mark
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key, value in node.value:
                name = key.value
                if name in seen:
                    m = key.start_mark
                    raise SpecError(
                        f"the key '{name}' appears twice in the same mapping; keep one",
                        file=self.file,
                        line=m.line + 1,
                        column=m.column + 1,
                        field=_field_name((*where, name)),
                    )
                seen.add(name)
                self.keys[(*where, name)] = key.start_mark
                self.record(value, (*where, name))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.record(item, (*where, i))


def _field_name(where: Where) -> str:
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_yaml(text: str, file: str) -> tuple[Any, _Marks]:
    """Safe-load one YAML document, recording where each value stands; aliases are refused."""
    marks = _Marks(file)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            marks.record(node)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = " ".join(str(p) for p in (e.context, e.problem) if p)
        if isinstance(e, yaml.constructor.ConstructorError):
            problem += " (tags that build Python objects are never executed; only plain YAML)"
        raise SpecError(
            f"not valid YAML: {problem}",
            file=file,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as e:
        raise SpecError(f"not valid YAML: {e}", file=file) from None
    except RecursionError:
        raise SpecError("nested too deeply to be a spec", file=file) from None
    finally:
        loader.dispose()
    return data, marks


def shipped_specs() -> dict[str, Path]:
    """The specs that ship with the package, by name: ``{"small": .../specs/small.yaml, ...}``."""
    folder = resources.files("mnv3spec").joinpath("specs")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def resolve_path(source: str | Path) -> Path:
    """A spec path as given, or a shipped spec by name (``small``, ``small.yaml``, or
    ``specs/small.yaml`` from a folder that has no ``specs/``)."""
    path = Path(source)
    if path.is_dir():
        raise SpecError("is a folder; give a spec file such as specs/small.yaml", file=str(path))
    if path.exists():
        return path
    shipped = shipped_specs()
    if path.suffix in ("", ".yaml") and str(path.parent) in (".", "specs") and path.stem in shipped:
        return shipped[path.stem]
    raise SpecError(
        f"no such file; give the path of a spec, or a shipped one: {', '.join(sorted(shipped))}",
        file=str(path),
    )


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(f"cannot read the file: {e.strerror}", file=str(path)) from None
    if b"\0" in raw[:4096]:
        raise SpecError(
            "this is a binary file (a dataset or weights?), not a YAML spec",
            file=str(path),
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError("not UTF-8 text, so not a YAML spec", file=str(path)) from None


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"width=0.5"`` → ``("width", 0.5)``: the value is read as a YAML scalar."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(
            f"'{text}' is not KEY=VALUE; for example --set width=0.5 or --set layers.12.se=true",
            field="--set",
        )
    try:
        parsed = yaml.load(value, Loader=_Loader) if value.strip() else None  # a safe loader
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, float) and not math.isfinite(parsed):
        raise SpecError(f"'{text}': the value must be a finite number", field="--set")
    if parsed is None or isinstance(parsed, (list, dict)):
        raise SpecError(
            f"'{text}': the value must be a number, true/false or a word", field="--set"
        )
    return key.strip(), parsed


def _apply_override(doc: dict, key: str, value: Any, marks: _Marks) -> None:
    label = f"--set {key}={json.dumps(value) if isinstance(value, bool) else value}"
    if "." not in key:
        params = doc.get("params")
        if not isinstance(params, dict) or key not in params:
            known = ", ".join(params) if isinstance(params, dict) else "none"
            raise SpecError(f"unknown parameter '{key}'; the spec defines: {known}", field=label)
        params[key] = value
        marks.overridden[("params", key)] = label
        return
    where: list = []
    target: Any = doc
    parts = key.split(".")
    for part in parts[:-1]:
        step = int(part) if isinstance(target, list) and part.isdigit() else part
        try:
            target = target[step]
        except (KeyError, IndexError, TypeError):
            raise SpecError(
                f"the spec has no '{_field_name((*where, step))}'", field=label
            ) from None
        where.append(step)
    last = parts[-1]
    if not isinstance(target, dict):
        raise SpecError(f"'{_field_name(tuple(where))}' is not a mapping", field=label)
    target[last] = value
    marks.overridden[(*where, last)] = label


def _schema_error(
    error: jsonschema.ValidationError, marks: _Marks, prefix: Where = ()
) -> SpecError:
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
    if error.validator == "propertyNames":
        return marks.error(f"'{error.instance}' is not a valid parameter name", where)
    found = (
        json.dumps(error.instance)
        if not isinstance(error.instance, (dict, list))
        else ("a mapping" if isinstance(error.instance, dict) else "a list")
    )
    if described:
        allowed = described
    elif error.validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
    else:
        allowed = error.message
    return marks.error(f"found {found}; allowed: {allowed}", where)


def _validate(doc: Any, marks: _Marks) -> None:
    if doc is None:
        raise SpecError("the file is empty; a spec needs name, params and layers", file=marks.file)
    if not isinstance(doc, dict):
        kind = "a list" if isinstance(doc, list) else "plain text"
        raise SpecError(
            f"the top level is {kind}, not a mapping with name, params and layers "
            "(is this a spec file?)",
            file=marks.file,
            line=1,
        )
    for where, value in _numbers(doc):
        if not math.isfinite(value):
            raise marks.error(f"found {value}; allowed: a finite number", where)
    errors = list(_VALIDATOR.iter_errors(doc))
    if errors:
        raise _schema_error(_first_by_position(errors, marks), marks)


def _numbers(node: Any, where: Where = ()) -> Iterator[tuple[Where, float]]:
    """Every float of the document with its position (YAML reads .inf and .nan as floats)."""
    if isinstance(node, float):
        yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _numbers(value, (*where, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _numbers(value, (*where, i))


def _first_by_position(errors: list, marks: _Marks) -> jsonschema.ValidationError:
    """The error nearest the top of the file, the most specific one on a line."""

    def line(e: jsonschema.ValidationError) -> tuple:
        mark = marks.values.get(tuple(e.absolute_path))
        return (mark.line if mark else 0, -len(e.absolute_path))

    return min(errors, key=line)


@functools.cache
def _op_validator(op: str) -> jsonschema.Draft202012Validator:
    return _Validator({"$ref": f"#/$defs/op_{op}", "$defs": schema()["$defs"]})


def _resolve_row(i: int, raw: dict, params: dict, marks: _Marks) -> Row:
    fields = {}
    for key, value in raw.items():
        ref = REF.match(value) if isinstance(value, str) else None
        if ref:
            name = ref.group(1)
            if name not in params:
                raise marks.error(
                    f"refers to ${name}, but params defines only: {', '.join(params)}",
                    ("layers", i, key),
                )
            value = params[name]
        fields[key] = value
    # Values that came from a parameter are checked against the same schema as literals.
    for error in _op_validator(raw["op"]).iter_errors(fields):
        err = _schema_error(error, marks, ("layers", i))
        name = error.absolute_path[0] if error.absolute_path else ""
        ref = REF.match(raw[name]) if isinstance(raw.get(name), str) else None
        if ref:
            origin = marks.overridden.get(("params", ref.group(1)))
            source = f"{raw[name]}, set by {origin}" if origin else raw[name]
            err = marks.error(f"{err.message} (the value comes from {source})", ("layers", i, name))
        raise err
    mark = marks.values.get(("layers", i))
    return Row(i, raw["op"], fields, mark.line + 1 if mark else None)


def load_spec(source: str | Path | dict, **overrides: Any) -> Spec:
    """Read, validate and resolve a spec from a path or an already-loaded mapping.

    ``overrides`` set parameters (``width=0.5``) or, with dotted keys, any field
    (``{"layers.12.se": True}``), exactly like ``--set`` on the command line.
    """
    if isinstance(source, dict):
        file, doc, marks = "<dict>", copy.deepcopy(source), _Marks("<dict>")
    else:
        path = resolve_path(source)
        file = str(path)
        doc, marks = read_yaml(_read_text(path), file)
    return _resolve(doc, marks, overrides)


def _resolve(doc: Any, marks: _Marks, overrides: dict[str, Any]) -> Spec:
    if isinstance(doc, dict):
        for key, value in overrides.items():
            _apply_override(doc, key, value, marks)
    _validate(doc, marks)
    params = doc["params"]
    rows = tuple(_resolve_row(i, r, params, marks) for i, r in enumerate(doc["layers"]))
    return Spec(doc["name"], dict(params), rows, marks.file, doc, marks)
