"""validate and show, run the way a user runs them."""

from __future__ import annotations

import json
from importlib.metadata import entry_points

from .conftest import ROOT, SPECS

BAD = sorted((ROOT / "tests" / "bad_specs").glob("*.yaml"))


def test_validate_accepts_every_shipped_spec(cli):
    result = cli("validate", *SPECS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok: ") == len(SPECS)


def test_validate_fails_with_one_paragraph_per_error_and_no_traceback(cli):
    result = cli("validate", ROOT / "specs" / "small.yaml", *BAD)
    assert result.returncode == 1  # some spec is invalid; 2 is for a wrong command
    assert "Traceback" not in result.stderr
    errors = result.stderr.strip().splitlines()
    assert all(e.startswith("error: ") for e in errors)
    assert {e.split(",")[0].split(": ")[1] for e in errors} == {str(p) for p in BAD}
    assert result.stdout.count("ok: ") == 1
    summary = f"{len(BAD) + 1} specs: 1 valid, {len(BAD)} invalid ({len(errors)} errors)"
    assert result.stdout.splitlines()[-1] == summary


def test_show_prints_the_table_and_totals(cli):
    result = cli(
        "show",
        "specs/small.yaml",
        "--set",
        "si=2",
        "--set",
        "num_classes=1000",
        "--set",
        "resolution=224",
    )
    assert result.returncode == 0, result.stderr
    assert "2,542,856" in result.stdout and "56.5 M multiply-adds" in result.stdout
    assert " 1  bneck1      bneck 3×3 16→16 exp 16 SE RE s2   16×112×112  16×56×56" in result.stdout


def test_show_json_is_machine_readable(cli):
    result = cli("show", "specs/large.yaml", "--json", "--set", "width=0.5")
    data = json.loads(result.stdout)
    assert data["name"] == "mobilenet_v3_large" and len(data["rows"]) == 21
    assert data["params"] == sum(r["params"] for r in data["rows"])
    assert data["rows"][0]["out_shape"] == [8, 32, 32]
    assert data["rows"][4]["features"] == {
        "op": "bneck",
        "k": 5,
        "in": 16,
        "exp": [40],
        "out": 24,
        "se": True,
        "nl": "RE",
        "bn": None,
        "s": 1,
        "n": 1,
        "p": None,
    }


def test_bad_input_exits_2_without_traceback(cli):
    for args in (
        ["show", "specs/small.yaml", "--set", "si=3"],
        ["show", "specs/small.yaml", "--set", "nope=1"],
        ["show", "does-not-exist.yaml"],
        ["show", "specs/small.yaml", "--set", "width"],
        ["show"],
        ["frobnicate"],
    ):
        result = cli(*args)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr, args
        assert result.stderr.strip(), args


def test_console_script_is_the_package_cli():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("mnv3spec") == "mnv3spec.cli:main"


def test_nothing_named_cli_is_installed_beside_the_package():
    """The top-level cli.py is a thin launcher for the checkout; the package owns the CLI."""
    from configparser import ConfigParser

    cfg = ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "py_modules" not in cfg["options"]
    assert (ROOT / "cli.py").read_text().count("\n") < 12
