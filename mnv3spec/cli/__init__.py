"""Command line of mnv3spec: parses arguments and calls the library. ``python cli.py -h``.

One module per pipeline (:mod:`.specs`, :mod:`.training`, :mod:`.deploy`, :mod:`.latency`,
:mod:`.explore`); :mod:`.flags` holds what they share, including the mapping that puts the user's
flags into library errors.
"""

from __future__ import annotations

import argparse
import os
import sys

from mnv3spec import __version__
from mnv3spec.cli.adapt import add_adapt
from mnv3spec.cli.deploy import add_eval, add_export, add_infer, add_quantize
from mnv3spec.cli.explore import add_sweep
from mnv3spec.cli.flags import (
    allowed_bases,
    check_arguments,
    flag_names,
    flags_in_errors,
    unrecognized,
)
from mnv3spec.cli.latency import add_latency
from mnv3spec.cli.specs import add_import, add_spec_commands
from mnv3spec.cli.training import add_train
from mnv3spec.errors import UserError
from mnv3spec.text import printable

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """Every parser and subparser takes flags whole: ``--epoch 1`` is an error, never a silent
    ``--epochs 1`` (argparse's prefix matching); and keeps the options added to it, in
    ``options`` (argparse has no public list of them), and its commands, in ``commands``."""

    def __init__(self, *args, **kwargs) -> None:
        self.options: list[argparse.Action] = []
        self.commands: dict[str, argparse.ArgumentParser] = {}
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.options.append(action)
        return action

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument

        def recorded(*args, **kwargs) -> argparse.Action:
            action = add(*args, **kwargs)
            self.options.append(action)
            return action

        group.add_argument = recorded
        return group

    def error(self, message: str):
        """argparse's usage error, its message on one line: it quotes what the user typed."""
        super().error(printable(message))


def build_parser() -> _Parser:
    parser = _Parser(
        prog="mnv3spec",
        description="MobileNets as data: validate, show, train, infer, export.",
    )
    parser.add_argument("--version", action="version", version=f"mnv3spec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_spec_commands, add_train, add_eval, add_infer, add_latency, add_export):
        add(sub)
    for add in (add_sweep, add_adapt, add_quantize, add_import):
        add(sub)
    parser.commands = sub.choices
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    command = parser.commands[args.command]
    if unknown:
        command.error(unrecognized(unknown, command))
    args.flags = flag_names(command)  # parameter → flag typed
    try:
        check_arguments(args)
        with flags_in_errors(args), allowed_bases(args):
            return args.func(args)
    except UserError as e:
        print(f"error: {printable(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `mnv3spec show small | head`: the reader has gone, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
