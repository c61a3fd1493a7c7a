"""What a file is, judged by its first bytes (never by its name), and which command takes it.

A command given a file of another kind says what the file is and where it goes, instead of the
error of a reader that was handed the wrong thing (a float ``.onnx`` read as safetensors once
reported a header of 8,031,177,557,570,357,768 bytes). Reading is safe on anything a user passes:
only a regular file is opened, and only its first bytes (and a zip's directory) are read.
"""

from __future__ import annotations

import re
import stat
import struct
from pathlib import Path

from .errors import FileKindError

HEAD = 4096  # bytes read to judge a file

# kind → what it is, in a sentence's words; and the commands that take it
KINDS: dict[str, tuple[str, str]] = {
    "safetensors": ("a safetensors weights file", "eval, infer, export and quantize take it"),
    "onnx": ("an ONNX model", "eval and infer take an int8 .onnx written by quantize"),
    "torchscript": (
        "a TorchScript model (a .pt written by export)",
        "it is for torch.jit.load; eval, infer and quantize take the .safetensors it came from",
    ),
    "torch-save": (
        "a PyTorch pickle archive (a run's resume.pt, or a saved state_dict)",
        "train --resume takes the run folder that holds a resume.pt; train --init takes a "
        "state_dict",
    ),
    "pte": (
        "an ExecuTorch program (.pte)",
        "it runs in ExecuTorch on a phone; the commands here take the .safetensors it came from",
    ),
    "tflite": (
        "a LiteRT / TFLite model (.tflite)",
        "it runs in LiteRT on a phone; the commands here take the .safetensors it came from",
    ),
    "spec": ("a YAML spec", "validate, show, diff, train, latency and export take it"),
    "image": ("an image", "infer --images takes a folder of them"),
    "text": ("a text file", "no command takes it"),
    "unknown": ("not a file kind mnv3spec knows", "no command takes it"),
}

_IMAGES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
)
# Tags of an ONNX ModelProto's fields after ir_version (field 1, a varint, written first by
# every exporter): producer_name, producer_version, domain, model_version, doc_string, graph,
# opset_import, metadata_props.
_ONNX_NEXT = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}
_SPEC_KEY = re.compile(rb"^(layers|params|name)\s*:", re.M)


def file_kind(path: str | Path) -> str | None:
    """The kind of ``path`` (a key of :data:`KINDS`), judged by its signature bytes; None when it
    is not a regular file (missing, a folder, a pipe or a device: the readers say which)."""
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return None
        with open(path, "rb") as f:
            head = f.read(HEAD)
    except OSError:
        return None
    return _judge(head, path)


def _judge(head: bytes, path: Path) -> str:
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[4:6] == b"ET" and head[6:8].isdigit():
        return "pte"
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if head.startswith(_IMAGES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if len(head) >= 9 and head[8:9] == b"{":
        (size,) = struct.unpack("<Q", head[:8])
        if size <= path.stat().st_size - 8:
            return "safetensors"
    if len(head) >= 3 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] in _ONNX_NEXT:
        return "onnx"
    if b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.start < len(head) - 3:  # not merely a character cut at HEAD
                return "unknown"
            text = head[: e.start].decode("utf-8")
        return "spec" if _SPEC_KEY.search(text.encode()) else "text"
    return "unknown"


def _zip_kind(path: Path) -> str:
    """torch.jit.save and torch.save both write a zip; only TorchScript's holds code."""
    import zipfile  # not at the top: the CLI imports this module before parsing its flags

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "unknown"
    if any("/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/data.pkl") for n in names):
        return "torch-save"
    return "unknown"


def check_kind(path: str | Path, command: str, takes: set[str], wanted: str) -> str | None:
    """``path``'s kind when ``command`` takes it (or it is not a regular file, or of no kind we
    know: the command's reader then says what is wrong). A file of another known kind raises
    :class:`FileKindError` naming what it is, what ``command`` wants and which command takes it."""
    kind = file_kind(path)
    if kind is None or kind in takes or kind in ("text", "unknown"):
        return kind
    what, taken_by = KINDS[kind]
    raise FileKindError(f"this is {what}; {command} takes {wanted} ({taken_by})", file=str(path))


def check_model_file(path: str | Path, command: str) -> None:
    """What eval and infer run: a checkpoint, or an int8 ``.onnx`` from quantize (an ONNX
    model whose metadata rebuilds it); any other kind is refused, naming what it is."""
    wanted = "a .safetensors checkpoint or an int8 .onnx written by quantize"
    if check_kind(path, command, {"safetensors", "onnx"}, wanted) != "onnx":
        return
    from .deploy.export import require_onnx
    from .deploy.int8 import is_int8_model

    require_onnx()  # or an error naming the extra to install, not "not an int8 model"

    if not is_int8_model(path):
        raise FileKindError(
            f"this is an ONNX model without the metadata of quantize's int8 files (a float model "
            f"written by export?); {command} takes {wanted}: give it the .safetensors the model "
            "was exported from",
            file=str(path),
        )
