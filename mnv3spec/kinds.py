"""Every kind of file mnv3spec reads or writes, declared once (:data:`KINDS`): its name, what it
is, the suffixes it is written under, its signature (how its first bytes tell it) and which
commands take it. The rest of the house reads this table: :func:`file_kind` judges a file by the
signatures (never by its name), :mod:`mnv3spec.files` checks an output against its kind, and
:mod:`mnv3spec.cli.kinds` tells a command given a file of another kind what it is and where it
goes, instead of the error of a reader handed the wrong thing (a float ``.onnx`` read as
safetensors once reported a header of 8,031,177,557,570,357,768 bytes).

A runtime's file is named as ``export --format`` names it (``executorch``, ``tflite``: the
:attr:`~mnv3spec.deploy.runtimes.record.Runtime.kind` of its record). Reading is safe on
anything a user passes: only a regular file is opened, and only its first bytes (and a zip's
directory) are read.
"""

from __future__ import annotations

import re
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HEAD = 4096  # bytes read to judge a file


@dataclass(frozen=True)
class Kind:
    """One kind of file. ``description`` tells whoever handed a file to a command what it is
    ("this is …"); ``noun`` names the kind when an output check refuses to replace a file ("exists
    and is …, not …"), the description when not given."""

    name: str
    description: str
    suffixes: tuple[
        str, ...
    ] = ()  # the names it is written under; claimed by them if no bytes tell
    signature: Callable[[bytes, Path], bool] | None = None  # (head, path) → its bytes say it is one
    taken_by: str = ""  # which commands take it, said to a command given it instead
    noun: str = ""
    # An output named like this kind is replaced only when its bytes say it is one. ONNX's are a
    # protobuf without a magic number (its signature is a heuristic), so its name suffices.
    bytes_required: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "noun", self.noun or self.description)


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
_SPEC_KEY = re.compile(r"^(layers|params|name)\s*:", re.M)


def _tflite(head: bytes, path: Path) -> bool:
    return head[4:8] == b"TFL3"


def _pte(head: bytes, path: Path) -> bool:
    return head[4:6] == b"ET" and head[6:8].isdigit()


def _torchscript(head: bytes, path: Path) -> bool:
    """torch.jit.save and torch.save both write a zip; only TorchScript's holds code."""
    return any("/code/" in n for n in _zip_names(head, path))


def _torch_save(head: bytes, path: Path) -> bool:
    """A zip of torch.save, or a pickle: its legacy format (before its zip files)."""
    pickle = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    return pickle or any(n.endswith("/data.pkl") for n in _zip_names(head, path))


def _image(head: bytes, path: Path) -> bool:
    return head.startswith(_IMAGES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _safetensors(head: bytes, path: Path) -> bool:
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (size,) = struct.unpack("<Q", head[:8])
    return size <= path.stat().st_size - 8


def _onnx(head: bytes, path: Path) -> bool:
    return len(head) >= 3 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] in _ONNX_NEXT


def _spec(head: bytes, path: Path) -> bool:
    text = _text(head)
    return text is not None and _SPEC_KEY.search(text) is not None


# In the order they are judged: the first whose signature holds names the file. What none
# claims is "text" if it reads as UTF-8, else "unknown" (:func:`file_kind`).
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "tflite",
            "a LiteRT / TFLite model (.tflite)",
            (".tflite",),
            _tflite,
            "eval, infer and latency take a .tflite written by export or quantize, with its "
            ".tflite.json",
            noun="a LiteRT (TFLite) model",
        ),
        Kind(
            "executorch",
            "an ExecuTorch program (.pte)",
            (".pte",),
            _pte,
            "eval, infer and latency take a .pte written by export or quantize, with its .pte.json",
            noun="an ExecuTorch program",
        ),
        Kind(
            "torchscript",
            "a TorchScript model (a .pt written by export)",
            (".pt", ".pth"),
            _torchscript,
            "it is for torch.jit.load; eval, infer and quantize take the .safetensors it came from",
            noun="a TorchScript model",
        ),
        Kind(
            "torch-save",
            "a PyTorch pickle archive (a run's resume.pt, or a saved state_dict)",
            (".pt", ".pth", ".ckpt", ".bin"),
            _torch_save,
            "train --resume takes the run folder that holds a resume.pt; train --init takes a "
            "state_dict",
            noun="a PyTorch file (torch.save)",
        ),
        # The one image a command writes is a PNG plot; its signature knows every format.
        Kind(
            "image",
            "an image",
            (".png",),
            _image,
            "infer --images takes a folder of them",
            noun="a PNG image",
        ),
        Kind(
            "safetensors",
            "a safetensors weights file",
            (".safetensors",),
            _safetensors,
            "eval, infer, export and quantize take it",
            noun="safetensors weights",
        ),
        Kind(
            "onnx",
            "an ONNX model",
            (".onnx",),
            _onnx,
            "eval, infer and latency take an .onnx written by export or quantize",
            bytes_required=False,
        ),
        # A spec is known by its bytes (its top-level keys), so one named .csv or .json is never
        # taken for a table or a sidecar and replaced; a .yaml that is no spec is the user's.
        Kind(
            "spec",
            "a YAML spec",
            (".yaml", ".yml"),
            _spec,
            "validate, show, diff, train, latency and export take it",
            noun="a spec (YAML)",
        ),
        Kind("csv", "a CSV table", (".csv",)),
        Kind("json", "a JSON file", (".json",)),
        Kind("text", "a text file", (".txt", ".log")),
        Kind("unknown", "not a file kind mnv3spec knows"),
    )
}


def named_or_is(path: str | Path, kind: str) -> bool:
    """Whether ``path`` is a file of ``kind``: named like one (a damaged one is then refused by
    its reader, in its words), or one by its bytes under any name (a checkpoint renamed .bin)."""
    return Path(path).suffix in KINDS[kind].suffixes or file_kind(path) == kind


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
    for kind in KINDS.values():
        if kind.signature is not None and kind.signature(head, path):
            return kind.name
    return "unknown" if _text(head) is None else "text"


def _text(head: bytes) -> str | None:
    """``head`` as text (a character cut at :data:`HEAD` left out), or None if it is not UTF-8."""
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not merely a character cut at HEAD
            return None
        return head[: e.start].decode("utf-8")


def _zip_names(head: bytes, path: Path) -> list[str]:
    """The names in the zip ``path``; none if it is not one (or a damaged one)."""
    if not head.startswith(b"PK\x03\x04"):
        return []
    import zipfile  # not at the top: the CLI imports this module before parsing its flags

    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return []
