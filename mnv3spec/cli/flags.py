"""What every command shares: argument types, the common flags, and the one mapping from the
library's parameter names to the flags the user typed."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import os
import shlex
import sys
from collections.abc import Iterator

from mnv3spec.errors import UserError
from mnv3spec.text import printable

# Parameters the library names that no flag's dest spells: the flag that sets them.
_ALIASES = {"overrides": "set"}


def overrides(args: argparse.Namespace) -> dict:
    """The ``--set KEY=VALUE`` assignments as a mapping, read as the spec loader reads values."""
    from mnv3spec.spec.edits import parse_assignment

    return dict(parse_assignment(s) for s in args.set or [])


def add_set(p: argparse.ArgumentParser) -> None:
    """The flags of every command that loads a spec: ``--set`` and ``--allow-base``."""
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a spec parameter (width=0.5, si=2) or a field (layers.12.se=true)",
    )
    p.add_argument(
        "--allow-base",
        action="append",
        metavar="DIR",
        help="a variant's base: may also be a file in DIR or below (by default only a shipped "
        "spec or a file in the variant's own folder or below); repeat for more folders",
    )


@contextlib.contextmanager
def allowed_bases(args: argparse.Namespace) -> Iterator[None]:
    """The folders ``--allow-base`` names trusted for a variant's base while the command runs;
    each must be a folder, so a mistyped one is not silently no folder at all."""
    from mnv3spec.spec.variant import trusted_bases

    folders = getattr(args, "allow_base", None) or []
    for folder in folders:
        if not os.path.isdir(folder):
            message = "is not a folder; give the folder a variant's base: lies in"
            raise UserError(message, file=folder, field="allow_base")
    with trusted_bases(folders):
        yield


def add_device(p: argparse.ArgumentParser, default: str = "auto") -> argparse.Action:
    return p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda", "mps"],
        default=default,
        help="auto (default): cuda, else mps, else cpu",
    )


def number(kind: type, low: float, *, above: bool = False, high: float | None = None):
    """An argparse type: ``kind`` at least ``low`` (strictly above with ``above``), and at most
    ``high`` when given."""

    def parse(text: str):
        typed = text if len(text) <= 40 else f"{text[:37]}... ({len(text):,} characters)"
        try:  # int() refuses 4,300 digits with a ValueError too: no number of ours is that long
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {what}: {typed}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number: {typed}")
        if value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {low}: {typed}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}: {typed}")
        return value

    return parse


def unrecognized(words: list[str], parser: argparse.ArgumentParser) -> str:
    """argparse's message for arguments no flag takes, naming the flag a word looks like: the
    one it abbreviates (flags are never abbreviated), else a close spelling."""
    message = f"unrecognized arguments: {' '.join(words)}"
    options = [o for a in parser.options for o in a.option_strings if o.startswith("--")]
    for word in (w.partition("=")[0] for w in words if w.startswith("--")):
        longer = [o for o in options if o.startswith(word)]
        close = longer or difflib.get_close_matches(word, options, n=1)
        if close:
            message += f"; {word} is not a flag: did you mean {' or '.join(close)}?"
    return message


def command_line() -> str:
    """How this process was started, for the run folder's command.txt."""
    head = ["python"] if sys.argv[0].endswith(".py") else []
    size = os.environ.get("WORLD_SIZE")
    tail = f"  # under torchrun, {size} processes" if size else ""
    return shlex.join([*head, *sys.argv]) + tail


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each parameter a command's flags set → the flag: its dest → its first option string
    (``data_dir`` → ``--data-dir``, ``graph`` → ``--no-graph``), plus the library's aliases."""
    flags = {
        a.dest: a.option_strings[0]
        for a in parser.options
        if a.option_strings and a.dest != argparse.SUPPRESS and a.dest != "help"
    }
    flags.update({name: flags[dest] for name, dest in _ALIASES.items() if dest in flags})
    return flags


def flag_for(error: UserError, flags: dict[str, str], args: argparse.Namespace) -> str | None:
    """The field of ``error`` in flags: its first word, a parameter, becomes the flag (``set
    width=0`` → ``--set width=0``), with the value typed unless the error already shows it (as its
    file, or first in its message). None when the field names no parameter of this command: it is a
    position in a file (an error with a line), a spec field, or nothing."""
    if not error.field or error.line is not None:
        return None
    name, space, rest = error.field.partition(" ")
    if name not in flags:
        return None
    if space:
        return f"{flags[name]} {rest}"
    value = getattr(args, name, None)
    # a list (--set, --devices) is not shown; nor is a switch, nor (as before) a 0 or 1
    typed = isinstance(value, (str, int, float)) and value not in (True, False)
    shown = error.file is not None or error.message.startswith(str(value))
    return f"{flags[name]} {value}" if typed and not shown else flags[name]


def in_flags(error: UserError, args: argparse.Namespace) -> UserError:
    """``error`` with its field named by the flag the user typed (``args.flags``, set by main),
    and the folders trusted for a variant's base by the flag that names them."""
    from mnv3spec.spec.variant import TRUSTED

    error.field = flag_for(error, args.flags, args) or error.field
    if "allow_base" in args.flags:
        error.message = error.message.replace(TRUSTED, f"{TRUSTED} (--allow-base DIR)")
    return error


@contextlib.contextmanager
def flags_in_errors(args: argparse.Namespace) -> Iterator[None]:
    """A library error names a parameter (``field="batch"``); the user typed a flag: name that."""
    try:
        yield
    except UserError as e:
        in_flags(e, args)
        raise


# Arguments that name files or folders: each component is checked for length (all arguments are
# checked for bytes that are not UTF-8, which nothing may hold).
_PATHS = {"spec", "specs", "spec_a", "spec_b", "out", "name", "checkpoint", "source", "models"}
_PATHS |= {"images", "csv", "plot", "table", "predict", "data", "data_dir", "resume", "init"}
_PATHS |= {"allow_base"}
# Paths a command writes: a control character there would name a file that every log, table
# and message showing it must escape, so it is refused (a file read may have any name).
_WRITTEN = {"out", "name", "csv", "plot", "table"}


def check_arguments(args: argparse.Namespace) -> None:
    """Before any work: every argument is UTF-8 text, and every path one the operating system
    takes (:func:`~mnv3spec.files.check_path`), so a refused command leaves nothing behind."""
    from mnv3spec.files import check_path, shown

    for dest, value in vars(args).items():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str):
                continue
            flag = args.flags.get(dest, dest)
            if dest in _WRITTEN and printable(item) != item:
                raise UserError(
                    "holds a control character (a newline, a tab, an escape); name what is "
                    "written without one",
                    file=printable(item),
                    field=flag,
                )
            if dest in _PATHS:
                check_path(item, field=flag)
            else:
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise UserError(
                        f"{shown(item)!r} holds bytes that are not UTF-8 text", field=flag
                    ) from None


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    """The options of a command whose trainings may run on a Ray cluster (``sweep``; any command
    that runs its trainings through :mod:`mnv3spec.explore.launch`); read by
    :func:`cluster_settings`."""
    group = p.add_argument_group(
        "cluster", "run the trainings as tasks of a Ray cluster (pip install -e '.[cluster]')"
    )
    group.add_argument(
        "--cluster",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="the head's host:port or ray://host:port; alone: $RAY_ADDRESS; local: a cluster "
        "on this machine for this command. OUT must be on storage every node mounts",
    )
    group.add_argument(
        "--gpus-per-training",
        type=float,
        metavar="N",
        help="GPUs each training holds: a fraction in (0, 1] shares one GPU (0.25: four "
        "trainings on a GPU), or a whole number (default: none, the trainings run on CPU)",
    )
    group.add_argument(
        "--cpus-per-training",
        type=float,
        metavar="N",
        help="CPUs each training holds, its threads (default: the largest node's shared by "
        "the trainings sent at once; 1 each with GPUs)",
    )


def cluster_settings(args: argparse.Namespace):
    """The :class:`~mnv3spec.explore.training.ClusterSettings` the options of
    :func:`add_cluster_options` give, or None without ``--cluster``."""
    if args.cluster is None:
        given = [f for f in ("--gpus-per-training", "--cpus-per-training") if f in _typed(args)]
        if given:
            raise UserError(f"{' and '.join(given)} need --cluster: without it trainings run here")
        return None
    from mnv3spec.explore.training import ClusterSettings

    address = args.cluster or os.environ.get("RAY_ADDRESS", "")
    if not address:
        raise UserError("--cluster without an ADDRESS takes $RAY_ADDRESS, which is not set")
    return ClusterSettings(address, args.gpus_per_training, args.cpus_per_training)


def _typed(args: argparse.Namespace) -> set[str]:
    values = {"--gpus-per-training": args.gpus_per_training}
    values["--cpus-per-training"] = args.cpus_per_training
    return {flag for flag, value in values.items() if value is not None}
