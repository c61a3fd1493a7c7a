"""validate and show, run the way a user runs them; the command line's start-up, flags and
version (in real processes where the process is the point)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import entry_points, version

import pytest

import mnv3spec

from .conftest import ROOT, SPECS, run_cli, run_cli_process

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


COMMANDS = ["validate", "show", "diff", "train", "eval", "infer", "latency", "export"]
COMMANDS += ["sweep", "adapt", "quantize", "import", "schema"]

# After --help of each command (and of the whole CLI), which heavy modules were imported.
HELP_IMPORTS = """
import sys
from mnv3spec.cli import main
for command in sys.argv[1:]:
    try:
        main([*command.split(), "--help"])
    except SystemExit as e:
        assert e.code == 0, command
heavy = ("torch", "numpy", "torchvision", "onnxruntime", "timm", "matplotlib", "yaml")
print(" ".join(sorted(m for m in heavy if m in sys.modules)) or "none", file=sys.stderr)
"""


def test_help_of_every_command_imports_no_torch():
    """A fresh interpreter (the process is the point): --help answers at once, not after torch."""
    listed = re.findall(r"^    (\w+) ", run_cli("--help").stdout, re.M)
    assert sorted(listed) == sorted(COMMANDS)
    done = subprocess.run(
        [sys.executable, "-c", HELP_IMPORTS, "", *COMMANDS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "none\n"
    for command in COMMANDS:
        assert f"usage: mnv3spec {command} " in done.stdout


def test_the_real_binary_answers_help_version_and_a_bad_flag():
    """cli.py and python -m mnv3spec, as processes: their output and exit codes."""
    assert run_cli_process("--help").stdout.startswith("usage: mnv3spec ")
    for launch in ([str(ROOT / "cli.py")], ["-m", "mnv3spec"]):
        done = subprocess.run(
            [sys.executable, *launch, "--version"], cwd=ROOT, capture_output=True, text=True
        )
        assert (done.returncode, done.stdout) == (0, f"mnv3spec {mnv3spec.__version__}\n")
    bad = run_cli_process("show", "small", "--jsn")
    assert bad.returncode == 2 and "did you mean --json?" in bad.stderr


def test_version_is_the_package_metadata():
    assert mnv3spec.__version__ == version("mnv3spec")
    assert run_cli("--version").stdout == f"mnv3spec {mnv3spec.__version__}\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "small", "--epoch", "1"], "--epoch is not a flag: did you mean --epochs?"),
        (["train", "small", "--data-d", "x"], "did you mean --data-dir?"),
        (["show", "small", "--js"], "--js is not a flag: did you mean --json?"),
        (["latency", "--run", "1"], "did you mean --runs?"),
        (["sweep", "small", "--epoch", "1"], "did you mean --epochs?"),  # train's flags too
        (["quantize", "x.safetensors", "--max-dro", "1"], "did you mean --max-drop?"),
        (["export", "small", "--format", "onnx", "--dynamic"], "did you mean --dynamic-batch?"),
        (["diff", "small", "small", "--set-c", "w=1"], "did you mean --set-b?"),
        (["validate", "small", "--zzz"], "unrecognized arguments: --zzz"),
        (["--vers", "show", "small"], "unrecognized arguments: --vers"),
    ],
)
def test_a_flag_is_never_abbreviated(args, message):
    """argparse's prefix matching once took --epoch 1 for --epochs 1 and started a run."""
    result = run_cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert message in result.stderr and "Traceback" not in result.stderr


def test_the_package_imports_its_public_names_on_first_use():
    for name in mnv3spec.__all__:
        assert getattr(mnv3spec, name) is not None
    assert "build" in dir(mnv3spec)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        mnv3spec.nope  # noqa: B018
