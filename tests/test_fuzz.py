"""Structure-aware fuzzing of the spec loader and ``--set`` (issue 12): real specs, mutated.

Every input either loads (and then plans or raises SpecError) or raises a UserError; no other
exception. Fixed seed and a small budget so the suite stays fast and repeatable; for a longer,
random search: ``MNV3SPEC_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnv3spec import SpecError, UserError, load_spec
from mnv3spec.data.idx import parse_idx
from mnv3spec.errors import DataError
from mnv3spec.model.builder import plan
from mnv3spec.spec.load import parse_assignment
from mnv3spec.train.recipe import RECIPES, resolve_recipe

from .conftest import SPECS

DOCS = [yaml.safe_load(p.read_text()) for p in SPECS]
TEXTS = [p.read_text() for p in SPECS]
EXAMPLES = os.environ.get("MNV3SPEC_FUZZ_EXAMPLES")
SETTINGS = settings(
    derandomize=not EXAMPLES,
    database=None,
    deadline=None,
    max_examples=int(EXAMPLES or 100),
    suppress_health_check=list(HealthCheck),
)

ODD = st.one_of(
    st.sampled_from([2**63, 2**64 + 1, -(2**63) - 1, 10**30, 0, -1, 1, 2, 3, 8192, 65537]),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["nan", ".nan", "inf", "-.inf", "$si", "$nope", "x6", "x0", "x", "", "RE"]),
    st.text(max_size=12),
    st.none(),
    st.booleans(),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-3, 3), max_size=2),
)
KEYS = st.sampled_from(
    ["op", "k", "out", "exp", "s", "n", "nl", "se", "bn", "fixed", "min_width", "p", "t", "c", "zz"]
)


def _paths(node: Any, where: tuple = ()) -> list[tuple]:
    out = [where]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*where, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*where, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict:
    doc = copy.deepcopy(draw(st.sampled_from(DOCS)))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(_paths(doc)[1:]))
        parent = doc
        for step in where[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add", "duplicate"]))
        if action == "replace":
            parent[where[-1]] = draw(ODD)
        elif action == "delete":
            del parent[where[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(KEYS)] = draw(ODD)
        elif action == "duplicate" and isinstance(parent, list):
            parent.insert(where[-1], copy.deepcopy(parent[where[-1]]))
        if not isinstance(doc, dict):
            break
    return doc


def _must_be_user_error(load) -> None:
    try:
        spec = load()
    except UserError:
        return
    with contextlib.suppress(SpecError):
        plan(spec)


@SETTINGS
@given(mutated())
def test_mutated_documents(doc):
    _must_be_user_error(lambda: load_spec(doc))


ASSIGN_KEYS = st.one_of(
    st.sampled_from(["width", "si", "num_classes", "resolution", "divisor", "dropout", "bn_eps"]),
    st.builds(
        lambda i, k: f"layers.{i}.{k}", st.sampled_from(["0", "1", "3", "99", "-1", "²", "x"]), KEYS
    ),
    st.text(max_size=10),
)
ASSIGN_VALUES = st.one_of(
    st.sampled_from(["9" * 30, "9" * 5000, "-1", "0", "2", "1e400", ".nan", "[1]", "{a: 1}", "x6"]),
    st.sampled_from(["true", "RE", "$si", "!!python/object:os.system", "&a 1", "*a", "'", ""]),
    st.text(max_size=12),
    st.integers().map(str),
    st.floats().map(str),
)


@SETTINGS
@given(st.sampled_from(SPECS), st.lists(st.tuples(ASSIGN_KEYS, ASSIGN_VALUES), max_size=3))
def test_set_assignments(path, pairs):
    def load():
        overrides = dict(parse_assignment(f"{k}={v}") for k, v in pairs)
        return load_spec(path, **overrides)

    _must_be_user_error(load)


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(TEXTS)).splitlines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["value", "delete", "duplicate", "insert", "splice"]))
        if action == "value" and ":" in lines[i]:
            head = lines[i].rsplit(":", 1)[0]
            lines[i] = f"{head}: {draw(st.sampled_from(TEXT_VALUES))}"
        elif action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, lines[i])
        elif action == "insert":
            lines.insert(i, draw(st.sampled_from(TEXT_VALUES)))
        else:
            j = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:j] + draw(st.text(max_size=4)) + lines[i][j:]
        if not lines:
            break
    return "\n".join(lines)


TEXT_VALUES = [
    "99999999999999999999999",
    "9" * 5000,
    "-1",
    ".nan",
    "-.inf",
    "2024-02-30",
    "2024-02-03",
    "!!binary aGVsbG8=",
    "!!set {a}",
    "!!python/name:os.system",
    "&x 1",
    "*x",
    "[" * 50,
    "{a: [1, {b: 2}]}",
    "? [a]\n: 1",
    "'unterminated",
    "\t- tab",
    "0x1F",
    "0o17",
    "1_000",
    "~",
    "null",
    "yes",
    "x6",
    "$si",
]


@SETTINGS
@given(mutated_text())
def test_mutated_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _must_be_user_error(lambda: load_spec(path))


@st.composite
def idx_files(draw: st.DrawFn) -> tuple[bytes, int]:
    """A small IDX file of images or labels, then cut, overwritten or lengthened at random."""
    dims = draw(st.sampled_from([1, 3]))
    shape = [draw(st.integers(0, 3))] + [draw(st.integers(0, 4)) for _ in range(dims - 1)]
    raw = bytes([0, 0, 8, dims]) + b"".join(d.to_bytes(4, "big") for d in shape)
    raw += bytes(draw(st.integers(0, 255)) for _ in range(math.prod(shape)))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(raw)))
        edit = draw(st.sampled_from(["cut", "flip", "add"]))
        if edit == "cut":
            raw = raw[:at]
        elif edit == "flip" and at < len(raw):
            raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
        else:
            raw = raw[:at] + draw(st.binary(max_size=6)) + raw[at:]
    return raw, dims


@SETTINGS
@given(idx_files())
def test_mutated_idx_files(file):
    """An IDX file either parses to an array of the size its header says, or is a DataError."""
    raw, dims = file
    try:
        array = parse_idx(raw, dims, "f.gz")
    except DataError:
        return
    assert array.ndim == dims and array.size == len(raw) - 4 - 4 * dims


@SETTINGS
@given(st.sampled_from(list(RECIPES)), st.floats(), st.floats(), st.floats(allow_nan=False))
def test_recipe_values(name, erasing, smoothing, lr):
    try:
        resolve_recipe(name, random_erasing=erasing, label_smoothing=smoothing, lr=lr)
    except UserError:
        return
    assert 0 <= erasing <= 1 and 0 <= smoothing < 1
