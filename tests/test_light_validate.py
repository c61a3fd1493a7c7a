"""The light path for checking specs in CI (docs/ci.md): ``validate`` runs with nothing installed
but this package, PyYAML and jsonschema, and the shipped workflow and hooks name commands that
exist."""

from __future__ import annotations

import shlex
import subprocess
import sys

import yaml

from mnv3spec.cli import build_parser

from .conftest import ROOT, SPECS

# Every dependency but PyYAML and jsonschema, made unimportable (None in sys.modules).
HEAVY = ["torch", "torchvision", "numpy", "safetensors", "tqdm", "matplotlib", "PIL", "onnx"]
BLOCKED = (
    "import sys\n"
    f"for name in {HEAVY!r}:\n"
    "    sys.modules[name] = None\n"
    "from mnv3spec.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
WORKFLOW = ROOT / "docs" / "examples" / "validate-specs.yml"


def _validate_without_heavy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED, "validate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_validate_needs_only_yaml_and_jsonschema():
    done = _validate_without_heavy(*map(str, SPECS))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ok: ") == len(SPECS)


def test_the_light_path_annotates_a_bad_spec_for_github():
    done = _validate_without_heavy("--format", "github", "tests/bad_specs/alias.yaml")
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("::error file=tests/bad_specs/alias.yaml,line=4,col=9::")
    assert "Traceback" not in done.stderr


def _commands(text: str) -> list[list[str]]:
    return [shlex.split(line) for line in text.splitlines() if line.strip().startswith("mnv3spec ")]


def test_the_workflow_installs_no_torch_and_runs_a_real_command():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = workflow["jobs"]["validate"]["steps"]
    runs = "\n".join(step.get("run", "") for step in steps)
    assert "--no-deps" in runs and "torch" not in runs
    commands = _commands(runs)
    assert commands, "the workflow runs no mnv3spec command"
    for command in commands:
        args = build_parser().parse_args(command[1:])
        assert args.command == "validate" and args.format == "github"


def test_every_hook_names_a_real_command_and_the_light_one_installs_nothing():
    hooks = {
        hook["id"]: hook for hook in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    }
    assert hooks["mnv3spec-validate-system"]["language"] == "system"
    for hook in hooks.values():
        program, *args = shlex.split(hook["entry"])
        assert program == "mnv3spec"
        assert build_parser().parse_args([*args, "specs/small.yaml"]).command == "validate"
