"""The library speaks parameters, the CLI speaks flags: :mod:`mnv3spec.cli.flags` maps each error's
field to the flag the user typed, for every command, and no library module names a flag."""

from __future__ import annotations

import argparse
import ast
import re

import pytest

from mnv3spec.cli import build_parser, main
from mnv3spec.cli.flags import flag_for, flag_names
from mnv3spec.errors import SpecError, UserError

from .conftest import ROOT

SMALL = str(ROOT / "specs" / "small.yaml")
FLAG = re.compile(r"(?<![\w-])--[a-z]")

# Library strings that are command lines, not messages: sweep runs each variant as a `train`
# command, diff labels each side with the overrides as typed, and ``python -m mnv3spec.spec`` has
# its own one-flag command line.
COMMAND_LINES = {
    "explore/sweep.py": {"--set", "--resume", "--out", "--name", "--device", "--table"},
    "explore/sweep_folder.py": {"--name"},  # the way out of a damaged sweep.json
    "kinds.py": {"--resume", "--init", "--images"},  # the commands that take a kind of file
    "explore/cluster.py": {"--head"},  # Ray's own `ray start --head`, which prints the address
    "latency/predict.py": {"--table", "--set"},  # how to add rows: latency --table
    "model/diff.py": {"--set"},
    "spec/__main__.py": {"--write"},
}


def _parser(command: str) -> argparse.ArgumentParser:
    return build_parser().commands[command]


def test_flag_names_come_from_each_commands_parser():
    train = flag_names(_parser("train"))
    assert train["data_dir"] == "--data-dir" and train["graph"] == "--no-graph"
    assert train["set"] == train["overrides"] == "--set" and train["resume"] == "--resume"
    assert "help" not in train and "spec" not in train  # positionals are not flags
    latency = flag_names(_parser("latency"))
    assert latency["widths"] == "--widths" and latency["csv"] == "--csv"
    assert flag_names(_parser("quantize"))["keep_float"] == "--keep-float"


def test_flag_for_names_the_flag_and_the_value_typed():
    flags = {"batch": "--batch", "set": "--set", "name": "--name"}
    args = argparse.Namespace(batch=500, set=["width=0"], name="x")
    assert flag_for(UserError("too many", field="batch"), flags, args) == "--batch 500"
    assert flag_for(UserError("500 is too many", field="batch"), flags, args) == "--batch"
    assert flag_for(SpecError("m", field="set width=0: params.width"), flags, args) == (
        "--set width=0: params.width"
    )
    assert flag_for(SpecError("m", field="set"), flags, args) == "--set"  # a list: no value
    # a position in a file (the spec's own `name` key) is not the --name flag
    assert flag_for(SpecError("m", file="s.yaml", line=1, field="name"), flags, args) is None
    assert flag_for(SpecError("m", field="layers[3].nl"), flags, args) is None


@pytest.mark.parametrize(
    "argv, shown",
    [
        (["show", SMALL, "--set", "width=0"], "error: --set width=0: params.width: found 0"),
        (["show", SMALL, "--set", "si=3"], "(the value comes from $si, overridden with si=3)"),
        (["show", SMALL, "--set", "nope=1"], "error: --set nope=1: unknown parameter 'nope'"),
        (["show", SMALL, "--set", "width"], "error: --set: 'width' is not KEY=VALUE"),
        (["latency", SMALL, "--devices", "tpu"], "error: --devices: unknown tpu; use cpu"),
        (["latency", SMALL, "--reference", "x"], "error: --reference: unknown x; use torchvision"),
    ],
)
def test_every_command_shows_the_flag_typed(capsys, argv, shown):
    assert main(argv) == 2
    assert shown in capsys.readouterr().err


def _non_doc_strings(tree: ast.AST):
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node


def test_no_library_module_names_a_flag():
    """Error messages, fields and every other string outside the CLI speak parameters
    (docstrings may document commands and their flags)."""
    offenders = []
    package = ROOT / "mnv3spec"
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package).as_posix()
        if module.startswith("cli/"):
            continue
        for node in _non_doc_strings(ast.parse(path.read_text(), str(path))):
            flags = {m.group() for m in re.finditer(r"(?<![\w-])--[a-z][\w-]*", node.value)}
            flags -= COMMAND_LINES.get(module, set())
            if flags:
                offenders.append(f"mnv3spec/{module}:{node.lineno}: {node.value!r}")
    assert not offenders, "library strings naming flags:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "argv",
    [
        ["latency", "small", "--csv", "t\n::warning::x.csv"],
        ["train", "small", "--name", "r\x1b[2J", "--data", "synthetic"],
        ["export", "small", "--format", "onnx", "--out", "m\r.onnx"],
    ],
)
def test_a_path_written_with_a_control_character_is_refused_on_one_line(tmp_path, capsys, argv):
    """Issue 31: a file we would write named with a newline or an escape would need escaping in
    every log that shows it; refused before any work, the name escaped in the message."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "\x1b" not in err
    assert "holds a control character" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "small", "--epochs", "9" * 5000], "--epochs: not an integer: 999"),
        (["train", "small", "--seed", str(2**70)], "--seed: must be <= 9223372036854775807"),
        (["latency", "small", "--runs", "9" * 5000], "(5,000 characters)"),
    ],
)
def test_a_number_flag_of_thousands_of_digits_is_refused_in_a_short_line(capsys, argv, message):
    """Issue 31: bounded before conversion where the flag has a bound, cut short where not."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and len(err.splitlines()[-1]) < 200
