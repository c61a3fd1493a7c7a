"""Issue 20 in one run: our compiled Small and Large (si=2, 224 px, batch 1) on the runtimes a
phone app would use, timed side by side in the same alternating rounds on the CPU:
PyTorch eager, ONNX Runtime fp32 / int8, ExecuTorch (XNNPACK) fp32 / int8, LiteRT fp32 / int8
(where the litert extra is installed), and torchvision's own MobileNetV3 of the same network
(same weights) through the same ExecuTorch path as the reference. With ``--checkpoint``, also the
top-1 of that trained checkpoint in float and in int8 (ExecuTorch, and LiteRT where installed),
each int8 model run in its own runtime on the checkpoint's validation split.

    OMP_NUM_THREADS=2 python bench/mobile.py [--specs small large] [--threads 2] [--runs 50]
        [--checkpoint RUN/best.safetensors --data fashion-mnist]

Prints one table of medians (ms) and the ratios the issue's targets are stated in. Not a test: a
shared machine moves the milliseconds, so read the ratios (every runner alternates in the same
rounds). int8 programs are calibrated on random inputs, which does not change their speed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnv3spec import build, load_spec  # noqa: E402
from mnv3spec.deploy import quantize  # noqa: E402
from mnv3spec.deploy.runtimes import executorch, runtime_for  # noqa: E402
from mnv3spec.latency.backends import prepare  # noqa: E402
from mnv3spec.latency.measure import percentiles, time_rounds  # noqa: E402
from mnv3spec.weights.torchvision import give_weights, torchvision_twin  # noqa: E402

BACKENDS = ("eager", "onnxruntime", "onnxruntime-int8", "executorch", "executorch-int8")
if importlib.util.find_spec("litert_torch"):
    BACKENDS += ("tflite", "tflite-int8")
REFERENCE = "torchvision executorch"


def runners(spec: str, resolution: int) -> dict:
    """Every runner of one spec, by column name."""
    model = build(load_spec(ROOT / "specs" / f"{spec}.yaml", si=2, resolution=resolution)).eval()
    x = torch.randn(1, model.spec.in_channels, resolution, resolution)
    out = {}
    for backend in BACKENDS:
        print(f"preparing {spec} {backend}", file=sys.stderr, flush=True)
        out[backend] = prepare(model, backend, x)[0]
    twin = torchvision_twin(model)
    if twin is not None:
        print(f"preparing {spec} {REFERENCE}", file=sys.stderr, flush=True)
        give_weights(model, twin)
        program, _ = executorch.lower(twin.eval(), x)
        run = executorch.runner(program, threads=torch.get_num_threads())
        out[REFERENCE] = lambda: run(x)
    return out


def ratios(spec: str, ms: dict) -> str:
    """The issue's targets, as ratios of one spec's medians."""
    parts = [
        f"ExecuTorch int8 {ms['executorch'] / ms['executorch-int8']:.2f}x its fp32",
        f"ONNX Runtime int8 {ms['onnxruntime'] / ms['onnxruntime-int8']:.2f}x its fp32",
        f"ExecuTorch fp32 / ONNX Runtime fp32 {ms['executorch'] / ms['onnxruntime']:.2f}",
    ]
    if "tflite" in ms:
        parts.append(f"LiteRT int8 {ms['tflite'] / ms['tflite-int8']:.2f}x its fp32")
        parts.append(f"LiteRT fp32 / ONNX Runtime fp32 {ms['tflite'] / ms['onnxruntime']:.2f}")
    if REFERENCE in ms:
        parts.append(f"our .pte / torchvision's {ms['executorch'] / ms[REFERENCE]:.2f}")
    return f"{spec}: " + "; ".join(parts)


def accuracy(checkpoint: str, data: str | None, calib: int) -> None:
    """Float and int8 top-1 of a trained checkpoint, each int8 model run in its own runtime."""
    runtimes = ["executorch"] + (["tflite"] if "tflite" in BACKENDS else [])
    with tempfile.TemporaryDirectory() as tmp:
        for to in runtimes:
            r = quantize.quantize_checkpoint(
                checkpoint,
                Path(tmp) / f"m{runtime_for(to, 'choice').suffix}",
                calib=calib,
                force=True,
                data=data,
                to=to,
            )
            print(
                f"{checkpoint} {to} int8: top-1 float {r.float_top1:.2f}%, int8 "
                f"{r.int8_top1:.2f}%, drop {r.drop:.2f} points ({r.images} validation images, "
                f"{r.calib} calibration images)",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", nargs="+", default=["small", "large"])
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--checkpoint", help="a trained .safetensors: also its int8 top-1 drop")
    parser.add_argument("--data", help="the checkpoint's data (default: what it was trained on)")
    parser.add_argument("--calib", type=int, default=256, help="calibration images")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint:  # first: minutes, where the table takes most of an hour on 2 cores
        accuracy(args.checkpoint, args.data, args.calib)
    columns = [*BACKENDS, REFERENCE]
    print(f"{args.resolution} px, batch 1, {args.threads} threads, median ms of {args.runs} runs")
    print("| spec | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    lines = []
    for spec in args.specs:
        times = time_rounds(runners(spec, args.resolution), args.runs, args.warmup, "cpu")
        ms = {name: percentiles(t)[0] for name, t in times.items()}
        cells = [f"{ms[c]:.2f}" if c in ms else "–" for c in columns]
        print(f"| {spec} | " + " | ".join(cells) + " |", flush=True)
        lines.append(ratios(spec, ms))
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
