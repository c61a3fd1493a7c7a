"""Every example in README.md and docs/*.md is run or checked here, and every link between them is
followed, so the documents cannot drift from the code.

The rules an example follows (a block that breaks one fails here, named by its file and line):

- **Shell examples are ```console blocks.** A line starting with ``$ `` is a command (a trailing
  backslash continues it on the next line; ``#`` starts a comment); the lines up to the next
  command are what it prints. ``bash``/``sh`` blocks, and unlabelled blocks with ``$`` lines, are
  refused: they would go unchecked.
- **A plain ```console block is run**, command by command, in a scratch folder of its own that
  links to the repository's files (so a command's outputs land there and a later command of the
  block can read them). ``python cli.py ARGS`` and ``mnv3spec ARGS`` run in this process, as the
  CLI tests do (``run_cli``), stdout and stderr interleaved as a terminal shows them; ``cat FILE``
  prints the file and ``echo $?`` the previous command's exit status. The output must match the
  lines shown: a line ``...`` stands for any number of lines and ``...`` inside a line for any
  text; trailing spaces do not count. A command must exit 0 unless an ``echo $?`` after it shows
  otherwise. Globs (``specs/*.yaml``) expand as the shell expands them.
- **A ```console parse-only block is checked, not run**: for what a test cannot afford or cannot
  do here (train for minutes, download data, time a runtime, run a phone runtime) and for output
  recorded from such a run. Its output lines are not compared. Each command must be one the
  repository can run: ``cli.py`` commands (also under ``torchrun`` and after ``VAR=value``) must be
  accepted by the CLI's own argparse parser; ``python bench/X.py`` and ``python -m MODULE`` must
  name a script or module that exists, with every ``--flag`` shown defined in its source; ``bash
  FILE`` must name a file; ``pip install`` may name only extras that setup.cfg defines; ``pytest``
  is taken as it is. Every argument that is a path into the repository (its first part is a file
  or folder git tracks at the top: ``specs/...``, ``tests/...``) must exist; other paths
  (``runs/``, ``data/``, ``test_images``) are made by the documented commands or are the reader's
  own. ``show``, ``validate``, ``diff`` and ``schema`` are fast and deterministic, so they are
  refused here: run them.
- **A ```yaml block whose first line is ``# PATH``** of a repository file is an excerpt of that
  file: the rest must match the file as output does (``...`` elides lines). Other yaml blocks must
  parse.
- **```python blocks are executed**, in the repository root.
- **Links**: every relative link resolves to a file of the repository and every ``#anchor`` to a
  heading of its target (GitHub's slugs). Web links are not followed (tests have no network).

The file takes about 25 s of one core's time (a minute of wall time on a loaded 2-core machine),
most of it the smoke-test training, the first network built at 224 px, ``import timm:...`` and an
export; examples that would take longer belong in parse-only blocks.
"""

from __future__ import annotations

import configparser
import contextlib
import functools
import glob
import importlib.util
import io
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mnv3spec.cli import build_parser

from .conftest import ROOT, run_cli

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FAST = {"show", "validate", "diff", "schema"}  # never parse-only: run them
TAKEN_AS_THEY_ARE = [("pytest",), ("python", "-m", "pytest"), ("cat",), ("echo", "$?")]
ELIDED = "..."


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    info: str  # the fence's info string: "console", "console parse-only", "yaml", ...
    lines: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    blocks, lines = [], path.read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        fence = re.match(r"\s*```(.*)$", lines[i])
        if not fence:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not re.match(r"\s*```\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        blocks.append(Block(path, start + 1, fence.group(1).strip(), tuple(body)))
        i += 1
    return blocks


BLOCKS = [b for p in DOCS for b in fenced_blocks(p)]


def blocks_of(*infos: str) -> list:
    return [pytest.param(b, id=b.where) for b in BLOCKS if b.info in infos]


# --- console blocks: commands and their output -------------------------------------------------


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]  # after shell quoting, comments and continuations
    output: tuple[str, ...]  # the lines shown after it


def commands(block: Block) -> list[Command]:
    found: list[tuple[str, list[str]]] = []
    lines = list(block.lines)
    while lines:
        line = lines.pop(0)
        if not line.startswith("$"):
            assert found, f"{block.where}: output before the first command: {line!r}"
            found[-1][1].append(line)
            continue
        text = line[1:]
        while text.rstrip().endswith("\\") and lines:
            text = text.rstrip()[:-1] + " " + lines.pop(0)
        found.append((text, []))
    result = []
    for text, output in found:
        parts = [p for p in re.split(r"\s&&\s", text)]
        for i, part in enumerate(parts):
            words = shlex.split(part.strip().removesuffix("&"), comments=True)
            if words:
                result.append(Command(tuple(words), tuple(output) if i == len(parts) - 1 else ()))
    return result


def without_env(words: tuple[str, ...]) -> tuple[str, ...]:
    """``OMP_NUM_THREADS=1 python ...`` → ``python ...``."""
    i = 0
    while i < len(words) and re.match(r"[A-Z_][A-Z0-9_]*=", words[i]):
        i += 1
    return words[i:]


def cli_args(words: tuple[str, ...]) -> list[str] | None:
    """The arguments of a cli.py command (``python cli.py``, ``mnv3spec``, ``python -m mnv3spec``,
    ``torchrun ... cli.py``), or None if it is another program."""
    if words[:2] == ("python", "cli.py") or words[:3] == ("python", "-m", "mnv3spec"):
        return list(words[3 if words[1] == "-m" else 2 :])
    if words[:1] == ("mnv3spec",):
        return list(words[1:])
    if words[:1] == ("torchrun",) and "cli.py" in words:
        return list(words[words.index("cli.py") + 1 :])
    return None


def matches(shown: list[str], actual: list[str]) -> bool:
    """``shown`` against ``actual``, line by line: a line ``...`` takes any number of lines, and
    ``...`` inside a line any text."""
    shown, actual = _trimmed(shown), _trimmed(actual)
    patterns = [None if s == ELIDED else _line_pattern(s) for s in shown]
    # reached[j]: the patterns so far can take exactly the first j lines of actual
    reached = [True] + [False] * len(actual)
    for p in patterns:
        if p is None:  # any number of lines: every j after a reached one
            reached = [any(reached[: j + 1]) for j in range(len(actual) + 1)]
        else:
            fits = [bool(p.fullmatch(line)) for line in actual]
            reached = [False] + [reached[j] and fits[j] for j in range(len(actual))]
    return reached[-1]


def _trimmed(lines: list[str]) -> list[str]:
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _line_pattern(line: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in line.split(ELIDED)))


def test_the_elision_rules():
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert matches(["a", "...", "b"], ["a", "b"])
    assert matches(["x ... z"], ["x y z"]) and not matches(["x ... z"], ["x y"])
    assert not matches(["a", "b"], ["a", "b", "c"])
    assert matches(["a  ", ""], ["a"])


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A working folder that sees the repository's files through links: what a command writes
    lands here, never in the checkout."""
    for name in tracked_top_level():
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


@functools.cache
def tracked_top_level() -> frozenset[str]:
    """The files and folders at the top of the repository: git's list, or where there is no git
    checkout, everything at the top but git's own."""
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
        names = {line.split("/")[0] for line in listed.stdout.splitlines() if line}
    except OSError:
        names = set()
    names = names or {p.name for p in ROOT.iterdir() if not p.name.startswith(".git")}
    return frozenset(n for n in names if (ROOT / n).exists())


def expand(words: list[str], cwd: Path) -> list[str]:
    out = []
    for w in words:
        found = sorted(glob.glob(w, root_dir=cwd)) if any(c in w for c in "*?[") else []
        out.extend(found or [w])
    return out


@pytest.mark.parametrize("block", blocks_of("console"))
def test_console_examples_print_what_they_show(block: Block, scratch: Path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps usage lines to the terminal's width
    cmds = commands(block)
    assert cmds, f"{block.where}: a console block without a command"
    status = None
    for i, cmd in enumerate(cmds):
        words = cmd.words
        args = cli_args(words)
        if args is not None:
            result = run_cli(*expand(args, scratch), cwd=scratch, merge=True, timeout=120)
            printed, status = result.stdout, result.returncode
            shown_next = i + 1 < len(cmds) and cmds[i + 1].words == ("echo", "$?")
            assert shown_next or status == 0, (
                f"{block.where}: `{shlex.join(words)}` exited {status}; show it with `echo $?`"
                f" if that is meant:\n{printed}"
            )
        elif words[0] == "cat" and len(words) == 2:
            printed = (scratch / words[1]).read_text(encoding="utf-8")
        elif words == ("echo", "$?"):
            printed = f"{status}\n"
        else:
            pytest.fail(f"{block.where}: `{shlex.join(words)}`: only cli.py, cat, echo $? run here")
        shown = list(cmd.output)
        same = matches(shown, printed.split("\n"))
        assert same, (
            f"{block.where}: `{shlex.join(words)}` printed\n{printed}\nwhich is not what the block"
            f" shows:\n" + "\n".join(shown)
        )


@pytest.mark.parametrize("block", blocks_of("console parse-only"))
def test_parse_only_examples_name_what_exists(block: Block):
    cmds = commands(block)
    assert cmds, f"{block.where}: a console block without a command"
    for cmd in cmds:
        words = without_env(cmd.words)
        where = f"{block.where}: `{shlex.join(cmd.words)}`"
        args = cli_args(words)
        if args is not None:
            assert not args or args[0] not in FAST, f"{where}: {args[0]} is fast: run it instead"
            _parses(args, where)
        elif words[:2] == ("python", "-m") and words[2] != "pytest":
            spec = importlib.util.find_spec(words[2])
            assert spec and spec.origin, f"{where}: no module {words[2]}"
            main = Path(spec.origin).with_name("__main__.py")
            _flags_defined(words[3:], main if main.exists() else Path(spec.origin), where)
        elif words[0] == "python" and words[1].endswith(".py"):
            _flags_defined(words[2:], ROOT / words[1], where)
        elif words[0] == "bash":
            assert (ROOT / words[1]).is_file(), f"{where}: no {words[1]}"
        elif words[:2] == ("pip", "install"):
            _extras_defined(words, where)
        elif not any(words[: len(a)] == a for a in TAKEN_AS_THEY_ARE):
            pytest.fail(f"{where}: a program this test does not know; add a rule for it")
        _repository_paths_exist(words, where)


def _parses(args: list[str], where: str) -> None:
    parser, err = build_parser(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            _, unknown = parser.parse_known_args(args)
    except SystemExit as e:
        assert e.code == 0, f"{where}: the CLI refuses it:\n{err.getvalue()}"
        return
    assert not unknown, f"{where}: not flags of the CLI: {unknown}"


def _flags_defined(args: tuple[str, ...], source: Path, where: str) -> None:
    assert source.is_file(), f"{where}: no {source.relative_to(ROOT)}"
    text = source.read_text(encoding="utf-8")
    for flag in (a.split("=")[0] for a in args if a.startswith("--")):
        assert f'"{flag}"' in text or f"'{flag}'" in text, f"{where}: {source.name} has no {flag}"


def _extras_defined(words: tuple[str, ...], where: str) -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extras = set(config["options.extras_require"])
    for word in words:
        found = re.fullmatch(r"\.\[(.+)\]", word)
        if found:
            unknown = set(found.group(1).split(",")) - extras
            assert not unknown, f"{where}: setup.cfg has no extra {unknown}"


def _repository_paths_exist(words: tuple[str, ...], where: str) -> None:
    top = tracked_top_level()
    for word in words:
        path = word.split("=", 1)[1] if word.startswith("--") and "=" in word else word
        if path.split("/")[0] in top:
            assert glob.glob(path, root_dir=ROOT), f"{where}: {path} is not in the repository"


# --- the other kinds of block -------------------------------------------------------------------


def test_shell_examples_are_console_blocks():
    for b in BLOCKS:
        assert b.info not in ("bash", "sh", "shell", "shell-session"), (
            f"{b.where}: write shell examples as ```console (or ```console parse-only) blocks, with"
            " `$ ` before each command, so they are checked"
        )
        if b.info.split()[:1] == ["console"]:
            assert b.info in ("console", "console parse-only"), f"{b.where}: unknown {b.info!r}"
        if not b.info:
            assert not any(line.startswith("$ ") for line in b.lines), (
                f"{b.where}: commands in an unlabelled block: make it ```console"
            )


@pytest.mark.parametrize("block", blocks_of("yaml"))
def test_yaml_examples_are_the_files_they_quote(block: Block):
    first = block.lines[0] if block.lines else ""
    quoted = ROOT / first[2:].strip() if first.startswith("# ") else None
    if quoted is not None and quoted.is_file():
        same = matches(list(block.lines[1:]), quoted.read_text(encoding="utf-8").split("\n"))
        assert same, f"{block.where}: not what {first[2:]} holds"
    else:
        yaml.safe_load("\n".join(block.lines))


@pytest.mark.parametrize("block", blocks_of("python"))
def test_python_examples_run(block: Block, monkeypatch):
    monkeypatch.chdir(ROOT)
    exec(compile("\n".join(block.lines), block.where, "exec"), {"__name__": "__docs__"})


# --- links --------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _prose(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.M):
        s = slug(heading)
        found.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return found


def _prose(text: str) -> str:
    """The text without fenced blocks and code spans, where links and headings are not."""
    text = re.sub(r"^\s*```.*?^\s*```\s*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


@pytest.mark.parametrize("doc", [pytest.param(p, id=str(p.relative_to(ROOT))) for p in DOCS])
def test_links_resolve(doc: Path):
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _prose(doc.read_text("utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        where = f"{doc.relative_to(ROOT)}: ({target})"
        assert linked.exists(), f"{where}: no such file"
        assert ROOT in linked.parents or linked == ROOT, f"{where}: outside the repository"
        if anchor:
            assert linked.suffix == ".md", f"{where}: an anchor into a file that is not markdown"
            assert anchor in anchors(linked), f"{where}: {linked.name} has no heading #{anchor}"


def test_github_slugs():
    assert slug("timm: a second oracle") == "timm-a-second-oracle"
    assert slug("Deploy: export, quantize, phones and runtimes") == (
        "deploy-export-quantize-phones-and-runtimes"
    )
    assert slug("`--recipe` presets") == "--recipe-presets"


# --- the README as a front door -----------------------------------------------------------------


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 150, f"README.md has {lines} lines; the reference belongs in docs/"


def test_the_readme_installs_and_tests_as_ci_does():
    """.ci/run installs "exactly as the README says": the same package, extras and index."""
    readme = [c.words for b in BLOCKS if b.path.name == "README.md" for c in _cmds(b)]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line for line in ci.splitlines() if not line.lstrip().startswith("#")]
    (pip,) = [shlex.split(line) for line in lines if "pip install" in line]
    wanted = _install_args(pip[pip.index("install") + 1 :])
    assert ("pip", "install", *wanted) in readme, f"no `pip install {shlex.join(wanted)}` in README"
    assert ("pytest",) in readme and "python -m pytest" in ci


def _cmds(block: Block) -> list[Command]:
    return commands(block) if block.info.startswith("console") else []


def _install_args(args: list[str]) -> tuple[str, ...]:
    """pip's arguments less the ones that only quieten it or shorten its retries."""
    out, skip = [], {"--quiet": 0, "-q": 0, "--progress-bar": 1, "--retries": 1}
    it = iter(args)
    for a in it:
        if a in skip:
            for _ in range(skip[a]):
                next(it)
        else:
            out.append(a)
    return tuple(out)


# --- measured figures live in docs/measurements.md, beside their commands ---------------------


def test_every_benchmark_has_its_figures_in_measurements():
    text = (ROOT / "docs" / "measurements.md").read_text(encoding="utf-8")
    for script in sorted((ROOT / "bench").glob("*")):
        assert f"bench/{script.name}" in text, f"docs/measurements.md has no bench/{script.name}"


def test_the_code_quotes_no_speed_figures():
    """A docstring or help text that says "5.0× faster" goes stale the day the measurement changes:
    the code says why, docs/measurements.md says how fast."""
    claim = re.compile(r"\d(\.\d+)?\s*(×|x)\s*(faster|slower)")
    for path in sorted((ROOT / "mnv3spec").rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            stripped = line.strip()
            if claim.search(stripped):
                pytest.fail(f"{path.relative_to(ROOT)}:{n}: a measured figure: {stripped}")


def test_every_example_kind_is_covered():
    """Guard against this file silently checking nothing (a parser change, a renamed fence)."""
    infos = {b.info for b in BLOCKS}
    assert {"console", "console parse-only", "yaml", "python"} <= infos
    assert os.path.basename(DOCS[0]) == "README.md" and len(DOCS) >= 6


# --- every flag is documented with its command ------------------------------------------------


def sections(path: Path) -> dict[str, str]:
    """``## heading`` → the text under it."""
    parts = re.split(r"^## ", path.read_text(encoding="utf-8"), flags=re.M)[1:]
    return {part.split("\n", 1)[0].strip(): part for part in parts}


def test_every_flag_is_documented_with_its_command():
    """The flags are declared once, in the parser; the reference is checked against it: each
    command's ``--flags`` appear in its section of docs/commands.md (export's and quantize's may be
    in docs/deploy.md). sweep and adapt train as train does, so train's flags count for them too."""
    commands_md, deploy_md = sections(ROOT / "docs/commands.md"), sections(ROOT / "docs/deploy.md")
    parser = build_parser()
    for name, command in parser.commands.items():
        text = commands_md.get(name, "") + deploy_md.get(name, "")
        if name in ("sweep", "adapt"):
            text += commands_md["train"]
        flags = {f for a in command.options for f in a.option_strings if f.startswith("--")}
        shown = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", text))
        missing = sorted(flags - shown - {"--help"})
        assert not missing, f"docs/commands.md, ## {name}: undocumented {missing}"
