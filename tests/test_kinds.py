"""A file's kind from its first bytes, and commands given a file of another kind: they say what
it is and which command takes it (exit 2), instead of a reader's confusion."""

from __future__ import annotations

import os
import struct
import sys
import warnings

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image
from safetensors.torch import save_file

from mnv3spec.kinds import KINDS, file_kind

from .conftest import ROOT, run_cli, tiny_checkpoint


def write_onnx(path, metadata: dict[str, str] | None = None):
    """A one-node ONNX model, serialised as exporters write one (ir_version first)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g", [x], [y])
    model = helper.make_model(graph, producer_name="pytorch")
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


class Scripted(torch.nn.Module):
    def forward(self, x):
        return x + 1


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One file of every kind, made the way its writer makes it."""
    d = tmp_path_factory.mktemp("kinds")
    tiny_checkpoint(d / "best.safetensors", ["a", "b"])
    save_file({"w": torch.zeros(2)}, d / "plain.safetensors")
    write_onnx(d / "best.onnx")
    with warnings.catch_warnings():  # TorchScript is deprecated; export still writes it
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(Scripted()), d / "model.pt")
    torch.save({"epoch": 1, "model": {"w": torch.zeros(2)}}, d / "resume.pt")
    torch.save({"w": torch.zeros(2)}, d / "legacy.pt", _use_new_zipfile_serialization=False)
    (d / "model.pte").write_bytes(b"\x1c\x00\x00\x00ET12" + bytes(40))
    (d / "model.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(40))
    (d / "spec.yaml").write_text((ROOT / "specs" / "small.yaml").read_text())
    for ext in ("png", "jpeg", "gif", "bmp", "webp", "tiff"):
        Image.new("RGB", (4, 4), (200, 10, 10)).save(d / f"image.{ext}")
    (d / "notes.txt").write_text("nothing to see\n")
    (d / "random.bin").write_bytes(bytes(range(256)) * 4)
    (d / "empty").write_bytes(b"")
    return d


@pytest.mark.parametrize(
    "name, kind",
    [
        ("best.safetensors", "safetensors"),
        ("plain.safetensors", "safetensors"),
        ("best.onnx", "onnx"),
        ("model.pt", "torchscript"),
        ("resume.pt", "torch-save"),
        ("legacy.pt", "torch-save"),
        ("model.pte", "executorch"),
        ("model.tflite", "tflite"),
        ("spec.yaml", "spec"),
        *((f"image.{ext}", "image") for ext in ("png", "jpeg", "gif", "bmp", "webp", "tiff")),
        ("notes.txt", "text"),
        ("random.bin", "unknown"),
        ("empty", "text"),
    ],
)
def test_every_kind_is_judged_by_its_bytes_not_its_name(files, tmp_path, name, kind):
    assert file_kind(files / name) == kind
    renamed = tmp_path / "misleading.safetensors"
    renamed.write_bytes((files / name).read_bytes())
    assert file_kind(renamed) == kind


def test_an_exported_onnx_and_a_run_folders_files_are_recognised(files):
    assert all(file_kind(ROOT / "specs" / f"{n}.yaml") == "spec" for n in ("small", "large"))
    assert file_kind(files / "best.onnx") == "onnx"


def test_what_is_not_a_regular_file_has_no_kind_and_is_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "pipe")  # opening it would wait for a writer
    for path in (tmp_path / "pipe", tmp_path, tmp_path / "missing", "/dev/null", "/dev/zero"):
        assert file_kind(path) is None


@pytest.mark.parametrize(
    "head",
    [
        struct.pack("<Q", 2**63) + b"{",  # a safetensors header larger than the file
        b"PK\x03\x04" + bytes(60),  # a zip signature with no directory
        b"\x08\x07\x00",  # ONNX's first tag, then nothing ONNX writes
        b"\xff\xfe" + "layers:".encode("utf-16-le"),
        b"ET12" + bytes(8),  # the identifier at the wrong offset
    ],
)
def test_damaged_or_lookalike_heads_are_not_taken_for_a_kind(tmp_path, head):
    path = tmp_path / "f"
    path.write_bytes(head)
    assert file_kind(path) in ("unknown", "text")


def test_every_kind_says_what_it_is_and_which_command_takes_it():
    assert all(k.name == name and k.description and k.noun for name, k in KINDS.items())
    # a kind its bytes tell says which command takes it; the rest (text, unknown, the outputs
    # known by their suffix) go to the reader
    signed = {name for name, k in KINDS.items() if k.signature is not None}
    assert {name for name, k in KINDS.items() if k.taken_by} == signed
    assert signed == set(KINDS) - {"csv", "json", "text", "unknown"}


FOREIGN = [
    # (command line with {f} for the file, file, what the message says)
    (["eval", "{f}"], "spec.yaml", "this is a YAML spec; eval takes a .safetensors checkpoint"),
    (["eval", "{f}"], "model.pt", "this is a TorchScript model (a .pt written by export)"),
    (["eval", "{f}"], "resume.pt", "train --resume takes the run folder that holds a resume.pt"),
    (["eval", "{f}"], "image.png", "this is an image; eval takes"),
    (["quantize", "{f}"], "model.pte", "this is an ExecuTorch program (.pte)"),  # eval runs one
    (["quantize", "{f}"], "model.tflite", "this is a LiteRT / TFLite model (.tflite)"),
    (["eval", "{f}"], "best.onnx", "this is an ONNX model without mnv3spec's metadata"),
    (["infer", "--models", "{f}", "--images", "."], "best.onnx", "export the .safetensors again"),
    (["infer", "--models", "{f}", "--images", "."], "spec.yaml", "this is a YAML spec; infer"),
    (["quantize", "{f}"], "best.onnx", "this is an ONNX model; quantize takes a .safetensors"),
    (["quantize", "{f}"], "image.jpeg", "this is an image; quantize takes a .safetensors"),
    (["export", "{f}", "--format", "onnx"], "best.onnx", "this is an ONNX model; export takes"),
    (["export", "{f}", "--format", "onnx"], "resume.pt", "a run's resume.pt"),
    (["latency", "{f}"], "best.safetensors", "this is a safetensors weights file; latency takes"),
    (["latency", "small", "{f}"], "image.png", "infer --images takes a folder of them"),
]


@pytest.mark.parametrize("args, name, message", FOREIGN)
def test_a_command_given_a_file_of_another_kind_names_it(files, args, name, message):
    before = (files / name).read_bytes()
    result = run_cli(*(a.format(f=files / name) for a in args))
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {files / name}: this is ")
    assert message in result.stderr and len(result.stderr.splitlines()) == 1
    assert (files / name).read_bytes() == before


def test_a_renamed_file_is_taken_for_what_its_bytes_say(files, tmp_path):
    """Issue 31 hunt 19: a checkpoint renamed .bin is exported, loaded by --init and named as a
    checkpoint by the spec commands (it was "not a YAML spec" / "a binary file"); a program or an
    image renamed .yaml is named as what it is, wherever a spec is read."""
    from mnv3spec.deploy.runtimes import RUNTIMES, runtime_of
    from mnv3spec.weights.init import read_state_dict

    ck = tmp_path / "ck.bin"
    ck.write_bytes((files / "best.safetensors").read_bytes())
    result = run_cli("export", ck, "--format", "onnx", "--out", tmp_path / "x.onnx")
    assert result.returncode == 0, result.stderr
    assert file_kind(tmp_path / "x.onnx") == "onnx"
    assert read_state_dict(ck).keys() == read_state_dict(files / "best.safetensors").keys()
    pte = tmp_path / "program.bin"
    pte.write_bytes((files / "model.pte").read_bytes())
    assert runtime_of(pte) is RUNTIMES["executorch"] and runtime_of(ck) is None
    png = tmp_path / "picture.yaml"
    png.write_bytes((files / "image.png").read_bytes())
    for path, said in [
        (ck, "this is a safetensors weights file, not a YAML spec (eval, infer, export"),
        (pte, "this is an ExecuTorch program (.pte), not a YAML spec (eval, infer and latency"),
        (png, "this is an image, not a YAML spec (infer --images takes a folder of them)"),
    ]:
        for command in ("show", "validate"):
            result = run_cli(command, path)
            assert result.returncode == 2 and result.stdout == "", result.stdout
            assert result.stderr.startswith(f"error: {path}: {said}")
            assert len(result.stderr.splitlines()) == 1


def test_an_onnx_file_without_the_onnx_extra_names_the_extra(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import fails as if not installed
    result = run_cli("eval", files / "best.onnx")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert 'pip install -e ".[export]"' in result.stderr
    assert "(onnx is not installed)" in result.stderr
