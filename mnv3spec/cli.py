"""Command line of mnv3spec: parses arguments and calls the library. ``python cli.py -h``."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mnv3spec.errors import UserError

if TYPE_CHECKING:
    from mnv3spec.run.config import TrainConfig


def _overrides(args: argparse.Namespace) -> dict:
    from mnv3spec.spec.load import parse_assignment

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
    from mnv3spec import build, load_spec, summarize
    from mnv3spec.model.summary import format_table

    model = build(load_spec(args.spec, **_overrides(args)))
    summary = summarize(model)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else format_table(summary))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from mnv3spec.run.diff import compare_files, format_diff

    d = compare_files(args.spec_a, args.spec_b, args.set or [], args.set_a or [], args.set_b or [])
    print(json.dumps(d.to_dict(), indent=2) if args.json else format_diff(d))
    return 0


def _add_device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda", "mps"],
        default=default,
        help="auto (default): cuda, else mps, else cpu",
    )


def _number(kind: type, low: float, *, above: bool = False):
    """An argparse type: ``kind`` at least ``low`` (strictly above with ``above``)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {what}: {text}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number: {text}")
        if value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {low}: {text}")
        return value

    return parse


def _command_line() -> str:
    """How this process was started, for the run folder's command.txt."""
    head = ["python"] if sys.argv[0].endswith(".py") else []
    size = os.environ.get("WORLD_SIZE")
    tail = f"  # under torchrun, {size} processes" if size else ""
    return shlex.join([*head, *sys.argv]) + tail


# TrainConfig's parameters and the flags that set them (the dest of each flag is its field).
_TRAIN_FLAGS = {
    "data": "--data",
    "data_dir": "--data-dir",
    "epochs": "--epochs",
    "batch": "--batch",
    "device": "--device",
    "recipe": "--recipe",
    "lr": "--lr",
    "momentum": "--momentum",
    "weight_decay": "--weight-decay",
    "nesterov": "--nesterov",
    "schedule": "--schedule",
    "warmup": "--warmup",
    "label_smoothing": "--label-smoothing",
    "compile": "--compile",
    "out": "--out",
    "name": "--name",
    "seed": "--seed",
    "init": "--init",
    "graph": "--no-graph",
}
_RESUME_MAY_CHANGE = ("device", "compile", "graph")  # how it runs, not what it computes


@contextlib.contextmanager
def _flags_in_errors(flags: dict[str, str], args: argparse.Namespace) -> Iterator[None]:
    """A library error names a parameter (``field="batch"``); the user typed a flag: name that,
    with the value typed unless the error already shows it (as its file, or first in its
    message)."""
    try:
        yield
    except UserError as e:
        if e.field in flags:
            value = getattr(args, e.field, None)
            shown = e.file is not None or e.message.startswith(str(value))
            typed = value not in (None, True, False) and not shown
            e.field = f"{flags[e.field]} {value}" if typed else flags[e.field]
        raise


def _train_config(args: argparse.Namespace, overrides: dict) -> TrainConfig:
    """The TrainConfig the flags describe: each flag given sets its field, the rest keep
    TrainConfig's defaults."""
    from mnv3spec.run.config import TrainConfig

    given = {field: getattr(args, field) for field in _TRAIN_FLAGS if hasattr(args, field)}
    return TrainConfig(spec=args.spec, overrides=overrides, **given)


def _resume(args: argparse.Namespace) -> None:
    from mnv3spec.run.train import resume

    if args.spec or args.set or args.width is not None:
        raise UserError("--resume takes no SPEC, --set or --width: a run keeps its spec")
    fixed = [f for f in _TRAIN_FLAGS if hasattr(args, f) and f not in _RESUME_MAY_CHANGE]
    if fixed:
        raise UserError(
            f"--resume continues {args.resume} with the settings stored in its config.json; "
            f"drop {', '.join(_TRAIN_FLAGS[f] for f in fixed)} (only --device, --compile and "
            "--no-graph may change)"
        )
    changes = {f: getattr(args, f) for f in _RESUME_MAY_CHANGE if hasattr(args, f)}
    resume(args.resume, _command_line(), **changes)


def cmd_train(args: argparse.Namespace) -> int:
    """A new run of SPEC (loaded here, once), or with --resume the continuation of a run."""
    from mnv3spec.run.train import train
    from mnv3spec.spec.load import load_spec

    with _flags_in_errors({**_TRAIN_FLAGS, "overrides": "--set", "resume": "--resume"}, args):
        if args.resume:
            _resume(args)
            return 0
        if not args.spec:
            raise UserError(
                "give the SPEC to train (e.g. specs/small.yaml), or --resume RUN_FOLDER"
            )
        overrides = _overrides(args)
        if args.width is not None and overrides.setdefault("width", args.width) != args.width:
            raise UserError(f"--width {args.width} and --set width={overrides['width']} disagree")
        cfg = _train_config(args, overrides)
        train(cfg, _command_line(), spec=load_spec(cfg.spec, **overrides))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from mnv3spec.data.datasets import describe_sources

    p = sub.add_parser(
        "train",
        help="train a spec (CIFAR-100 by default) into runs/NAME",
        description="Train a spec. Defaults are the seed repo's recipe: SGD lr 0.1 momentum 0.9, "
        "x0.1 at epochs 15/20/30, batch 128, 20 epochs, crop+flip augmentation.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("spec", nargs="?", default=None, metavar="SPEC", help="e.g. specs/small.yaml")
    _add_set(p)
    positive, non_negative = _number(float, 0, above=True), _number(float, 0)
    add = p.add_argument
    add("--width", type=positive, default=None, help="width multiplier (= --set width=W)")
    add("--epochs", type=_number(int, 1), help="epochs (default 20)")
    add("--batch", type=_number(int, 1), help="global batch size (default 128)")
    add("--data", help=describe_sources())
    add("--data-dir", help="where CIFAR archives are looked for / downloaded (default ./data)")
    _add_device(p, default=argparse.SUPPRESS)
    add("--recipe", help="optimiser and schedule preset (default seed); the flags below change it")
    add("--lr", type=positive, help="base learning rate (seed: 0.1)")
    add("--momentum", type=non_negative, help="SGD momentum (seed: 0.9)")
    add("--weight-decay", type=non_negative, help="on weights, never on BN or biases (seed: 0)")
    add("--nesterov", action="store_true", help="Nesterov momentum")
    add("--schedule", choices=["multistep", "cosine"], help="seed: multistep 15/20/30 x0.1")
    add("--warmup", type=non_negative, help="epochs of linear learning-rate warm-up (seed: 0)")
    add("--label-smoothing", type=non_negative, help="cross-entropy label smoothing (seed: 0)")
    add("--compile", action="store_true", help="torch.compile the model")
    add(
        "--no-graph",
        dest="graph",
        action="store_false",
        help="on CUDA, run each step eagerly instead of replaying it as a captured CUDA graph",
    )
    add("--out", help="parent folder of run folders (default runs)")
    add("--name", help="run folder name (default SPEC-wWIDTH-DATA)")
    add("--seed", type=_number(int, 0), help="seed; on CPU also deterministic algorithms")
    add(
        "--init",
        help="start from weights: 'torchvision' or 'timm:NAME[.TAG]' (ImageNet), or a state_dict",
    )
    add("--resume", default=None, metavar="RUN_FOLDER", help="continue a run after its last epoch")
    p.set_defaults(func=cmd_train, set=None)


def cmd_eval(args: argparse.Namespace) -> int:
    from mnv3spec.run.evaluate import evaluate_checkpoint

    r = evaluate_checkpoint(
        args.checkpoint,
        data=args.data,
        data_dir=args.data_dir,
        batch_size=args.batch,
        device=args.device,
    )
    print(
        f"{args.checkpoint}: top-1 {r.top1:.2f}%  top-{r.k} {r.top5:.2f}%  loss {r.loss:.4f}  "
        f"({r.images} validation images)"
    )
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1, top-k (k = min(5, classes)) and loss on val data")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .safetensors file written by train")
    p.add_argument("--data", help="as for train (default: the data it was trained on)")
    p.add_argument("--data-dir", default="./data", help="as for train (default ./data)")
    p.add_argument("--batch", type=_number(int, 1), default=256, help="default 256")
    _add_device(p)
    p.set_defaults(func=cmd_eval)


def cmd_infer(args: argparse.Namespace) -> int:
    from mnv3spec.run.infer import classify, format_tables

    report = classify(args.models, args.images, topk=args.topk, device=args.device)
    for file, reason in report.skipped:
        print(f"skipped {file}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_tables(report))
    return 0  # classify raises when nothing was classified


def _add_infer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="classify a folder of images with every checkpoint found")
    p.add_argument(
        "--models",
        nargs="+",
        default=["runs"],
        metavar="PATH",
        help="checkpoint files, or folders searched for best.safetensors (default runs)",
    )
    p.add_argument("--images", default="test_images", help="folder of images (default test_images)")
    p.add_argument("--topk", type=_number(int, 1), default=5, help="classes per image (default 5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_device(p)
    p.set_defaults(func=cmd_infer)


def cmd_latency(args: argparse.Namespace) -> int:
    from mnv3spec.run import latency

    if args.table:
        from mnv3spec.run.predict import make_table

        print(
            make_table(
                args.table,
                args.specs or None,
                widths=tuple(args.widths),
                devices=args.devices,
                backends=tuple(args.backends),
                batch=args.batch,
                resolution=args.resolution,
                overrides=_overrides(args),
                runs=args.runs,
                warmup=args.warmup,
                progress=lambda line: print(f"timing {line}", file=sys.stderr),
            )
        )
        return 0
    latency.check_files(args.csv, args.plot, args.specs or None)
    rows = latency.measure(
        args.specs or None,
        widths=tuple(args.widths),
        devices=args.devices,
        backends=tuple(args.backends),
        batch=args.batch,
        resolution=args.resolution,
        overrides=_overrides(args),
        reference=args.reference,
        runs=args.runs,
        warmup=args.warmup,
        progress=lambda line: print(f"timing {line}", file=sys.stderr, flush=True),
    )
    print(latency.header(args.batch, args.runs, args.warmup))
    print(latency.format_latency(rows))
    if args.csv:
        latency.write_csv(rows, args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        latency.plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _add_latency(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency", help="time specs per width, device and backend")
    p.add_argument("specs", nargs="*", metavar="SPEC", help="default: small large (shipped)")
    _add_set(p)
    add = p.add_argument
    add(
        "--widths",
        nargs="+",
        type=_number(float, 0, above=True),
        default=[0.25, 0.5, 1.0],
        metavar="W",
        help="width multipliers, one row each (default 0.25 0.5 1.0); --set width is refused",
    )
    add("--devices", nargs="+", metavar="DEVICE", help="cpu, cuda (default: cpu, and cuda if any)")
    add("--batch", type=_number(int, 1), default=1, help="images per call (default 1)")
    add("--resolution", type=_number(int, 1), help="input size (default: the spec's)")
    add(
        "--backends",
        nargs="+",
        default=["eager"],
        metavar="BACKEND",
        help="eager, channels_last, compiled (BN folded + torch.compile), onnxruntime, "
        "onnxruntime-int8 (quantized as quantize does), cuda-graph (a captured CUDA graph)",
    )
    add("--reference", metavar="torchvision", help="also time torchvision's twin, print the ratio")
    add("--runs", type=_number(int, 1), default=50, help="timed calls per row (default 50)")
    add("--warmup", type=_number(int, 1), default=10, help="untimed calls first (default 10)")
    add("--csv", metavar="FILE", help="write the raw rows as CSV (checked before timing)")
    add("--plot", metavar="FILE.png", help="latency vs multiply-adds as a PNG")
    add("--table", metavar="FILE.csv", help="time each distinct row instead, into a look-up table")
    p.set_defaults(func=cmd_latency)


def cmd_sweep(args: argparse.Namespace) -> int:
    import time

    from mnv3spec.run import sweep

    started = time.perf_counter()
    flags = [
        f
        for dest, option, takes_value in args.train_options
        if dest in args
        for f in ([option, str(getattr(args, dest))] if takes_value else [option])
    ]
    result = sweep.sweep(
        args.specs,
        args.grid or [],
        fixed=_overrides(args),
        out=args.out,
        name=args.name,
        train=not args.no_train,
        train_flags=flags,
        print_commands=args.print_commands,
        devices=args.devices,
        backends=tuple(args.backends),
        batch=args.latency_batch,
        runs=args.latency_runs,
        warmup=args.latency_warmup,
        table=args.predict,
        say=lambda line: print(line, flush=True),
    )
    if result is not None:
        print(sweep.finish(result, started))
    return 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="every combination of --grid values: params, MAdds, latency, training, Pareto plot",
        description="Each variant is compiled and counted, timed as `latency` times it, and "
        "(unless --no-train) trained by an ordinary `train` command into OUT/NAME/runs/VARIANT; "
        "the train flags below are passed to it. Repeat the command to continue a sweep.",
    )
    p.add_argument("specs", nargs="+", metavar="SPEC")
    add = p.add_argument
    add("--grid", action="append", metavar="KEY=V1,V2,...", help="a --set key and its values")
    _add_set(p)
    add("--out", default="sweeps", help="parent folder of the sweep folder (default sweeps)")
    add("--name", help="sweep folder name (default: the spec names)")
    add("--no-train", action="store_true", help="parameters, MAdds and latency only")
    add("--print-commands", action="store_true", help="print the train commands, run nothing")
    add("--devices", nargs="+", metavar="DEVICE", help="latency devices, as for latency")
    add("--backends", nargs="+", default=["eager"], metavar="BACKEND", help="as for latency")
    add("--latency-batch", type=_number(int, 1), default=1, help="latency --batch (default 1)")
    add("--latency-runs", type=_number(int, 1), default=50, help="latency --runs (default 50)")
    add("--latency-warmup", type=_number(int, 1), default=10, help="latency --warmup (10)")
    add("--predict", metavar="TABLE.csv", help="latency from a look-up table (latency --table)")
    train = sub.choices["train"]  # its flags, passed through to every variant's train command
    options = []
    for action in train._actions:
        names = set(action.option_strings)
        if names and not names & {"-h", "--set", "--width", "--out", "--name", "--resume"}:
            p._add_action(action)
            options.append((action.dest, action.option_strings[-1], action.nargs != 0))
    p.set_defaults(func=cmd_sweep, train_options=options)


def cmd_export(args: argparse.Namespace) -> int:
    from mnv3spec.run.export import export

    r = export(
        args.source,
        args.format,
        args.out,
        resolution=args.resolution,
        dynamic_batch=args.dynamic_batch,
        overrides=_overrides(args),
    )
    if r.random_init:
        print(f"note: {args.source} is a spec, so the weights are random (export a checkpoint)")
    opset = f", opset {r.opset}" if r.opset else ""
    print(
        f"wrote {r.path} ({r.format}{opset}, {r.size / 1e6:.2f} MB, BN folded); "
        f"max abs diff vs PyTorch {r.max_abs_diff:.2e} (largest logit {r.max_logit:.2e})"
    )
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a checkpoint or spec to ONNX or TorchScript, verified")
    p.add_argument("source", metavar="SPEC_OR_CHECKPOINT", help="a .safetensors or a spec .yaml")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", help="default: beside a checkpoint, or NAME.onnx / NAME.pt here")
    p.add_argument("--resolution", type=_number(int, 1), help="input size (default: the spec's)")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size, not only 1")
    _add_set(p)
    p.set_defaults(func=cmd_export)


def cmd_quantize(args: argparse.Namespace) -> int:
    from mnv3spec.run.quantize import AccuracyGateError, quantize_checkpoint

    try:
        r = quantize_checkpoint(
            args.checkpoint,
            args.out,
            calib=args.calib,
            max_drop=args.max_drop,
            force=args.force,
            data=args.data,
            data_dir=args.data_dir,
            keep_float=[row for rows in args.keep_float or [] for row in rows.split(",")],
            sensitivity=args.sensitivity,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except AccuracyGateError as e:
        _print_quantized(e.result)
        raise
    except UserError as e:  # the library names parameters; the user typed flags
        if e.field in ("calib", "out", "keep_float"):
            e.field = "--" + e.field.replace("_", "-")
        raise
    _print_quantized(r)
    print(f"wrote {r.path} ({os.path.getsize(r.path) / 1e6:.2f} MB)")
    return 0


def _print_quantized(r) -> None:
    for row, top1 in r.sensitivity:
        print(f"row {row} alone in int8: top-1 {top1:.2f}% (costs {r.float_top1 - top1:.2f})")
    print(
        f"top-1 float {r.float_top1:.2f}%  int8 {r.int8_top1:.2f}%  drop {r.drop:.2f} points  "
        f"({r.images} validation images, {r.calib} calibration images)"
    )
    floats = ", ".join(f"{op}×{n}" for op, n in r.float_ops.most_common()) or "none"
    print(f"ops left in float: {floats}")
    if r.kept_float:
        print(f"rows kept in float: {', '.join(r.kept_float)}")


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="int8 ONNX of a checkpoint, written only if top-1 drops at most --max-drop",
        description="Post-training static int8 quantization (ONNX Runtime, QDQ, per-channel "
        "weights) calibrated on training images. Exit status 4: the int8 model lost more "
        "than --max-drop points of top-1, and nothing was written.",
    )
    add = p.add_argument
    add("checkpoint", metavar="CHECKPOINT", help="a .safetensors file written by train")
    add("--out", help="an .onnx file (default: CHECKPOINT's name + .int8.onnx, beside it)")
    add("--calib", type=_number(int, 1), default=256, help="calibration images (default 256)")
    add("--max-drop", type=_number(float, -100), default=1.0, help="top-1 points (default 1.0)")
    add("--force", action="store_true", help="write the int8 model whatever it loses")
    add("--data", help="as for train (default: the data it was trained on)")
    add("--data-dir", default="./data", help="as for train (default ./data)")
    add("--sensitivity", action="store_true", help="also the top-1 with each row alone in int8")
    add(
        "--keep-float",
        action="append",
        metavar="ROWS",
        help="rows left in float: indices or names, comma-separated (e.g. 1,r03_bneck)",
    )
    p.set_defaults(func=cmd_quantize)


def cmd_import(args: argparse.Namespace) -> int:
    from mnv3spec.spec.from_timm import import_timm

    r = import_timm(args.source, args.out, force=args.force)
    print(
        f"wrote {r.path}: timm's {r.name}, {r.params:,} parameters, {r.macs / 1e6:.1f} M "
        f"multiply-adds, the same as timm's; outputs equal ({r.max_diff:.0e} at {r.size}×{r.size}, "
        "float64, timm's random weights loaded)"
    )
    return 0


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="write the spec of a timm MobileNetV3, checked against it")
    p.add_argument("source", metavar="timm:NAME", help="e.g. timm:mobilenetv3_large_100")
    p.add_argument("--out", required=True, metavar="FILE.yaml", help="the spec file to write")
    p.add_argument("--force", action="store_true", help="overwrite a file import did not write")
    p.set_defaults(func=cmd_import)


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

    _add_train(sub)
    _add_eval(sub)
    _add_infer(sub)
    _add_latency(sub)
    _add_export(sub)
    _add_sweep(sub)
    _add_quantize(sub)
    _add_import(sub)
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
    except BrokenPipeError:  # e.g. `mnv3spec show small | head`: the reader has gone, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
