"""The shape of the library, read from its source: short functions and classes, no reach into
argparse's private attributes, the run folder's file names spelled by :class:`RunFolder` alone,
the pipelines standing on the services, never on each other, and deploy's commands reaching a
runtime through the registry alone."""

from __future__ import annotations

import ast

from mnv3spec.services.run_folder import RunFolder

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
# weights/ sits below services/, so it cannot ask RunFolder.
NAMES_A_RUN_FILE = {"services/run_folder.py", "weights/checkpoint.py"}
# package → the packages it must not import: the pipelines stand side by side on services/, which
# stands below them all; latency/ times what deploy/'s runtimes lower, explore/ uses both.
PIPELINES = {"train", "deploy", "latency", "explore", "cli"}
NEVER_IMPORTS = {
    "services": PIPELINES,
    "deploy": PIPELINES - {"deploy"},
    "latency": PIPELINES - {"latency", "deploy"},
    "train": PIPELINES - {"train"},
}
RUNTIMES, RECORD = ("deploy", "runtimes"), ("deploy", "runtimes", "record")


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


def _imported_modules(name: str, tree: ast.Module) -> set[tuple[str, ...]]:
    """The modules of mnv3spec that module ``name`` (a path under it) imports, at any depth of its
    code (imports inside functions included), each as the parts of its path (a package's: its
    folder's); ``from .runtimes import phone`` imports the module ``phone``."""
    parts = name.split("/")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = parts[: len(parts) - node.level + 1] if node.level > 1 else parts
                target = [t for t in [*base, *module.split(".")] if t]
            elif module == "mnv3spec" or module.startswith("mnv3spec."):
                target = module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                sub = PACKAGE.joinpath(*target, alias.name)
                is_module = sub.with_suffix(".py").is_file() or sub.is_dir()
                found.add(tuple([*target, alias.name] if is_module else target))
        elif isinstance(node, ast.Import):
            found |= {
                tuple(a.name.split(".")[1:]) for a in node.names if a.name.startswith("mnv3spec.")
            }
    return found


def _imported_packages(name: str, tree: ast.Module) -> set[str]:
    """The subpackages of mnv3spec that module ``name`` imports (:func:`_imported_modules`)."""
    return {module[0] if module else "" for module in _imported_modules(name, tree)}


def test_pipelines_import_only_what_stands_below_them():
    crossing = [
        f"{name} imports {package}/"
        for name, tree in _modules()
        for package in _imported_packages(name, tree)
        if package in NEVER_IMPORTS.get(name.split("/")[0], set())
    ]
    assert not crossing


def test_deploy_reaches_a_runtime_through_the_registry_alone():
    """deploy/'s commands reach a runtime through the registry and the record it declares, never
    its module; the runtimes stand on the record, never on the registry that finds them. So
    adding a runtime is one new file in deploy/runtimes/, and no command names it."""
    reached = []
    for name, tree in _modules():
        if not name.startswith("deploy/"):
            continue
        inside = name.startswith("deploy/runtimes/")
        for module in _imported_modules(name, tree):
            if module[:2] != RUNTIMES:
                continue
            if (module == RUNTIMES) if inside else (module not in (RUNTIMES, RECORD)):
                reached.append(f"{name} imports {'.'.join(module)}")
    assert not reached
