"""Commands on specs themselves: ``validate``, ``show``, ``diff`` and ``import``."""

from __future__ import annotations

import argparse
import json
import sys

from mnv3spec.cli.flags import add_set, in_flags, overrides
from mnv3spec.errors import UserError


def cmd_validate(args: argparse.Namespace) -> int:
    from mnv3spec import load_spec, plan

    failed = 0
    for path in args.specs:
        try:
            spec = load_spec(path, **overrides(args))
            plan(spec)
        except UserError as e:
            print(f"error: {in_flags(e, args)}", file=sys.stderr)
            failed += 1
        else:
            print(f"ok: {path} ({spec.name}, {len(spec.rows)} rows)")
    return 2 if failed else 0


def cmd_show(args: argparse.Namespace) -> int:
    from mnv3spec import build, load_spec, summarize
    from mnv3spec.model.summary import format_table

    spec = load_spec(args.spec, **overrides(args))
    if args.resolved:  # the flat spec: a variant's bases and the --set overrides applied
        print(f"# {args.spec} resolved: every base and --set applied\n{spec.to_yaml()}", end="")
        return 0
    summary = summarize(build(spec, device="meta"))
    print(json.dumps(summary.to_dict(), indent=2) if args.json else format_table(summary))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from mnv3spec.model.diff import compare_files, format_diff

    d = compare_files(args.spec_a, args.spec_b, args.set or [], args.set_a or [], args.set_b or [])
    print(json.dumps(d.to_dict(), indent=2) if args.json else format_diff(d))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from mnv3spec.weights.from_timm import import_timm

    r = import_timm(args.source, args.out, force=args.force)
    print(
        f"wrote {r.path}: timm's {r.name}, {r.params:,} parameters, {r.macs / 1e6:.1f} M "
        f"multiply-adds, the same as timm's; outputs equal ({r.max_diff:.0e} at {r.size}×{r.size}, "
        "float64, timm's random weights loaded)"
    )
    return 0


def add_spec_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check spec files; exit 0 only if all are valid")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    add_set(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "show", help="the compiled network as a table: shapes, params, multiply-adds"
    )
    p.add_argument("spec", metavar="SPEC")
    add_set(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--resolved",
        action="store_true",
        help="print the flat spec as YAML instead (a variant's bases and --set applied)",
    )
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("diff", help="two specs side by side, row by row: changes, params, MAdds")
    p.add_argument("spec_a", metavar="SPEC_A")
    p.add_argument("spec_b", metavar="SPEC_B", help="may be SPEC_A again, with --set-b")
    add_set(p)
    for side in ("a", "b"):
        p.add_argument(
            f"--set-{side}",
            action="append",
            metavar="KEY=VALUE",
            help=f"like --set, for SPEC_{side.upper()} only (after --set)",
        )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_diff)


def add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="write the spec of a timm MobileNetV3, checked against it")
    p.add_argument("source", metavar="timm:NAME", help="e.g. timm:mobilenetv3_large_100")
    p.add_argument("--out", required=True, metavar="FILE.yaml", help="the spec file to write")
    p.add_argument("--force", action="store_true", help="overwrite a file import did not write")
    p.set_defaults(func=cmd_import)
