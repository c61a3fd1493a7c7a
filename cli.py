"""Command line of mnv3spec: parses arguments and calls the library. ``python cli.py -h``."""

from __future__ import annotations

import argparse
import json
import sys

from mnv3spec.errors import UserError


def _overrides(args: argparse.Namespace) -> dict:
    from mnv3spec.spec import parse_assignment

    return dict(parse_assignment(s) for s in args.set or [])


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a spec parameter (width=0.5, si=2) or a field (layers.12.se=true)",
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from mnv3spec import load_spec, plan

    failed = 0
    for path in args.specs:
        try:
            spec = load_spec(path, **_overrides(args))
            plan(spec)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
        else:
            print(f"ok: {path} ({spec.name}, {len(spec.rows)} rows)")
    return 2 if failed else 0


def cmd_show(args: argparse.Namespace) -> int:
    from mnv3spec import build, summarize
    from mnv3spec.analysis import format_table

    model = build(args.spec, **_overrides(args))
    summary = summarize(model)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else format_table(model, summary))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from mnv3spec.diff import compare_files, format_diff

    d = compare_files(args.spec_a, args.spec_b, args.set or [], args.set_a or [], args.set_b or [])
    print(json.dumps(d.to_dict(), indent=2) if args.json else format_diff(d))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnv3spec",
        description="MobileNets as data: validate, show, train, infer, export.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check spec files; exit 0 only if all are valid")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    _add_set(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "show", help="the compiled network as a table: shapes, params, multiply-adds"
    )
    p.add_argument("spec", metavar="SPEC")
    _add_set(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("diff", help="two specs side by side, row by row: changes, params, MAdds")
    p.add_argument("spec_a", metavar="SPEC_A")
    p.add_argument("spec_b", metavar="SPEC_B", help="may be SPEC_A again, with --set-b")
    _add_set(p)
    for side in ("a", "b"):
        p.add_argument(
            f"--set-{side}",
            action="append",
            metavar="KEY=VALUE",
            help=f"like --set, for SPEC_{side.upper()} only (after --set)",
        )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_diff)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
