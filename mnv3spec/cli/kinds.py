"""A command given a file of a kind it does not take names what the file is and the command that
takes it, as the one table of kinds (:data:`mnv3spec.kinds.KINDS`) says both."""

from __future__ import annotations

from pathlib import Path

from mnv3spec.errors import FileKindError
from mnv3spec.kinds import KINDS, file_kind


def check_kind(path: str | Path, command: str, takes: set[str], wanted: str) -> str | None:
    """``path``'s kind when ``command`` takes it (or it is not a regular file, or of no kind we
    know: the command's reader then says what is wrong). A file of another known kind raises
    :class:`FileKindError` naming what it is, what ``command`` wants and which command takes it."""
    kind = file_kind(path)
    if kind is None or kind in takes or not KINDS[kind].taken_by:
        return kind
    found = KINDS[kind]
    raise FileKindError(
        f"this is {found.description}; {command} takes {wanted} ({found.taken_by})", file=str(path)
    )


def check_model_file(path: str | Path, command: str) -> None:
    """What eval and infer run: a checkpoint, an ``.onnx`` from export or quantize (an ONNX model
    whose metadata rebuilds it), an ExecuTorch ``.pte`` or a LiteRT ``.tflite`` (their metadata
    beside them); any other kind is refused, naming what it is."""
    wanted = (
        "a .safetensors checkpoint, an .onnx written by export or quantize, a .pte or a .tflite"
    )
    if check_kind(path, command, {"safetensors", "onnx", "executorch", "tflite"}, wanted) != "onnx":
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
