"""What every runtime's int8 flow shares (``quantize``): the job it starts from, the result it
reports, the accuracy gate, and the PT2E flow of the phone runtimes, written once for both.

A phone runtime's flow (:func:`pt2e`): the network prepared for XNNPACK, quantized by PT2E with
the runtime's quantizer and calibrated on training images, lowered to the runtime's program, the
program run by the runtime itself against its fake-quant graph (the same integer arithmetic up to
rounding, so a larger difference is a broken lowering), then float and int8 top-1 measured on the
validation split, gated, and written with the metadata file beside it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import ExportError, UserError
from ...model.builder import SpecNet
from ...services.evaluate import evaluate
from .record import Int8, Runtime
from .sidecar import ProgramModel, metadata

CPU = torch.device("cpu")


@dataclass
class QuantizeResult:
    path: Path | None  # None: nothing written (a sensitivity-only run)
    float_top1: float
    int8_top1: float
    images: int  # validation images
    calib: int  # calibration images
    float_ops: Counter  # op type → count, float compute left in the int8 graph (ExecuTorch:
    # ops outside the XNNPACK delegate)
    kept_float: list[str] = field(default_factory=list)  # rows left in float
    runtime: str = "executorch"
    delegation: str = ""  # ExecuTorch: which rows XNNPACK runs
    sensitivity: list[tuple[str, float]] = field(default_factory=list)  # (row, top-1 alone int8)

    @property
    def drop(self) -> float:
        return self.float_top1 - self.int8_top1


class AccuracyGateError(UserError):
    """The int8 model loses more top-1 than allowed; nothing was written. Exit status 4 tells it
    apart from bad input (2) and divergence (3): the inputs were fine, the result was not."""

    exit_code = 4

    def __init__(self, message: str, result: QuantizeResult, **where: Any) -> None:
        super().__init__(message, **where)
        self.result = result  # the measurements, for the caller to show


@dataclass(frozen=True)
class Job:
    """What every runtime's quantization starts from."""

    runtime: Runtime
    checkpoint: Path
    out: Path
    model: SpecNet
    meta: dict
    val: Iterable[tuple[torch.Tensor, torch.Tensor]]  # validation batches, uint8
    calib_images: torch.Tensor  # normalised training images
    keep: list[str]  # rows left in float
    max_drop: float
    force: bool

    def top1(self, run: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, int]:
        """``(top-1 percent, images)`` of a network or a function of a batch on the CPU."""
        r = evaluate(run, self.val, mean=self.meta["mean"], std=self.meta["std"], device=CPU)
        return r.top1, r.images

    def gate(self, result: QuantizeResult) -> None:
        if result.drop > self.max_drop and not self.force:
            raise AccuracyGateError(
                f"int8 top-1 {result.int8_top1:.2f}% is {result.drop:.2f} points below float "
                f"{result.float_top1:.2f}%, more than the allowed {self.max_drop:g}; nothing was "
                "written (raise the limit, keep sensitive rows in float, or force)",
                result,
                file=str(self.checkpoint),
            )

    def metadata(self, result: QuantizeResult) -> dict:
        """The checkpoint's metadata, its ``extra`` plus where the int8 model came from and its
        top-1."""
        extra = {
            **self.meta["extra"],
            "quantized_from": self.checkpoint.name,
            "float_top1": round(result.float_top1, 4),
            "int8_top1": round(result.int8_top1, 4),
            "calibration_images": result.calib,
            "kept_float": result.kept_float,
        }
        return {**self.meta, "extra": extra}


Progress = Callable[[str], None]


def pt2e(steps: Int8) -> Callable[[Job, bool, Progress], QuantizeResult]:
    """A phone runtime's int8 flow with its PT2E ``steps`` (module docstring)."""

    def flow(job: Job, sensitivity: bool, progress: Progress) -> QuantizeResult:
        rt, model, meta, calib_images = job.runtime, job.model, job.meta, job.calib_images
        fast = rt.prepare(model)
        size = meta["resolution"]
        example = torch.zeros(1, model.spec.in_channels, size, size)
        progress(f"calibrating on {len(calib_images)} training images (PT2E)")
        graph = steps.quantize(fast, example, calib_images, exclude_rows=job.keep)
        progress(f"lowering to {rt.choice}")
        program, described, left_float = steps.lower(graph, example)
        run = rt.runner(program)
        check_program(run, graph, calib_images[:2], job.out, rt.choice, steps.parity)
        progress("evaluating float and int8 top-1")
        float_top1 = job.top1(model)[0]
        int8_top1, images = job.top1(ProgramModel(job.out, model.spec, size, run))
        result = QuantizeResult(
            None, float_top1, int8_top1, images, len(calib_images), left_float, job.keep
        )
        result.runtime, result.delegation = rt.choice, described
        if sensitivity:
            for row in computing_rows(model):
                alone = steps.quantize(fast, example, calib_images, only_rows=[row])
                # handed as a function: a PT2E graph has no eval mode
                result.sensitivity.append((row, job.top1(alone.forward)[0]))
            progress("sensitivity done")
        job.gate(result)
        rt.write(job.out, program, metadata(model, job.metadata(result), rt.name, "int8"))
        result.path = job.out
        return result

    return flow


def check_program(
    run: Callable, graph: Callable, images: torch.Tensor, out: Path, runtime: str, parity: float
) -> None:
    """The int8 program in its runtime against its fake-quant graph in PyTorch: within
    ``parity`` × the largest logit, or refused."""
    with torch.no_grad():
        for x in images.split(1):
            ref, got = graph(x), run(x)
            scale = ref.abs().max().item()
            diff = (ref - got).abs().max().item()
            if not (got.isfinite().all() and diff <= parity * scale):
                raise ExportError(
                    f"the int8 program run by {runtime} differs from its fake-quant graph by "
                    f"{diff:.3g} (limit {parity:g} × the largest logit {scale:.3g}); "
                    "nothing was written",
                    file=str(out),
                )


def computing_rows(model: SpecNet) -> list[str]:
    return [name for name, m in model.layers.named_children() if any(True for _ in m.parameters())]
