"""Issue 20 in one run: our compiled Small and Large (si=2, 224 px, batch 1) on the runtimes a
phone app would use, timed side by side in the same alternating rounds on the CPU:
PyTorch eager, ONNX Runtime fp32 / int8, ExecuTorch (XNNPACK) fp32 / int8, and torchvision's own
MobileNetV3 of the same network (same weights) through the same ExecuTorch path as the reference.

    OMP_NUM_THREADS=2 python bench/mobile.py [--specs small large] [--threads 2] [--runs 50]

Prints one table of medians (ms) and the ratios the issue's targets are stated in. Not a test: a
shared machine moves the milliseconds, so read the ratios (every runner alternates in the same
rounds). int8 programs are calibrated on random inputs, which does not change their speed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnv3spec import build, load_spec  # noqa: E402
from mnv3spec.deploy import executorch  # noqa: E402
from mnv3spec.deploy.backends import prepare  # noqa: E402
from mnv3spec.deploy.latency import percentiles, time_rounds  # noqa: E402
from mnv3spec.weights.torchvision import give_weights, torchvision_twin  # noqa: E402

BACKENDS = ("eager", "onnxruntime", "onnxruntime-int8", "executorch", "executorch-int8")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", nargs="+", default=["small", "large"])
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    columns = [*BACKENDS, REFERENCE]
    print(f"{args.resolution} px, batch 1, {args.threads} threads, median ms of {args.runs} runs")
    print("| spec | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    ratios = []
    for spec in args.specs:
        times = time_rounds(runners(spec, args.resolution), args.runs, args.warmup, "cpu")
        ms = {name: percentiles(t)[0] for name, t in times.items()}
        cells = [f"{ms[c]:.2f}" if c in ms else "–" for c in columns]
        print(f"| {spec} | " + " | ".join(cells) + " |", flush=True)
        ratios.append(
            f"{spec}: ExecuTorch int8 {ms['executorch'] / ms['executorch-int8']:.2f}× its fp32; "
            f"ONNX Runtime int8 {ms['onnxruntime'] / ms['onnxruntime-int8']:.2f}× its fp32; "
            f"ExecuTorch fp32 ÷ ONNX Runtime fp32 {ms['executorch'] / ms['onnxruntime']:.2f}"
            + (
                f"; our .pte ÷ torchvision's {ms['executorch'] / ms[REFERENCE]:.2f}"
                if REFERENCE in ms
                else ""
            )
        )
    print("\n".join(ratios))


if __name__ == "__main__":
    main()
