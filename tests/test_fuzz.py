"""Structure-aware fuzzing of the spec loader and ``--set`` (issue 12): real specs, mutated.

Every input either loads (and then plans or raises SpecError) or raises a UserError; no other
exception. Fixed seed and a small budget so the suite stays fast and repeatable; for a longer,
random search: ``MNV3SPEC_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import math
import os
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnv3spec import SpecError, UserError, load_spec
from mnv3spec.data.idx import parse_idx
from mnv3spec.errors import DataError
from mnv3spec.model.plan import plan
from mnv3spec.model.validate import validate
from mnv3spec.spec.edits import parse_assignment
from mnv3spec.train.config import TrainConfig
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


def _validate_agrees(source: Any, overrides: dict | None = None) -> None:
    """``validate`` (every error) agrees with ``load_spec`` + ``plan`` (the first): no error
    for a spec they accept; for one they refuse, a list sorted by line that holds their error."""
    spec, errors = validate(source, **(overrides or {}))
    assert all(isinstance(e, SpecError) for e in errors)
    assert [(e.line or 0, e.column or 0) for e in errors] == sorted(
        (e.line or 0, e.column or 0) for e in errors
    )
    try:
        plan(load_spec(source, **(overrides or {})))
    except SpecError as e:
        assert spec is None and str(e) in map(str, errors), (str(e), [str(x) for x in errors])
    else:
        assert spec is not None and errors == []


@SETTINGS
@given(mutated())
def test_mutated_documents(doc):
    _must_be_user_error(lambda: load_spec(doc))


@SETTINGS
@given(mutated())
def test_validate_reports_what_load_spec_raises(doc):
    _validate_agrees(doc)


ASSIGN_KEYS = st.one_of(
    st.sampled_from(["width", "si", "num_classes", "resolution", "divisor", "dropout", "bn_eps"]),
    st.builds(
        lambda i, k: f"layers.{i}.{k}",
        st.sampled_from(["0", "1", "3", "99", "-1", "²", "x", "bneck3", "nosuch", "r03_bneck"]),
        KEYS,
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
    try:
        overrides = dict(parse_assignment(f"{k}={v}") for k, v in pairs)
    except SpecError:  # not KEY=VALUE: the command's error, before any spec is read
        return
    _validate_agrees(path, overrides)


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


@SETTINGS
@given(mutated_text())
def test_validate_reports_what_load_spec_raises_in_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _validate_agrees(path)


ROW_NAMES = st.sampled_from(["stem", "bneck1", "bneck3", "bneck11", "pool", "classifier", "zz", ""])
ROW = st.fixed_dictionaries(
    {"op": st.sampled_from(["bneck", "conv2d", "pool", "dropout", "nope"])},
    optional={"name": st.one_of(ROW_NAMES, ODD), "k": ODD, "out": ODD, "exp": ODD, "s": ODD},
)
EDITS = st.dictionaries(ROW_NAMES, st.one_of(st.dictionaries(KEYS, ODD), ODD))
VARIANT = st.fixed_dictionaries(
    {
        "base": st.one_of(
            st.sampled_from(["small", "large", "v.yaml", "nosuch", "../x", "/etc/passwd"]),
            st.sampled_from(["/dev/zero", "a/../../x", "./v.yaml", "/", ".", "small\n::x::"]),
            ODD,
        )
    },
    optional={
        "name": st.one_of(st.just("v"), ODD),
        "params": st.one_of(st.dictionaries(st.sampled_from(["width", "si", "zz"]), ODD), ODD),
        "rows": st.one_of(EDITS, ODD),
        "remove": st.one_of(st.lists(st.one_of(ROW_NAMES, ODD), max_size=3), ODD),
        "insert": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "after": st.one_of(ROW_NAMES, ODD),
                        "before": ROW_NAMES,
                        "rows": st.one_of(st.lists(ROW, max_size=2), ODD),
                        "zz": ODD,
                    },
                ),
                max_size=2,
            ),
            ODD,
        ),
        "layers": st.lists(ROW, max_size=1),
    },
)


@SETTINGS
@given(VARIANT)
def test_variant_documents(tmp_path_factory, doc):
    """A variant of any shape, written to a file (its base may be itself: v.yaml)."""
    path = tmp_path_factory.mktemp("variant") / "v.yaml"
    path.write_text(yaml.safe_dump(doc))
    _must_be_user_error(lambda: load_spec(path))
    _, errors = validate(path)  # every error of it at once, each a place in v.yaml or a base
    assert all("root:" not in str(e) for e in errors)  # /etc/passwd is never read


# --- issue 23: the files sweep, latency and quantize read back, and sweep's grids ---------------

SMALL = settings(SETTINGS, max_examples=int(EXAMPLES or 40))
CELLS = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "nan", "inf", "1e308", "abc", "2", "0.5", "(overhead)"]),
    st.text(max_size=6),
)


@st.composite
def table_texts(draw: st.DrawFn) -> str:
    """A latency table: our header (a column maybe dropped, added or repeated) and rows of odd
    cells, some short or long."""
    from mnv3spec.latency import predict

    header = list(predict.COLUMNS) + draw(
        st.lists(st.sampled_from(["note", "x", "median_ms"]), max_size=2)
    )
    if draw(st.booleans()):
        del header[draw(st.integers(0, len(header) - 1))]
    rows = draw(
        st.lists(st.lists(CELLS, min_size=len(header) - 2, max_size=len(header) + 1), max_size=4)
    )
    return "\n".join(",".join(r) for r in [header, *rows]) + "\n"


@SMALL
@given(table_texts())
def test_latency_tables(tmp_path_factory, text):
    from mnv3spec.latency import predict

    path = tmp_path_factory.mktemp("fuzz") / "t.csv"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        table = predict.read_table(path)
    except UserError as e:
        assert str(path) in str(e)
        return
    for row in table.rows.values():  # what was accepted is finite and usable
        assert math.isfinite(float(row["median_ms"])) and float(row["iqr_ms"]) >= 0
    predict.write_table(table)
    assert predict.read_table(path).rows == table.rows


JSONS = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
MEASURED_LIKE = st.dictionaries(
    st.text(max_size=8),
    st.fixed_dictionaries(
        {"settings": st.one_of(st.text(max_size=4), JSONS), "latency_ms": JSONS},
        optional={"iqr_ms": JSONS},
    ),
    max_size=3,
)


@SMALL
@given(
    st.sampled_from(["sweep.json", "measured.json"]), st.one_of(JSONS, MEASURED_LIKE), st.booleans()
)
def test_sweep_state(tmp_path_factory, file, value, truncate):
    from mnv3spec.explore import sweep_folder as state

    folder = tmp_path_factory.mktemp("fuzz")
    text = json.dumps(value)
    (folder / file).write_text(text[: len(text) // 2] if truncate else text)
    read = state.read_settings if file == "sweep.json" else state.read_measured
    try:
        found = read(folder)
    except UserError as e:
        assert file in str(e)
        return
    if file == "measured.json":
        assert all(
            v is None or (math.isfinite(v) and v >= 0)
            for m in found.values()
            for v in [*m.latency_ms.values(), *m.iqr_ms.values()]
        )


FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
REQUESTS = st.one_of(
    JSONS,
    st.fixed_dictionaries({"resume": JSONS}),
    st.fixed_dictionaries({"config": st.dictionaries(st.sampled_from(FIELDS), JSONS)}),
)


@SMALL
@given(REQUESTS, st.booleans())
def test_sweep_worker_requests(tmp_path_factory, value, truncate):
    """A sweep worker's request file, damaged any way: one error naming it, exit 2, no run."""
    from mnv3spec.explore import worker

    folder = tmp_path_factory.mktemp("fuzz")
    text = json.dumps(value)
    (folder / "v.json").write_text(text[: len(text) // 2] if truncate else text)
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert worker.main([str(folder / "v.json")]) == 2
    assert err.getvalue().startswith("error: ") and err.getvalue().count("\n") == 1
    assert sorted(p.name for p in folder.iterdir()) == ["v.json"]


@SMALL
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["width", "layers.3.k", "dropout", "x", "", "si"]),
            st.lists(CELLS, max_size=12),
        ),
        max_size=6,
    )
)
def test_sweep_grids(grids):
    from mnv3spec.explore.grid import check_count, check_grids, parse_grid, variants

    texts = [f"{key}={','.join(values)}" for key, values in grids]
    try:
        parsed = [parse_grid(t) for t in texts]
        check_count(["small"], parsed)
        check_grids([load_spec("small")], parsed)
    except UserError:
        return
    made = variants(["small"], {}, parsed)
    assert len({v.id for v in made}) == len(made) <= 256
    assert all(len(v.id.encode()) <= 120 for v in made)


@pytest.fixture(scope="module")
def onnx_template(tmp_path_factory):
    """A tiny graph shaped as export and quantize write one (input 'input' N×3×8×8, logits N×2),
    with the metadata of a matching spec."""
    import onnx
    from onnx import TensorProto, helper

    from mnv3spec.deploy.runtimes import onnx_model

    spec = load_spec("small", width=0.25, num_classes=2, resolution=8).to_yaml()
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "w"], ["logits"]),
        ],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [3, 2], [0.1] * 6)],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {"classes": ["a", "b"], "resolution": 8, "mean": [0.5] * 3, "std": [0.2] * 3}
    onnx_model.set_metadata(proto, onnx_model.metadata_props(spec, {**meta, "extra": {}}, ""))
    path = tmp_path_factory.mktemp("onnx") / "t.onnx"
    for fmt in onnx_model.FORMATS:  # the template itself is accepted, as either
        proto.metadata_props[0].value = fmt
        onnx.save(proto, str(path))
        onnx_model.load_onnx(path)
    return proto


@SMALL
@given(
    st.sampled_from(["classes", "resolution", "mean", "std", "extra", "spec", "format"]),
    st.one_of(JSONS.map(json.dumps), st.text(max_size=8)),
    st.sampled_from(["mnv3spec-float", "mnv3spec-int8"]),
)
def test_onnx_metadata(onnx_template, tmp_path_factory, key, value, fmt):
    """Float (export) and int8 (quantize) files alike: any value of any key loads a model that
    runs, or is a UserError naming the file."""
    import onnx

    from mnv3spec.deploy.runtimes import onnx_model

    proto = copy.deepcopy(onnx_template)
    props = {p.key: p for p in proto.metadata_props}
    props["format"].value = fmt
    props[key].value = value
    path = tmp_path_factory.mktemp("fuzz") / "m.onnx"
    onnx.save(proto, str(path))
    try:
        model, meta = onnx_model.load_onnx(path)
    except UserError as e:
        assert str(path) in str(e)
        return
    logits = model(torch.zeros(1, 3, 8, 8))
    assert logits.shape == (1, len(meta["classes"]))


@SMALL
@given(
    st.sampled_from(["executorch", "litert"]),
    st.sampled_from(["classes", "resolution", "mean", "std", "extra", "spec", "format", "sha256"]),
    st.one_of(JSONS, st.text(max_size=8)),
)
def test_phone_metadata(tmp_path_factory, runtime, key, value):
    """The JSON beside a .pte or .tflite with one value replaced: refused with the file named, or
    read into metadata a model can be built from (no runtime is needed to read it)."""
    from mnv3spec.deploy.runtimes import RUNTIMES
    from mnv3spec.deploy.runtimes import phone as mobile

    rt = RUNTIMES[runtime]
    path = tmp_path_factory.mktemp("fuzz") / f"m{rt.suffix}"
    path.write_bytes(b"\x1c\x00\x00\x00" + rt.signature.encode() + b"12" + bytes(32))
    spec = load_spec("small", width=0.25, num_classes=2, resolution=8).to_yaml()
    info = {"format": mobile.FORMAT, "runtime": runtime, "precision": "int8", "spec": spec}
    info |= {"classes": ["a", "b"], "resolution": 8, "mean": [0.5] * 3, "std": [0.2] * 3}
    info |= {"extra": {}, "sha256": mobile.digest(path), key: value}
    mobile.sidecar(path).write_text(json.dumps(info))
    try:
        meta, built = mobile.read_metadata(path, rt)
    except UserError as e:
        assert str(path) in str(e)
        return
    assert len(meta["classes"]) == built.params["num_classes"]
    assert meta["resolution"] == built.resolution
    _check_against_its_program(path, meta, built.in_channels)


def _check_against_its_program(path, meta: dict, channels: int) -> None:
    """Metadata that reads well, checked against the shapes of a program made for 3×8×8 images
    and 2 classes (issue 31 hunts 10, 16): it passes only if it claims those, else one error
    naming the program and both figures."""
    from mnv3spec.deploy.runtimes import phone as mobile

    size, classes = meta["resolution"], len(meta["classes"])
    try:
        mobile.check_shapes(path, ([(1, 3, 8, 8)], [(1, 2)]), channels, meta)
    except UserError as e:
        assert e.file == str(path) and "\n" not in str(e)
        assert (size, channels) != (8, 3) or classes != 2
        assert ("1×3×8×8" in e.message and f"resolution {size}" in e.message) or (
            "1×2 logits" in e.message and f"claims {classes} classes" in e.message
        )
        return
    assert (size, channels, classes) == (8, 3, 2)


@SMALL
@given(
    st.sampled_from(["executorch", "litert"]),
    st.one_of(
        st.binary(max_size=64),
        st.builds(lambda n, c: c * n, st.integers(0, 200_000), st.sampled_from([b"[", b'{"a":'])),
    ),
    st.sampled_from(["file", "fifo", "folder"]),
)
def test_phone_metadata_files(tmp_path_factory, runtime, raw, kind):
    """The JSON beside a .pte or .tflite as any bytes, nested past Python's parser, a FIFO or a
    folder (issue 31 hunt 11): one UserError naming it, nothing blocks."""
    from mnv3spec.deploy.runtimes import RUNTIMES
    from mnv3spec.deploy.runtimes import phone as mobile

    rt = RUNTIMES[runtime]
    path = tmp_path_factory.mktemp("fuzz") / f"m{rt.suffix}"
    path.write_bytes(b"\x1c\x00\x00\x00" + rt.signature.encode() + b"12" + bytes(32))
    beside = mobile.sidecar(path)
    if kind == "fifo":
        os.mkfifo(beside)
    elif kind == "folder":
        beside.mkdir()
    else:
        beside.write_bytes(raw)
    with pytest.raises(UserError) as e:
        mobile.read_metadata(path, rt)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


# --- issue 29: train --init from a wider parent checkpoint, damaged -------------------------------

META_KEYS = ["spec", "classes", "format", "version", "resolution", "mean", "std", "extra"]
ROW_EDITS = st.tuples(
    st.integers(0, 8),
    st.sampled_from(["k", "exp", "out", "s", "se", "nl", "op", "name"]),
    st.sampled_from([0, 1, 3, 5, 8, 16, 200, True, False, "RE", "bneck", "pool", "x"]),
)
DAMAGE = st.one_of(
    st.tuples(st.just("cut"), st.floats(0, 1)),
    st.tuples(st.just("byte"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.sampled_from(META_KEYS), st.one_of(JSONS.map(json.dumps), st.text(max_size=8))),
    st.tuples(st.just("row"), ROW_EDITS),
)


@pytest.fixture(scope="module")
def parent_checkpoint(tmp_path_factory):
    """tiny_phone at width 1 as a training run saves it: the parent the fuzzed files start from."""
    from .conftest import TINY_PHONE, tiny_checkpoint

    path = tmp_path_factory.mktemp("parent") / "p.safetensors"
    tiny_checkpoint(path, [str(i) for i in range(4)], spec=TINY_PHONE, width=1.0)
    return path


def _damaged(source, path, damage) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    data = source.read_bytes()
    if damage[0] in ("cut", "byte"):
        at = int(damage[1] * (len(data) - 1))
        data = data[:at] if damage[0] == "cut" else data[:at] + bytes([damage[2]]) + data[at + 1 :]
        path.write_bytes(data)
        return
    with safe_open(str(source), framework="pt") as f:
        meta = dict(f.metadata())
    if damage[0] == "row":
        doc = yaml.safe_load(meta["spec"])
        index, key, value = damage[1]
        doc["layers"][index][key] = value
        meta["spec"] = yaml.safe_dump(doc)
    else:
        meta[damage[0]] = damage[1]
    save_file(load_file(str(source)), str(path), metadata=meta)


@SMALL
@given(DAMAGE)
def test_init_from_a_damaged_parent(parent_checkpoint, tmp_path_factory, damage):
    """A parent checkpoint cut short, a byte changed, a metadata value or a row of its spec
    replaced: narrowed into the child, or refused in one line naming the file, child untouched."""
    from mnv3spec.model.builder import build
    from mnv3spec.weights.init import init_from

    from .conftest import TINY_PHONE

    path = tmp_path_factory.mktemp("fuzz") / "p.safetensors"
    _damaged(parent_checkpoint, path, damage)
    child = build(load_spec(TINY_PHONE, **{"layers.bneck3.exp": 56}))
    before = {k: v.clone() for k, v in child.state_dict().items()}
    try:
        note = init_from(child, str(path))
    except UserError as e:
        assert str(path) in str(e) and "\n" not in str(e)
        assert all(torch.equal(v, before[k]) for k, v in child.state_dict().items())
        return
    assert note.startswith(f"initialised from {path}")
    assert all(bool(torch.isfinite(v).all()) for v in child.state_dict().values())


# --- file kinds (mnv3spec/kinds.py): any bytes, a known kind or none, never an exception -------

SIGNATURES = [b"PK\x03\x04", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\x08\x07\x12", b"RIFF"]
SIGNATURES += [b"\x1c\x00\x00\x00ET12", b"\x1c\x00\x00\x00TFL3", b"\x10" + bytes(7) + b"{"]
SIGNATURES += [b"layers:\n", b"\xef\xbb\xbf", b""]


@SETTINGS
@given(st.sampled_from(SIGNATURES), st.binary(max_size=64), st.sampled_from([0, 8, 4096, 5000]))
def test_file_kind_of_any_bytes(tmp_path_factory, head, tail, pad):
    """A real signature followed by anything: judged as a kind, or refused by check_kind with a
    FileKindError, and never another exception."""
    from mnv3spec.cli.kinds import check_kind
    from mnv3spec.errors import FileKindError
    from mnv3spec.kinds import KINDS, file_kind

    path = tmp_path_factory.mktemp("kind") / "f"
    path.write_bytes(head + tail + b"\x00" * pad)
    assert file_kind(path) in KINDS
    with contextlib.suppress(FileKindError):
        check_kind(path, "eval", {"safetensors"}, "a checkpoint")


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
@given(
    st.sampled_from(list(RECIPES)),
    st.floats(),
    st.floats(),
    st.floats(allow_nan=False),
    st.floats() | st.sampled_from([0.0, 1.0, 0.999]),
)
def test_recipe_values(name, erasing, smoothing, lr, ema):
    try:
        resolve_recipe(name, random_erasing=erasing, label_smoothing=smoothing, lr=lr, ema=ema)
    except UserError:
        return
    assert 0 <= erasing <= 1 and 0 <= smoothing < 1 and (ema == 0 or 0 < ema < 1) and lr > 0


CONFIG = dataclasses.asdict(TrainConfig("small", data="synthetic", batch=8, seed=0))
NUMBERS = st.one_of(
    st.sampled_from([-1, 0, -0.0, 2**70, -(2**70), 1e308, 2**63, 2**63 - 1]),
    st.floats(),
    st.integers(),
)


@SMALL
@given(
    st.dictionaries(st.sampled_from(["lr", "momentum", "weight_decay", "warmup", "seed"]), NUMBERS),
    st.sampled_from([b"", b"[" * 50_000, b"{" * 3, b"\0", b"\xff"]),
)
def test_run_config_json(tmp_path_factory, changes, damage):
    """A run's config.json (issue 31): numbers SGD or torch refuse, JSON nested past Python's
    parser, bytes that are not UTF-8: a config whose recipe resolves, or one UserError."""
    from mnv3spec.services.run_folder import RunFolder
    from mnv3spec.train.config import config_from_json

    folder = tmp_path_factory.mktemp("run")
    text = damage or json.dumps({**CONFIG, **changes}).encode()
    (folder / "config.json").write_bytes(text)
    try:
        run = RunFolder(folder)
        cfg = config_from_json(run.read_config(), str(folder / run.CONFIG))
    except UserError as e:
        assert "config.json" in str(e) and "\n" not in str(e)
        return
    recipe = cfg.resolved_recipe()
    assert recipe.lr > 0 and recipe.momentum >= 0 and recipe.weight_decay >= 0
    assert cfg.seed is None or 0 <= cfg.seed < 2**63


@SMALL
@given(
    st.one_of(
        st.binary(max_size=64),
        st.builds(
            lambda n, c: c * n, st.integers(0, 200_000), st.sampled_from([b"[", b"{", b'{"a":'])
        ),
        JSONS.map(lambda v: json.dumps(v).encode()),
    ),
    st.sampled_from(["file", "fifo", "folder"]),
)
def test_json_files_we_wrote(tmp_path_factory, raw, kind):
    """files.read_json (config.json, a worker's request, a sweep's state), issue 31: any bytes,
    nesting past Python's parser, a FIFO or a folder in its place: a value or one UserError."""
    from mnv3spec.files import read_json

    path = tmp_path_factory.mktemp("json") / "f.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(raw)
    try:
        read_json(path, what="a JSON file", fix="write it again")
    except UserError as e:
        assert "f.json" in str(e) and "\n" not in str(e)
        assert kind == "file" or "not a regular file" in str(e)


# --- issue 30: sweep --cluster's values ---------------------------------------------------------


@SETTINGS
@given(
    st.text(max_size=30) | st.sampled_from(["local", "127.0.0.1:6379", "ray://h:10001", "[::1]:1"]),
    st.none() | st.floats() | st.sampled_from([0.25, 1.0, 2.0, 0.0, 1.5]),
    st.none() | st.floats() | st.sampled_from([1.0, 2.0, 0.5]),
)
def test_cluster_settings(address, gpus, cpus):
    """--cluster, --gpus-per-training and --cpus-per-training take what they say, and refuse the
    rest with a UserError naming the parameter."""
    from mnv3spec.explore.training import ClusterSettings

    try:
        head = ClusterSettings(address, gpus, cpus).head()
    except UserError as e:
        assert e.field in ("cluster", "gpus_per_training", "cpus_per_training")
        return
    assert gpus is None or 0 < gpus <= 1 or (gpus >= 1 and gpus.is_integer())
    assert cpus is None or (cpus >= 1 and cpus.is_integer())
    assert head is None or 0 < head[1] < 65536


# --- issue 29: the files adapt reads back on resume: trace.csv and latency.json ------------------

TRACE_CELLS = st.one_of(
    CELLS,
    st.sampled_from(['{"bneck1": {"exp": 8}}', "{}", "[]", '{"a": 1}', "runs/start", "/abs", ".."]),
)


@st.composite
def trace_texts(draw: st.DrawFn) -> str:
    """A trace: our header (maybe damaged) and rows of odd cells around a good start row."""
    from mnv3spec.adapt import trace

    header = list(trace.HEADER)
    if draw(st.booleans()):
        del header[draw(st.integers(0, len(header) - 1))]
    good = ["0", "start", "1", "1.5", "0.1", "0.2", "50", "0", "0", "0", "runs/start", "{}", "1"]
    rows = draw(st.lists(st.lists(TRACE_CELLS, min_size=12, max_size=14), max_size=3))
    return "\n".join(",".join(r) for r in [header, good, *rows]) + "\n"


@SMALL
@given(trace_texts())
def test_adapt_traces(tmp_path_factory, text):
    from mnv3spec.adapt import trace

    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "trace.csv").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        rows = trace.read(folder)
    except UserError as e:
        assert "trace.csv" in str(e)
        return
    path = trace.path(rows)
    assert [r.step for r in path] == list(range(len(path)))
    assert all(r.measured for r in path)  # the path's latencies are measured, never predicted
    assert all(math.isfinite(r.latency_ms) and r.latency_ms > 0 for r in rows)
    trace.write(folder, rows)
    assert trace.read(folder) == rows


LATENCY_LIKE = st.dictionaries(
    st.text(max_size=8),
    st.one_of(
        JSONS,
        st.fixed_dictionaries(
            {
                k: JSONS
                for k in ("median_ms", "spread_ms", "load", "seconds", "parent_ms", "noise_ms")
            }
        ),
    ),
    max_size=3,
)


@SMALL
@given(st.one_of(JSONS, LATENCY_LIKE), st.booleans())
def test_adapt_latency_cache(tmp_path_factory, value, truncate):
    from mnv3spec.adapt.timing import Cache

    folder = tmp_path_factory.mktemp("fuzz")
    text = json.dumps(value)
    (folder / "latency.json").write_text(text[: len(text) // 2] if truncate else text)
    try:
        cache = Cache(folder).read()
    except UserError as e:
        assert "latency.json" in str(e)
        return
    assert all(math.isfinite(m.median_ms) and m.median_ms > 0 for m in cache.entries.values())


# --- issue 29: latency --loads ------------------------------------------------------------------


@SETTINGS
@given(st.text(max_size=12) | st.integers(-3, 10**6).map(str) | st.floats().map(str))
def test_latency_loads(value):
    """--loads takes a count from 1 to 32 (each load holds a program in memory) and refuses
    anything else as argparse does (exit 2, naming the flag), never a traceback; nothing is timed
    to find out."""
    from mnv3spec.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args(["latency", "small", "--loads", value])
    except SystemExit as e:
        assert e.code == 2 and "argument --loads: " in err.getvalue()
        return
    assert isinstance(args.loads, int) and 1 <= args.loads <= 32
    assert args.loads == int(value.strip())


# --- issue 29: adapt --threads, latency --threads ----------------------------------------------


@SETTINGS
@given(st.text(max_size=12) | st.integers(-3, 10**6).map(str) | st.floats().map(str))
@pytest.mark.parametrize(
    "command", [["adapt", "small", "--target-ratio", "0.6", "--out", "x"], ["latency", "small"]]
)
def test_threads(command, value):
    """--threads takes a count from 1 to 256 (the CPU threads adapt's runtime, or latency's
    networks and runtimes, time with) and refuses anything else as argparse does (exit 2, naming
    the flag), never a traceback; nothing is timed to find out."""
    from mnv3spec.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args([*command, "--threads", value])
    except SystemExit as e:
        assert e.code == 2 and "argument --threads: " in err.getvalue()
        return
    assert isinstance(args.threads, int) and 1 <= args.threads <= 256
    assert args.threads == int(value.strip())
