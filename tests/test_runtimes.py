"""The registry of runtimes (deploy/runtimes/): one record per runtime, each naming a file kind the
rest of the house knows, and the lookups every command makes in it."""

from __future__ import annotations

import configparser
import sys

import pytest
import torch

from mnv3spec.deploy import runtimes
from mnv3spec.deploy.quantize import int8_runtimes
from mnv3spec.deploy.runtimes import RUNTIMES, runtime_for, runtime_of
from mnv3spec.errors import UserError
from mnv3spec.kinds import KINDS
from mnv3spec.latency.backends import BACKENDS

from .conftest import ROOT


def test_each_record_names_a_known_file_kind_and_its_suffix():
    for name, rt in RUNTIMES.items():
        assert rt.name == name
        assert rt.kind == rt.format and rt.kind in KINDS, name
        assert rt.suffix in KINDS[rt.kind].suffixes and KINDS[rt.kind].signature, name
        assert rt.metadata in ("inside", "sidecar", "none"), name
        assert (rt.load is None) == (rt.metadata == "none"), name  # what it writes, it reads
        # a program whose metadata is beside it declares its shapes, checked against that file
        assert (rt.shapes is not None) == rt.on_phone, name


def test_commands_name_runtimes_as_they_always_have():
    assert [rt.format for rt in RUNTIMES.values()] == [
        "onnx",
        "torchscript",
        "executorch",
        "tflite",
    ]
    assert [rt.choice for rt in int8_runtimes()] == ["executorch", "onnxruntime", "tflite"]
    assert BACKENDS[3:9] == (
        *("onnxruntime", "onnxruntime-int8", "executorch", "executorch-int8"),
        *("tflite", "tflite-int8"),
    )
    assert runtime_for("tflite", "format").name == "litert"
    with pytest.raises(UserError, match="unknown format 'onnxruntime'; use onnx or torchscript"):
        runtime_for("onnxruntime", "format")
    with pytest.raises(UserError, match="unknown runtime 'x'; use executorch or onnxruntime or"):
        runtime_for("x", "choice", int8_runtimes())


def test_a_file_is_read_by_the_runtime_that_wrote_it(tmp_path):
    (tmp_path / "m.pte").write_bytes(b"\x1c\x00\x00\x00ET12" + bytes(32))
    (tmp_path / "m.tflite").write_bytes(b"not yet checked: its suffix says who reads it")
    (tmp_path / "best.safetensors").write_bytes(b"")
    assert runtime_of(tmp_path / "m.pte").name == "executorch"
    assert runtime_of(tmp_path / "m.tflite").name == "litert"
    assert runtime_of(tmp_path / "best.safetensors") is None


def test_each_runtime_names_an_install_extra_of_the_package():
    setup = configparser.ConfigParser(interpolation=None)
    setup.read(ROOT / "setup.cfg")
    extras = set(setup["options.extras_require"])
    assert {rt.extra for rt in RUNTIMES.values() if rt.extra} <= extras


def test_the_registry_finds_its_runtimes_in_their_declared_order():
    assert list(RUNTIMES) == ["onnxruntime", "torchscript", "executorch", "litert"]
    orders = [rt.order for rt in RUNTIMES.values()]
    assert orders == sorted(set(orders))


FIFTH = """
from dataclasses import replace

from mnv3spec.deploy.runtimes.torchscript import RUNTIME as TORCHSCRIPT

RUNTIME = replace(TORCHSCRIPT, name="fifth", format="fifth", choice="fifth", order=25)
"""


def test_a_runtime_is_one_new_module_in_the_folder(tmp_path, monkeypatch):
    """A module dropped into the package's folder (here a second folder of the package's path) is
    found and placed by its order, with no line to add anywhere."""
    (tmp_path / "fifth.py").write_text(FIFTH)
    monkeypatch.setattr(runtimes, "__path__", [*runtimes.__path__, str(tmp_path)])
    try:
        found = runtimes.discover(runtimes.modules())
    finally:
        sys.modules.pop(f"{runtimes.__name__}.fifth", None)
        vars(runtimes).pop("fifth", None)
    assert list(found) == ["onnxruntime", "torchscript", "fifth", "executorch", "litert"]
    assert found["fifth"].lower is RUNTIMES["torchscript"].lower


def test_two_runtimes_of_one_name_are_refused():
    with pytest.raises(ValueError, match="two runtimes share a name"):
        runtimes.discover([runtimes.torchscript, runtimes.torchscript])


def test_a_program_that_fails_as_it_runs_is_one_line_naming_the_file(tmp_path):
    """A runtime's error while running a program (a body damaged past the checks made as it
    loads) is one paragraph naming the file and the runtime's first line, not its traceback."""
    from types import SimpleNamespace

    from mnv3spec.deploy.runtimes.phone import ProgramModel

    def run(x):
        raise RuntimeError("method forward failed: error 0x12\n\x1b[31mC++ stack\n  frame 1")

    model = ProgramModel(tmp_path / "m.pte", SimpleNamespace(in_channels=3), 8, run)
    with pytest.raises(UserError) as e:
        model(torch.zeros(2, 3, 8, 8))
    said = str(e.value)
    assert said.startswith(f"{tmp_path / 'm.pte'}: the program failed as it ran (method forward")
    assert "error 0x12); export it again" in said and "\n" not in said and "C++" not in said


def test_more_loads_than_a_group_run_a_group_at_a_time_so_each_call_finds_its_weights_warm():
    """Ten loads: the first four in turn for SPAN calls, then the next four, then the last two
    for half as many, then the first four again: each load runs as often."""
    from collections import Counter

    from mnv3spec.deploy.runtimes.record import GROUP, SPAN, in_turn

    called = []
    run = in_turn([lambda i=i: called.append(i) for i in range(10)])
    called.clear()
    cycle = 2 * SPAN + SPAN // 2
    for _ in range(cycle + GROUP):
        run()
    assert GROUP == 4 and SPAN % GROUP == 0
    assert called[:SPAN] == [0, 1, 2, 3] * (SPAN // 4)
    assert called[SPAN : 2 * SPAN] == [4, 5, 6, 7] * (SPAN // 4)
    assert called[2 * SPAN : cycle] == [8, 9] * (SPAN // 4)
    assert called[cycle:] == [0, 1, 2, 3]
    assert set(Counter(called[:cycle]).values()) == {SPAN // 4}


def test_a_file_loaded_several_times_is_timed_in_turn_and_each_load_runs_the_network():
    """``prepare(..., loads=K)``: each call runs the next of K loads of the runtime's file (a
    load's own speed is part luck), and each gives the network's outputs."""
    from mnv3spec.deploy.runtimes.record import in_turn
    from mnv3spec.latency.backends import prepare

    called = []
    run = in_turn([lambda i=i: called.append(i) for i in range(3)])
    assert called == [0, 1, 2]  # each load run once before any is timed
    for _ in range(7):
        run()
    assert called[3:] == [0, 1, 2, 0, 1, 2, 0]
    pytest.importorskip("onnxruntime")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    run, _ = prepare(model, "onnxruntime", x, loads=2)
    outputs = [run()[0] for _ in range(4)]
    with torch.no_grad():
        expected = model(x).numpy()
    assert all(abs(o - expected).max() < 1e-4 for o in outputs)
