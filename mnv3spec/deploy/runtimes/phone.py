"""What the phone runtimes share (ExecuTorch, LiteRT): the metadata file beside a program, a
program as a module, and the PT2E int8 flow written once for both (:func:`pt2e`).

An ExecuTorch ``.pte`` or a LiteRT ``.tflite`` holds the network and nothing else a command needs
(the spec, class names, resolution, normalisation). That travels beside it as ``NAME.pte.json``:
plain JSON that an app on the phone reads too (its class names and normalisation), written with
the program's SHA-256, so a program swapped or changed after export is refused rather than run
with another program's labels; and as the JSON itself may be edited, it is checked against the
shapes the program declares (:func:`check_shapes`). The JSON keys and checks are those of a
checkpoint's metadata.

The int8 flow: the network prepared for XNNPACK, quantized by PT2E with the runtime's quantizer and
calibrated on training images, lowered to the runtime's program, the program run by the runtime
itself against its fake-quant graph (the same integer arithmetic up to rounding, so a larger
difference is a broken lowering), then float and int8 top-1 measured on the validation split,
gated, and written with the metadata file beside it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import CheckpointError, ExportError, UserError
from ...files import check_output, read_json, writing
from ...kinds import file_kind
from ...model.builder import SpecNet
from ...spec.load import load_spec
from ...spec.read import read_yaml
from ...text import printable
from ...weights.checkpoint import metadata_problem
from .record import FORMAT, Int8, Job, Progress, QuantizeResult, Runtime, Shapes, metadata

_SIDECAR_HEAD = f'{{\n "format": "{FORMAT}"'.encode()  # how every metadata file of ours starts
CALIB_BATCH = 64  # images per PT2E calibration call
MAX_SIDECAR_BYTES = 16 << 20  # a metadata file holds a spec and up to 100,000 class names


def calibrate_pt2e(
    fast: nn.Module,
    example: torch.Tensor,
    calib_images: torch.Tensor,
    quantizer: Any,
    *,
    fold_quantize: bool = True,
) -> nn.Module:
    """``fast`` exported with a dynamic batch (so calibration and the fake-quant reference run
    batched; lowering traces the converted graph again at batch 1), prepared by PT2E with
    ``quantizer``, calibrated on ``calib_images`` and converted: the step both phone runtimes'
    int8 share, whatever their quantizer."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    batch = {0: torch.export.Dim("batch", min=1, max=CALIB_BATCH)}
    twice = example[:1].expand(2, *example.shape[1:]).contiguous()
    graph = torch.export.export(fast, (twice,), dynamic_shapes=(batch,)).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for images in calib_images.split(CALIB_BATCH):
            prepared(images)
    return convert_pt2e(prepared, fold_quantize=fold_quantize)


CALIB = 8  # random images calibrating a timed int8 program (the ranges do not change the time)


def sidecar(path: str | Path) -> Path:
    """The metadata file of a program: ``model.pte`` → ``model.pte.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def check_signature(path: Path, runtime: Runtime) -> None:
    """Refuse a file that is not a program of ``runtime`` (:func:`mnv3spec.kinds.file_kind`
    judges it)."""
    found = file_kind(path)
    if found is None:
        raise CheckpointError("cannot be read (not a regular file)", file=str(path))
    if found != runtime.kind:
        raise CheckpointError(
            f"is not a {runtime.name} program (a {runtime.suffix} file starts with "
            f"{runtime.signature!r} at byte 4)",
            file=str(path),
        )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_outputs(out: Path, runtime: Runtime, inputs: list[Path], field: str = "out") -> Path:
    """:func:`check_output` for the program and its metadata file, before any work."""
    out = check_output(out, runtime.kind, inputs=inputs, suffix=runtime.suffix, field=field)
    if out.is_file() and out.stat().st_size > 0:  # the suffix alone does not make it ours
        try:
            check_signature(out, runtime)
        except CheckpointError:
            raise UserError(
                f"exists and is not a {runtime.name} program (it has the suffix, not the "
                "signature); "
                "it is left as it is: choose another name",
                file=str(out),
                field=field,
            ) from None
    check_output(sidecar(out), "json", inputs=inputs, field=field, ours=_SIDECAR_HEAD)
    return out


def write_program(out: Path, program: bytes, info: dict[str, Any], field: str = "out") -> None:
    """Write the program and its metadata file, each atomically; the metadata records the
    program's SHA-256."""
    with writing(out, field=field) as tmp:
        tmp.write_bytes(program)
        info = {**info, "sha256": digest(tmp)}
        with writing(sidecar(out), field=field) as tmp_json:
            tmp_json.write_text(json.dumps(info, indent=1) + "\n")


def read_metadata(path: str | Path, runtime: Runtime) -> tuple[dict[str, Any], Any]:
    """``(metadata decoded as a checkpoint's, the spec)`` of a program, checked against it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such file", file=str(path))
    check_signature(path, runtime)
    beside = sidecar(path)
    if not beside.is_file():
        raise CheckpointError(
            f"has no metadata file beside it ({beside.name}, written by export and quantize); "
            "copy it along with the program",
            file=str(path),
        )
    fix = "copy the one export or quantize wrote beside the program"
    raw = read_json(beside, what="a program's metadata file", fix=fix, max_bytes=MAX_SIDECAR_BYTES)
    try:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} metadata file")
        if not isinstance(raw["spec"], str):
            raise ValueError("its spec is not YAML text")
        spec, _ = read_yaml(raw["spec"], f"{beside} (embedded spec)")
        meta = {key: raw[key] for key in ("classes", "resolution", "mean", "std", "extra")}
        problem = metadata_problem(spec, meta)
        recorded = raw["sha256"]
    except (KeyError, ValueError, TypeError, UserError) as e:
        raise CheckpointError(f"damaged metadata ({e})", file=str(beside)) from None
    if problem:
        raise CheckpointError(f"damaged metadata: {problem}", file=str(beside))
    if recorded != digest(path):
        raise CheckpointError(
            f"is not the program {beside.name} describes (its SHA-256 differs: the file was "
            "changed or replaced after export)",
            file=str(path),
        )
    meta = {**meta, "spec": spec, "mean": tuple(meta["mean"]), "std": tuple(meta["std"])}
    meta["extra"] = {**meta["extra"], "precision": raw.get("precision", "")}
    return meta, load_spec(spec)


def first_line(e: Exception) -> str:
    """A runtime's or converter's error in one short line (their messages run to pages)."""
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def load_program(
    path: str | Path, runtime: Runtime, failure: str, threads: int | None = None
) -> tuple[ProgramModel, dict]:
    """``(model, metadata)`` of a phone program, checked against the metadata file beside it (its
    digest, then the shapes the program declares: :func:`check_shapes`); ``runtime.runner`` loads
    it, and any error the runtime raises is ``failure`` (e.g. "ExecuTorch cannot load this
    program") with the runtime's first line."""
    path = Path(path)
    meta, spec = read_metadata(path, runtime)
    try:
        declared = runtime.shapes(path)
    except Exception as e:  # the runtimes raise RuntimeError / ValueError for what they refuse
        raise CheckpointError(f"{failure} ({first_line(e)})", file=str(path)) from None
    check_shapes(path, declared, spec.in_channels, meta)
    try:
        run = runtime.runner(path, threads)
    except Exception as e:
        raise CheckpointError(f"{failure} ({first_line(e)})", file=str(path)) from None
    return ProgramModel(path, spec, meta["resolution"], run), meta


def check_shapes(path: Path, declared: Shapes, channels: int, meta: dict[str, Any]) -> None:
    """Refuse a program whose input or output is not what its metadata file claims, before it
    runs. The file's digest is the program's, not its own, so an edited resolution or class list
    passes :func:`read_metadata`; run, the program would fail on the first image, or answer with
    more or fewer logits than there are class names."""
    size, classes = meta["resolution"], len(meta["classes"])
    claimed_in, claimed_out = (1, channels, size, size), (1, classes)
    inputs, outputs = declared
    beside = sidecar(path).name
    problems = []
    if inputs != [claimed_in]:
        problems.append(
            f"takes {_shapes(inputs)} images where {beside} claims resolution {size} "
            f"({_shapes([claimed_in])})"
        )
    if outputs != [claimed_out]:
        problems.append(
            f"gives {_shapes(outputs)} logits where {beside} claims {classes} classes "
            f"({_shapes([claimed_out])})"
        )
    if problems:
        raise CheckpointError(
            f"does not match its metadata: the program {' and '.join(problems)}; put back the "
            "metadata file written with it, or export the checkpoint again",
            file=str(path),
        )


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    """``1×3×32×32``; several joined by commas; ``none``."""
    return ", ".join("×".join(map(str, s)) for s in shapes) or "none"


class ProgramModel(nn.Module):
    """A phone program as a module: ``model(x)`` runs it on the CPU one image at a time (the
    program is exported at batch 1, as an app calls it) and returns float logits on ``x``'s
    device. No parameters; ``.spec`` as a :class:`SpecNet` has, so ``evaluate``, ``infer`` and
    ``latency`` use it as they use a checkpoint's model."""

    def __init__(
        self, path: Path, spec: Any, resolution: int, run: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        super().__init__()
        self.spec = spec
        self.path = path
        self.resolution = resolution
        self._run = run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.resolution
        expected = (self.spec.in_channels, size, size)
        if tuple(x.shape[1:]) != expected:
            raise UserError(
                f"the program takes images of {expected}, got {tuple(x.shape[1:])}",
                file=str(self.path),
            )
        cpu = x.detach().to("cpu", torch.float32).contiguous()
        try:
            return torch.cat([self._run(image[None]) for image in cpu]).to(x.device)
        except (RuntimeError, ValueError) as e:  # the runtime's own words, first line only
            lines = str(e).strip().splitlines() or [type(e).__name__]
            said = printable(lines[0][:200])
            raise UserError(
                f"the program failed as it ran ({said}); export it again", file=str(self.path)
            ) from None


# --- int8 (PT2E) -------------------------------------------------------------------------------


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
