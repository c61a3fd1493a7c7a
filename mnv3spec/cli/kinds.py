"""Which command takes which kind of file (:mod:`mnv3spec.kinds` judges the kind): a command given
a file of another kind names what it is and the command that takes it."""

from __future__ import annotations

from pathlib import Path

from mnv3spec.errors import FileKindError
from mnv3spec.kinds import KINDS, file_kind

TAKEN_BY = {
    "safetensors": "eval, infer, export and quantize take it",
    "pte": "eval, infer and latency take a .pte written by export or quantize, with its .pte.json",
    "onnx": "eval, infer and latency take an .onnx written by export or quantize",
    "torchscript": "it is for torch.jit.load; eval, infer and quantize take the .safetensors it "
    "came from",
    "torch-save": "train --resume takes the run folder that holds a resume.pt; train --init takes "
    "a state_dict",
    "tflite": "eval, infer and latency take a .tflite written by export or quantize, with its "
    ".tflite.json",
    "spec": "validate, show, diff, train, latency and export take it",
    "image": "infer --images takes a folder of them",
}


def check_kind(path: str | Path, command: str, takes: set[str], wanted: str) -> str | None:
    """``path``'s kind when ``command`` takes it (or it is not a regular file, or of no kind we
    know: the command's reader then says what is wrong). A file of another known kind raises
    :class:`FileKindError` naming what it is, what ``command`` wants and which command takes it."""
    kind = file_kind(path)
    if kind is None or kind in takes or kind not in TAKEN_BY:
        return kind
    raise FileKindError(
        f"this is {KINDS[kind]}; {command} takes {wanted} ({TAKEN_BY[kind]})", file=str(path)
    )


def check_model_file(path: str | Path, command: str) -> None:
    """What eval and infer run: a checkpoint, an ``.onnx`` from export or quantize (an ONNX model
    whose metadata rebuilds it), an ExecuTorch ``.pte`` or a LiteRT ``.tflite`` (their metadata
    beside them); any other kind is refused, naming what it is."""
    wanted = (
        "a .safetensors checkpoint, an .onnx written by export or quantize, a .pte or a .tflite"
    )
    if check_kind(path, command, {"safetensors", "onnx", "pte", "tflite"}, wanted) != "onnx":
        return
    from mnv3spec.deploy.runtimes.onnx_model import read_format, require_onnx

    require_onnx()  # or an error naming the extra to install, not "not one of ours"
    if read_format(path) is None:  # (a truncated file: a CheckpointError saying so)
        raise FileKindError(
            "this is an ONNX model without mnv3spec's metadata (spec, class names, resolution, "
            "normalisation), so its outputs cannot be named: written by another tool, or by an "
            f"export older than this version; it runs in ONNX Runtime as it is. {command} takes "
            f"{wanted}: export the .safetensors again (export CHECKPOINT --format onnx)",
            file=str(path),
        )
