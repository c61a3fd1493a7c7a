"""validate built for CI (issue 18): every error of a file, three output formats, exit status
0 / 1 / 2, a counting last line, and no torch."""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys

import jsonschema
import pytest
import yaml

from mnv3spec import SpecError
from mnv3spec.cli import main
from mnv3spec.cli.specs import github_annotation
from mnv3spec.model.validate import validate
from mnv3spec.spec.schema import SHIPPED, VARIANT_SHIPPED

from .conftest import ROOT, SPECS

TINY = """\
name: tiny
params: {width: 1.0, divisor: 8, resolution: 32, num_classes: 10, bn_momentum: 0.1, bn_eps: 0.001}
layers:
  - {op: conv2d, k: 3, out: 16, nl: HS, s: 2}
  - {op: bneck, k: 3, exp: 16, out: 16, se: true, nl: RE, s: 1}
  - {op: bneck, k: 3, exp: 16, out: 16, se: true, nl: RE, s: 1}
  - {op: pool}
  - {op: conv2d, k: 1, out: 10, bn: false, fixed: true}
"""
# Three mistakes on three lines: an integer field as a float (the schema), a reference to a
# parameter that does not exist (the loader), an unknown key (the schema).
THREE = (
    TINY.replace("k: 3, out: 16", "k: 3.0, out: 16")
    .replace("nl: RE, s: 1}\n  - {op: bneck", "nl: RE, s: $stride}\n  - {op: bneck", 1)
    .replace("nl: RE, s: 1}\n  - {op: pool", "nl: RE, s: 1, sx: 1}\n  - {op: pool")
)


@pytest.fixture
def files(tmp_path):
    def write(**texts: str) -> list[str]:
        paths = []
        for name, text in texts.items():
            path = tmp_path / f"{name}.yaml"
            path.write_text(text)
            paths.append(str(path))
        return paths

    return write


def test_the_test_specs_are_what_they_claim(files):
    (good,) = files(good=TINY)
    assert validate(good)[1] == []
    assert THREE.count("\n") == TINY.count("\n") and "3.0" in THREE and "$stride" in THREE


def test_a_file_with_three_errors_gets_three_sorted_by_line(files):
    (path,) = files(three=THREE)
    spec, errors = validate(path)
    assert spec is None
    assert [(e.line, e.field) for e in errors] == [
        (4, "layers[0].k"),
        (5, "layers[1].s"),
        (6, "layers[2].sx"),
    ]
    assert all(e.file == path and e.column for e in errors)
    assert "found 3.0; allowed: an odd integer" in errors[0].message
    assert errors[1].message.startswith("refers to $stride, but params defines only: width")
    assert errors[2].message.startswith("unknown key 'sx'; allowed here: op, k, exp")


def test_shape_checks_report_both_head_errors(files):
    text = TINY.replace("  - {op: pool}\n", "").replace("num_classes: 10", "num_classes: 7")
    (path,) = files(headless=text)
    _, errors = validate(path)
    assert [e.message.split(";")[0] for e in errors] == [
        "the network ends with a 10×16×16 map",
        "the last row gives 10 outputs but num_classes is 7",
    ]
    assert {e.line for e in errors} == {7}


def test_shape_checks_wait_for_a_valid_spec(files):
    # no pool and an unknown key: the key is reported; planning a broken spec would mislead
    text = TINY.replace("  - {op: pool}\n", "").replace("out: 10,", "out: 10, zz: 1,")
    (path,) = files(broken=text)
    _, errors = validate(path)
    assert [e.field for e in errors] == ["layers[3].zz"]


def test_every_reference_error_and_value_error_is_reported(files):
    text = TINY.replace("params: {", "params: {si: 3, ").replace("s: 1}", "s: $si}")
    (path,) = files(si=text)
    _, errors = validate(path)
    assert [e.line for e in errors] == [5, 6]
    assert all(e.message.endswith("(the value comes from $si)") for e in errors)


def test_text_format_ok_lines_errors_and_the_counting_last_line(files, capsys):
    paths = files(a=TINY, b=THREE, c=TINY)
    assert main(["validate", *paths]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[:2] == [f"ok: {paths[0]} (tiny, 5 rows)", f"ok: {paths[2]} (tiny, 5 rows)"]
    assert lines[-1] == "3 specs: 2 valid, 1 invalid (3 errors)"
    errors = err.splitlines()
    assert len(errors) == 3 and all(e.startswith(f"error: {paths[1]}, line ") for e in errors)


def test_every_shipped_spec_is_valid(capsys):
    assert main(["validate", *map(str, SPECS)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines()[-1] == f"{len(SPECS)} specs: {len(SPECS)} valid, 0 invalid"


def test_one_spec_one_error_in_the_singular(files, capsys):
    (path,) = files(k=TINY.replace("k: 1,", "k: 2,"))
    assert main(["validate", path]) == 1
    assert capsys.readouterr().out == "1 spec: 0 valid, 1 invalid (1 error)\n"


def test_json_format_one_object_per_file(files, capsys):
    paths = files(a=TINY, b=THREE)
    assert main(["validate", "--format", "json", *paths]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [d["path"] for d in data] == paths
    assert [d["valid"] for d in data] == [True, False]
    assert data[0]["errors"] == []
    errors = data[1]["errors"]
    assert [(e["line"], e["field"]) for e in errors] == [
        (4, "layers[0].k"),
        (5, "layers[1].s"),
        (6, "layers[2].sx"),
    ]
    assert errors[2]["col"] == THREE.splitlines()[5].index("sx") + 1
    assert errors[2]["message"].startswith("unknown key 'sx'")
    assert {e["file"] for e in errors} == {paths[1]}


def test_github_format_annotates_each_error(files, capsys):
    paths = files(a=TINY, b=THREE)
    assert main(["validate", "--format", "github", *paths]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[-1] == "2 specs: 1 valid, 1 invalid (3 errors)"
    col = THREE.splitlines()[5].index("sx") + 1
    assert lines[2] == (
        f"::error file={paths[1]},line=6,col={col}::layers[2].sx: unknown key 'sx'; "
        "allowed here: op, k, exp, out, se, nl, s, n, fixed, name"
    )
    assert all(line.startswith(f"::error file={paths[1]},line=") for line in lines[:3])


def test_github_escapes_what_workflow_commands_require():
    error = SpecError("100% sure\r\nsecond line", file="a,b:c%.yaml", line=3, column=4, field="x")
    assert github_annotation(error, "ignored.yaml") == (
        "::error file=a%2Cb%3Ac%25.yaml,line=3,col=4::x: 100%25 sure%0D%0Asecond line"
    )
    # no line (an empty file): no line or col property; the path given when the error has none
    assert github_annotation(SpecError("the file is empty"), "e.yaml") == (
        "::error file=e.yaml::the file is empty"
    )


def test_an_override_error_names_the_flag_in_every_format(capsys):
    small = str(ROOT / "specs" / "small.yaml")
    assert main(["validate", small, "--set", "nope=1"]) == 1
    assert "error: --set nope=1: unknown parameter 'nope'" in capsys.readouterr().err
    assert main(["validate", "--format", "json", small, "--set", "width=1000"]) == 1
    (result,) = json.loads(capsys.readouterr().out)
    assert result["errors"][0]["field"] == "--set width=1000: params.width"
    # an assignment that is not KEY=VALUE is a wrong command: exit 2, before any file is read
    assert main(["validate", small, "--set", "width"]) == 2
    assert "error: --set: 'width' is not KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["validate", "--formt", "json"], "unrecognized arguments"),
        (["validate", "--format", "xml", "small"], "invalid choice: 'xml'"),
        (["validate"], "the following arguments are required: SPEC"),
    ],
)
def test_a_wrong_command_exits_2(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_path_that_is_no_spec_file_exits_2_before_validating(files, tmp_path, capsys):
    (good,) = files(good=TINY)
    os.mkfifo(tmp_path / "pipe.yaml")
    (tmp_path / "big.yaml").write_bytes(b"#" * (2 << 20))
    (tmp_path / "data.yaml").write_bytes(bytes(range(256)))
    for bad, message in [
        (tmp_path / "nope.yaml", "no such file"),
        (tmp_path, "is a folder"),
        (tmp_path / "pipe.yaml", "is a pipe, not a regular file"),
        (tmp_path / "big.yaml", "bytes or more; a spec is at most"),
        (tmp_path / "data.yaml", "binary file"),
    ]:
        for fmt in ("text", "json", "github"):
            assert main(["validate", "--format", fmt, good, str(bad)]) == 2
            out, err = capsys.readouterr()
            assert err.startswith(f"error: {bad}") and message in err, err
            # in CI's format the refused path is an annotation too; no other format prints
            annotation = f"::error file={bad}::" if fmt == "github" else ""
            assert out.startswith(annotation) and out.count("\n") == (fmt == "github"), out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("- 1\n- 2\n", "the top level is a list"),
        ("name: [\n", "not valid YAML"),
        ("a: !!python/object/apply:os.system [echo]\n", "never executed"),
        ("{" * 40, "nested more than 32 levels deep"),
        ("name: x\nparams: {width: .nan}\nlayers: []\n", "params.width: found nan"),
    ],
    ids=["empty", "list", "not-yaml", "python-tag", "deep", "nan"],
)
def test_careless_or_hostile_files_are_invalid_specs_exit_1(files, capsys, text, message):
    (path,) = files(bad=text)
    assert main(["validate", "--format", "json", path]) == 1
    (result,) = json.loads(capsys.readouterr().out)
    shown = [f"{e['field']}: {e['message']}" for e in result["errors"]]
    assert not result["valid"] and any(message in m for m in shown), shown


def test_a_number_as_a_parameter_name_and_a_missing_reference_both_reported(files):
    text = TINY.replace("params: {", "params: {7: 1, ").replace("s: 2}", "s: $nope}")
    (path,) = files(numbered=text)
    _, errors = validate(path)
    assert [(e.line, e.column) for e in errors] == [(2, 10), (4, 44)]
    assert [e.message for e in errors] == [
        "'7' is not a valid parameter name; allowed: letters, digits and _, not starting with a "
        "digit",
        "refers to $nope, but params defines only: 7, width, divisor, resolution, num_classes, "
        "bn_momentum, bn_eps",
    ]


def test_nan_is_reported_once_not_again_by_the_schema(files):
    (path,) = files(nan=TINY.replace("bn_eps: 0.001", "bn_eps: .nan"))
    _, errors = validate(path)
    assert [e.field for e in errors] == ["params.bn_eps"]


def test_the_real_binary_exit_codes(files):
    good, bad = files(good=TINY, bad=THREE)
    for args, code in [([good], 0), ([good, bad], 1), ([good, "no-such.yaml"], 2)]:
        done = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), "validate", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == code, done.stderr
        assert "Traceback" not in done.stderr


NO_TORCH = """
import argparse, sys
from mnv3spec.cli.flags import flag_names
from mnv3spec.cli.specs import add_spec_commands
parser = argparse.ArgumentParser()
add_spec_commands(parser.add_subparsers(dest="command"))
args = parser.parse_args(["validate", *sys.argv[1:]])
args.flags = {}
code = args.func(args)
assert "torch" not in sys.modules, "validate imported torch"
sys.exit(code)
"""


def test_validate_imports_no_torch():
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, *map(str, SPECS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ok: ") == len(SPECS)


def test_the_command_line_validate_imports_no_torch():
    code = "import sys; from mnv3spec.cli import main; main(sys.argv[1:]); "
    code += "print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code, "validate", *map(str, SPECS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.stdout.splitlines()[-1] == "False", done.stderr


def test_schema_prints_the_shipped_schema(capsys):
    assert main(["schema"]) == 0
    out = capsys.readouterr().out
    assert out == SHIPPED.read_text(encoding="utf-8")
    schema = json.loads(out)
    assert schema["$id"] == "urn:mnv3spec:spec:v1"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_specs_name_the_schema_for_editors(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    target = (path.parent / first.split("$schema=", 1)[1]).resolve()
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert target == (VARIANT_SHIPPED if "base" in document else SHIPPED).resolve()
    # what an editor checks against that schema, it accepts
    jsonschema.Draft202012Validator(json.loads(target.read_text(encoding="utf-8"))).validate(
        document
    )


@pytest.mark.parametrize(
    ("edits", "valid"),
    [
        ({"params": {"x": None}}, True),  # null drops a parameter, as validate takes it
        ({"rows": {"bneck1": {"name": None}}}, True),
        ({"remove": ["bneck1"] * 300}, False),  # the bounds validate refuses, an editor too
        ({"rows": {"bneck1": {f"f{i}": 1 for i in range(40)}}}, False),
    ],
)
def test_the_variant_schema_agrees_with_validate(tmp_path, edits, valid):
    document = {"base": "small", "name": "v", **edits}
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump(document))
    checker = jsonschema.Draft202012Validator(json.loads(VARIANT_SHIPPED.read_text()))
    assert checker.is_valid(document) == valid
    assert (validate(path)[0] is not None) == valid


@pytest.mark.parametrize("hook_id", ["mnv3spec-validate", "mnv3spec-validate-system"])
def test_the_pre_commit_hooks_run_validate_on_spec_files(hook_id):
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    (hook,) = [h for h in hooks if h["id"] == hook_id]
    command, *args = hook["entry"].split()
    assert args == ["validate"]
    scripts = configparser.ConfigParser()
    scripts.read(ROOT / "setup.cfg")
    assert f"{command} = mnv3spec.cli:main" in scripts["options.entry_points"]["console_scripts"]
    files = re.compile(hook["files"])
    assert all(files.search(str(p.relative_to(ROOT))) for p in SPECS)
    assert not any(files.search(p) for p in ["tests/bad_specs/empty.yaml", "specs/README.md"])


def test_a_file_name_cannot_inject_a_workflow_command(tmp_path, capsys):
    """A path holding a newline and ``::warning ...::``, refused (exit 2) or valid, and a --set
    that is not KEY=VALUE: every line on stdout and stderr starts as ours."""
    hostile = tmp_path / "a\n::warning file=x::pwned\r\x1b[2J.yaml"
    for argv in (
        ["validate", "--format", "github", str(hostile)],  # missing: exit 2
        ["validate", "--format", "github", "small", "--set", "x\n::warning::pwned"],
        ["show", str(hostile)],
    ):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        lines = (out + err).splitlines()
        assert lines and all(line.startswith(("::error ", "error: ")) for line in lines), lines
        assert "\x1b" not in out + err and "\r" not in out + err
    hostile.write_text(TINY)
    assert main(["validate", str(hostile)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok: ") and out.count("\n") == 2 and "\\n::warning" in out


def test_a_long_name_is_cut_in_the_ok_line(files, capsys):
    (path,) = files(long=TINY.replace("name: tiny", "name: " + "n" * 10_000))
    assert main(["validate", path]) == 0
    assert f"({'n' * 57}..., 5 rows)" in capsys.readouterr().out


def test_an_unknown_word_from_the_user_is_printed_on_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["validate", "--format", "x\n::warning::pwned", "small"])
    err = capsys.readouterr().err
    assert "\n::warning" not in err and "\\n::warning" in err


def test_annotation_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "three.yaml").write_text(THREE)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--format", "github", str(tmp_path / "specs" / "three.yaml")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith("::error file=specs/three.yaml,line=") for line in lines[:3])
    assert main(["validate", "--format", "github", "specs/gone.yaml"]) == 2
    assert capsys.readouterr().out.startswith("::error file=specs/gone.yaml::no such file")
