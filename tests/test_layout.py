"""The shape of the library, read from its source: short functions and classes, no reach into
argparse's private attributes, and the run folder's file names spelled by :class:`RunFolder`
alone."""

from __future__ import annotations

import ast

from mnv3spec.train.run_folder import RunFolder

from .conftest import ROOT

PACKAGE = ROOT / "mnv3spec"
MAX_FUNCTION, MAX_CLASS = 50, 150
LONG_FOR_NOW: set[str] = set()  # none: export and quantize_checkpoint are split by runtime now
RUN_FILES = {
    RunFolder.CONFIG,
    RunFolder.SPEC,
    RunFolder.METRICS,
    RunFolder.LAST,
    RunFolder.BEST,
    RunFolder.RESUME,
    RunFolder.COMMAND,
    RunFolder.CURVES,
}
# A weights file's own error hint for a folder given as a file ("e.g. FOLDER/best.safetensors"):
# weights/ and deploy/ sit below train/, so they cannot ask RunFolder.
NAMES_A_RUN_FILE = {"train/run_folder.py", "weights/checkpoint.py", "deploy/quantize.py"}


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(p.relative_to(PACKAGE)), ast.parse(p.read_text()))
        for p in sorted(PACKAGE.rglob("*.py"))
    ]


def test_no_function_over_50_lines_and_no_class_over_150():
    long = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                lines = node.end_lineno - node.lineno + 1
                limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
                if lines > limit and f"{name}:{node.name}" not in LONG_FOR_NOW:
                    long.append(f"{name}:{node.name} ({lines} lines)")
    assert not long


def test_no_module_reaches_into_argparse_private_attributes():
    reached = [
        f"{name}:{node.lineno} .{node.attr}"
        for name, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in ("_actions", "_add_action", "_option_string_actions", "_group_actions")
    ]
    assert not reached


def test_only_the_run_folder_spells_its_file_names():
    spelled = [
        f"{name}:{node.lineno} {node.value!r}"
        for name, tree in _modules()
        if name not in NAMES_A_RUN_FILE
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in RUN_FILES
    ]
    assert not spelled
