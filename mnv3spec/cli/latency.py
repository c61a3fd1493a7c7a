"""The command that times networks: ``latency`` (measured, or a look-up table of rows for
prediction)."""

from __future__ import annotations

import argparse
import sys

from mnv3spec.cli.flags import add_set, number, overrides
from mnv3spec.cli.kinds import check_kind
from mnv3spec.errors import UserError
from mnv3spec.text import printable

PROGRAMS = {"executorch", "tflite", "onnx"}  # files a runtime wrote: timed as they are
MAX_LOADS = 32  # each load holds the program and its packed weights in memory
MAX_THREADS = 256


def cmd_latency(args: argparse.Namespace) -> int:
    from mnv3spec.services.device import cpu_threads

    with cpu_threads(args.threads):
        return _latency(args)


def _latency(args: argparse.Namespace) -> int:
    wanted = "specs (a YAML file or a shipped name), or .pte, .tflite or .onnx files"
    kinds = [check_kind(s, "latency", {"spec", *PROGRAMS}, wanted) for s in args.specs]
    if any(kind in PROGRAMS for kind in kinds):
        return _time_files(args, kinds)
    from mnv3spec.latency import measure

    common = dict(
        widths=tuple(args.widths),
        devices=args.devices,
        backends=tuple(args.backends),
        batch=args.batch,
        resolution=args.resolution,
        overrides=overrides(args),
        runs=args.runs,
        warmup=args.warmup,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    if args.table and args.loads > 1:
        raise UserError(
            "a latency table times rows in PyTorch, which runs the module in memory: there is no "
            "file to load again; leave --loads out",
            field="loads",
        )
    if args.table:
        from mnv3spec.latency.predict import make_table

        print(make_table(args.table, args.specs or None, **common))
        return 0
    measure.check_files(args.csv, args.plot, args.specs or None)
    references = list(dict.fromkeys(args.reference))  # each once, in the order given
    rows = measure.measure(args.specs or None, reference=references, loads=args.loads, **common)
    print(measure.header(args.batch, args.runs, args.warmup, references, args.loads))
    print(measure.format_latency(rows, references))
    for line in measure.timing_warnings([(r.median_ms, r.iqr_ms) for r in rows]):
        print(line, file=sys.stderr)
    if args.csv:
        measure.write_csv(rows, args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        measure.plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _time_files(args: argparse.Namespace, kinds: list[str | None]) -> int:
    """Each program file timed as it is, at its metadata's resolution, in its own runtime."""
    if not all(kind in PROGRAMS for kind in kinds):
        raise UserError("give either specs or program files (.pte, .tflite, .onnx), not both")
    from mnv3spec.latency.files import time_file

    timed = [time_file(p, batch=args.batch, runs=args.runs, warmup=args.warmup, loads=args.loads)
             for p in args.specs]  # fmt: skip
    print(f"{'file':<40} {'median ms':>10} {'IQR ms':>8}  runtime")
    for path, t in zip(args.specs, timed, strict=True):
        row = f"{t.timing.median_ms:>10.3f} {t.timing.iqr_ms:>8.3f}  {t.runtime}"
        print(f"{printable(path):<40} {row}")
    return 0


def add_latency(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency", help="time specs per width, device and backend")
    p.add_argument("specs", nargs="*", metavar="SPEC", help="default: small large (shipped)")
    add_set(p)
    add = p.add_argument
    add(
        "--widths",
        nargs="+",
        type=number(float, 0, above=True),
        default=[0.25, 0.5, 1.0],
        metavar="W",
        help="width multipliers, one row each (default 0.25 0.5 1.0); --set width is refused",
    )
    add("--devices", nargs="+", metavar="DEVICE", help="cpu, cuda (default: cpu, and cuda if any)")
    add("--batch", type=number(int, 1), default=1, help="images per call (default 1)")
    add("--resolution", type=number(int, 1), help="input size (default: the spec's)")
    add(
        "--backends",
        nargs="+",
        default=["eager"],
        metavar="BACKEND",
        help=BACKENDS_HELP,
    )
    add(
        "--reference",
        nargs="+",
        default=[],
        metavar="LIBRARY",
        help="torchvision and/or timm: also time that library's model of the same network "
        "(found by weights and outputs), print the ratio",
    )
    add("--runs", type=number(int, 1), default=50, help="timed calls per row (default 50)")
    add("--warmup", type=number(int, 1), default=10, help="untimed calls first (default 10)")
    add(
        "--loads",
        type=number(int, 1, high=MAX_LOADS),
        default=1,
        help=LOADS_HELP,
    )
    add(
        "--threads",
        type=number(int, 1, high=MAX_THREADS),
        metavar="N",
        help=THREADS_HELP,
    )
    add("--csv", metavar="FILE", help="write the raw rows as CSV (checked before timing)")
    add("--plot", metavar="FILE.png", help="latency vs multiply-adds as a PNG")
    add("--table", metavar="FILE.csv", help="time each distinct row instead, into a look-up table")
    p.set_defaults(func=cmd_latency)


BACKENDS_HELP = (
    "eager, channels_last, compiled (BN folded + torch.compile), onnxruntime, onnxruntime-int8 "
    "(quantized as quantize does), executorch and executorch-int8 (lowered to XNNPACK as export "
    "and quantize do), tflite and tflite-int8 (converted by litert-torch, run by LiteRT), "
    "cuda-graph (a captured CUDA graph)"
)
THREADS_HELP = (
    "CPU threads the networks and runtimes time with (default: torch's, which OMP_NUM_THREADS "
    "sets; adapt times with 1 unless told)"
)
LOADS_HELP = (
    "load each runtime's file this many times and run the loads in turn (default 1, at most "
    f"{MAX_LOADS}): a loaded program's speed is partly its load's luck, several %% on a phone "
    "runtime"
)
