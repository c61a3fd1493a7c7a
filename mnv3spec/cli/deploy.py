"""Commands that take a network to files and runtimes and run what they wrote: ``eval``,
``infer``, ``export``, ``quantize``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mnv3spec.cli.flags import add_device, add_set, number, overrides
from mnv3spec.cli.kinds import check_kind, check_model_file
from mnv3spec.text import printable


def cmd_eval(args: argparse.Namespace) -> int:
    check_model_file(args.checkpoint, "eval")
    from mnv3spec.deploy.evaluate_file import evaluate_checkpoint

    r = evaluate_checkpoint(
        args.checkpoint,
        data=args.data,
        data_dir=args.data_dir,
        batch_size=args.batch,
        device=args.device,
    )
    print(
        f"{args.checkpoint}: top-1 {r.top1:.2f}%  top-{r.k} {r.topk:.2f}%  loss {r.loss:.4f}  "
        f"({r.images} validation images)"
    )
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1, top-k (k = min(5, classes)) and loss on val data")
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="a .safetensors file written by train, or an .onnx, .pte or .tflite from export or "
        "quantize",
    )
    p.add_argument("--data", help="as for train (default: the data it was trained on)")
    p.add_argument("--data-dir", default="./data", help="as for train (default ./data)")
    p.add_argument("--batch", type=number(int, 1), default=256, help="default 256")
    add_device(p)
    p.set_defaults(func=cmd_eval)


def cmd_infer(args: argparse.Namespace) -> int:
    for path in args.models:  # a folder is searched for checkpoints; a file must be a model
        check_model_file(path, "infer")
    from mnv3spec.deploy.infer import classify, format_tables

    report = classify(
        args.models, args.images, topk=args.topk, device=args.device, batch_size=args.batch
    )
    for file, reason in report.skipped:
        print(printable(f"skipped {file}: {reason}"), file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_tables(report))
    return 0  # classify raises when nothing was classified


def add_infer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="classify a folder of images with every checkpoint found")
    p.add_argument(
        "--models",
        nargs="+",
        default=["runs"],
        metavar="PATH",
        help="checkpoint files (or .onnx / .pte / .tflite files from export or quantize), or "
        "folders searched for best.safetensors (default runs)",
    )
    p.add_argument("--images", default="test_images", help="folder of images (default test_images)")
    p.add_argument("--topk", type=number(int, 1), default=5, help="classes per image (default 5)")
    p.add_argument(
        "--batch", type=number(int, 1), default=32, help="images per forward pass (default 32)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_device(p)
    p.set_defaults(func=cmd_infer)


def cmd_export(args: argparse.Namespace) -> int:
    check_kind(args.source, "export", {"spec", "safetensors"}, "a spec or a checkpoint")
    from mnv3spec.deploy.export import export

    r = export(
        args.source,
        args.format,
        args.out,
        resolution=args.resolution,
        dynamic_batch=args.dynamic_batch,
        overrides=overrides(args),
    )
    if r.random_init:
        print(
            printable(
                f"note: {args.source} is a spec, so the weights are random (export a checkpoint)"
            )
        )
    opset = f", opset {r.opset}" if r.opset else ""
    if r.delegation:
        print(r.delegation)
    print(
        f"wrote {r.path} ({r.format}{opset}, {r.size / 1e6:.2f} MB, BN folded); "
        f"max abs diff vs PyTorch {r.max_abs_diff:.2e} (largest logit {r.max_logit:.2e})"
    )
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="a checkpoint or spec to ONNX, TorchScript, ExecuTorch or LiteRT, verified"
    )
    p.add_argument("source", metavar="SPEC_OR_CHECKPOINT", help="a .safetensors or a spec .yaml")
    p.add_argument(
        "--format",
        required=True,
        choices=["onnx", "torchscript", "executorch", "tflite"],
        help="executorch: a .pte delegated to XNNPACK, with NAME.pte.json beside it; tflite: a "
        "LiteRT .tflite, with NAME.tflite.json beside it",
    )
    p.add_argument(
        "--out", help="default: beside a checkpoint, or NAME.onnx / .pt / .pte / .tflite here"
    )
    p.add_argument("--resolution", type=number(int, 1), help="input size (default: the spec's)")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size, not only 1")
    add_set(p)
    p.set_defaults(func=cmd_export)


def cmd_quantize(args: argparse.Namespace) -> int:
    check_kind(args.checkpoint, "quantize", {"safetensors"}, "a .safetensors checkpoint")
    from mnv3spec.deploy.quantize import quantize_checkpoint
    from mnv3spec.deploy.runtimes.record import AccuracyGateError

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
            to=args.to,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except AccuracyGateError as e:
        _print_quantized(e.result)
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
    if r.delegation:
        print(r.delegation)
    else:
        print(f"ops left in float: {floats}")
    if r.kept_float:
        print(f"rows kept in float: {', '.join(r.kept_float)}")


def add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="int8 .pte (or .tflite, .onnx) of a checkpoint, written only if top-1 drops at most "
        "--max-drop",
        description="Post-training static int8 quantization calibrated on training images: "
        "for ExecuTorch (PT2E, XNNPACK quantizer, per-channel; a .pte), LiteRT (PT2E, "
        "litert-torch's quantizer; a .tflite) or ONNX Runtime (QDQ, per-channel; an .onnx). "
        "Exit status 4: the int8 model lost more than --max-drop points of top-1, and nothing "
        "was written.",
    )
    add = p.add_argument
    add("checkpoint", metavar="CHECKPOINT", help="a .safetensors file written by train")
    add(
        "--to",
        choices=["executorch", "onnxruntime", "tflite"],
        help="the runtime (default: executorch where the mobile extra is installed, else "
        "onnxruntime; docs/deploy.md compares them)",
    )
    add(
        "--out",
        help="a .pte, .tflite or .onnx file (default: CHECKPOINT's name + .int8.pte/.tflite/.onnx)",
    )
    add("--calib", type=number(int, 1), default=256, help="calibration images (default 256)")
    add("--max-drop", type=number(float, -100), default=1.0, help="top-1 points (default 1.0)")
    add("--force", action="store_true", help="write the int8 model whatever it loses")
    add("--data", help="as for train (default: the data it was trained on)")
    add("--data-dir", default="./data", help="as for train (default ./data)")
    add("--sensitivity", action="store_true", help="also the top-1 with each row alone in int8")
    add(
        "--keep-float",
        action="append",
        metavar="ROWS",
        help="rows left in float: indices or names, comma-separated (e.g. 1,bneck3)",
    )
    p.set_defaults(func=cmd_quantize)
