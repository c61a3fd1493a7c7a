"""Commands on specs themselves: ``validate``, ``schema``, ``show``, ``diff`` and ``import``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mnv3spec.cli.flags import add_set, in_flags, overrides
from mnv3spec.errors import UserError
from mnv3spec.text import printable


def cmd_validate(args: argparse.Namespace) -> int:
    from mnv3spec.model.validate import validate

    _check_readable(args.specs, args.format)
    changes = overrides(args)
    results = []
    for source in args.specs:
        spec, errors = validate(source, **changes)
        results.append((source, spec, [in_flags(e, args) for e in errors]))
    if args.format == "json":
        print(json.dumps([_as_json(*r) for r in results], indent=2))
    for source, spec, errors in results:
        if args.format == "text" and spec is not None:
            name = spec.name if len(spec.name) <= 60 else spec.name[:57] + "..."
            ok = f"ok: {source} ({name}, {len(spec.rows)} rows)"
            print(printable(ok), flush=True)
        for e in errors:
            if args.format == "text":
                print(f"error: {printable(str(e))}", file=sys.stderr)
            elif args.format == "github":
                print(github_annotation(e, source))
    invalid = sum(1 for _, spec, _ in results if spec is None)
    if args.format != "json":
        print(_summary(len(results), invalid, sum(len(r[2]) for r in results)))
    return 1 if invalid else 0


def _check_readable(sources: list[str], format: str) -> None:
    """A path that names no readable spec file (missing, a folder, a pipe, too big, binary) is
    a mistake in the command, exit 2, not a spec that fails validation, exit 1. In CI's format
    each such path is an annotation too, so the log points at it."""
    from mnv3spec.spec.read import read_text, resolve_path

    refused = []
    for source in sources:
        try:
            read_text(resolve_path(source))
        except UserError as e:
            refused.append((e, source))
            if format == "github":
                print(github_annotation(e, source))
    if refused:
        raise refused[0][0]


def _summary(specs: int, invalid: int, errors: int) -> str:
    """``8 specs: 7 valid, 1 invalid (3 errors)``."""
    line = f"{specs} spec{'s' * (specs != 1)}: {specs - invalid} valid, {invalid} invalid"
    return f"{line} ({errors} error{'s' * (errors != 1)})" if errors else line


def _as_json(source: str, spec: object, errors: list[UserError]) -> dict:
    return {
        "path": source,
        "valid": spec is not None,
        "errors": [
            {
                "file": e.file or source,
                "line": e.line,
                "col": e.column,
                "field": e.field,
                "message": e.message,
            }
            for e in errors
        ],
    }


def github_annotation(error: UserError, source: str) -> str:
    """``::error file=PATH,line=L,col=C::MESSAGE``, escaped as GitHub Actions' workflow commands
    require (``%``, CR and LF everywhere; ``:`` and ``,`` too in the properties)."""

    def escape(text: str, prop: bool = False) -> str:
        text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        text = printable(text)  # any other control character: escaped, never acted on
        return text.replace(":", "%3A").replace(",", "%2C") if prop else text

    props = [f"file={escape(relative(error.file or source), prop=True)}"]
    if error.line is not None:
        props.append(f"line={error.line}")
    if error.column is not None:
        props.append(f"col={error.column}")
    message = f"{error.field}: {error.message}" if error.field else error.message
    return f"::error {','.join(props)}::{escape(message)}"


def relative(path: str) -> str:
    """``path`` relative to the working directory when it lies below it (GitHub places an
    annotation by a path from the checkout's root), else as given."""
    try:
        inside = os.path.relpath(os.path.abspath(path))
    except ValueError:  # another drive on Windows
        return path
    return path if inside.startswith(os.pardir) else inside


def cmd_schema(args: argparse.Namespace) -> int:
    from mnv3spec.spec.schema import dumps

    sys.stdout.write(dumps())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from mnv3spec import build, load_spec, summarize
    from mnv3spec.model.summary import format_table

    spec = load_spec(args.spec, **overrides(args))
    if args.resolved:  # the flat spec: a variant's bases and the --set overrides applied
        header = printable(f"# {args.spec} resolved: every base and --set applied")
        print(f"{header}\n{spec.to_yaml()}", end="")
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
    p = sub.add_parser(
        "validate",
        help="check spec files, reporting every error; exit 0 all valid, 1 some invalid, "
        "2 a wrong command",
    )
    p.add_argument("specs", nargs="+", metavar="SPEC")
    add_set(p)
    p.add_argument(
        "--format",
        choices=["text", "json", "github"],
        default="text",
        help="text (default), json (one object per file) or github (GitHub Actions annotations)",
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("schema", help="print the JSON Schema of spec files (schema.json)")
    p.set_defaults(func=cmd_schema)

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
