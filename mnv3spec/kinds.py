"""What a file is, judged by its first bytes (never by its name).

A command given a file of another kind says what the file is and where it goes
(:mod:`mnv3spec.cli.kinds`), instead of the error of a reader handed the wrong thing (a float
``.onnx`` read as safetensors once reported a header of 8,031,177,557,570,357,768 bytes). Reading
is safe on anything a user passes: only a regular file is opened, and only its first bytes (and a
zip's directory) are read.
"""

from __future__ import annotations

import re
import stat
import struct
from pathlib import Path

HEAD = 4096  # bytes read to judge a file

# kind → what it is, in a sentence's words (the CLI adds which command takes it)
KINDS: dict[str, str] = {
    "safetensors": "a safetensors weights file",
    "onnx": "an ONNX model",
    "torchscript": "a TorchScript model (a .pt written by export)",
    "torch-save": "a PyTorch pickle archive (a run's resume.pt, or a saved state_dict)",
    "pte": "an ExecuTorch program (.pte)",
    "tflite": "a LiteRT / TFLite model (.tflite)",
    "spec": "a YAML spec",
    "image": "an image",
    "text": "a text file",
    "unknown": "not a file kind mnv3spec knows",
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
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch-save"  # a pickle: torch.save's legacy format (before its zip files)
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
