"""ExecuTorch programs (``.pte``) with the whole network delegated to XNNPACK, in float or int8.

The flow is ExecuTorch's own for MobileNetV3 (its ``mv3`` example): ``torch.export`` →
``to_edge_transform_and_lower`` with the XNNPACK partitioner → ``to_executorch``; int8 first goes
through PT2E quantization with the XNNPACK quantizer (per-channel symmetric int8 weights, int8
activations calibrated on images). Each program is run back in ExecuTorch's runtime before it is
kept; its metadata travels beside it (:mod:`.phone`).

Two things in our network kept rows out of the delegate, and this module and
:func:`~..model.inference.for_xnnpack` remove both:
- hard-sigmoid (every squeeze-and-excite) is decomposed by the edge dialect into ``x + 3``, clamps
  and ``/ 6`` with *integer* tensor constants, each cast to float at run time by a
  ``_to_dim_order_copy`` that XNNPACK does not take: two per SE block, left outside the delegate.
  :data:`DECOMPOSITIONS` writes it with float scalars instead;
- the classifier's :class:`~mnv3spec.ops.layers.Pointwise`, a weight reshaped at run time that
  XNNPACK does not take as static: :func:`~..model.inference.for_xnnpack` makes it the 1×1
  convolution it is.
With both, every row of the shipped specs is one XNNPACK partition.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ExportError
from ...model.inference import for_xnnpack
from .native import stderr_without
from .phone import (
    CALIB,
    ProgramModel,
    calibrate_pt2e,
    check_outputs,
    load_program,
    pt2e,
    write_program,
)
from .record import Int8, Lowered, Runtime, Shapes, Timed, in_turn, require

EXTRA = "mobile"


def require_executorch() -> None:
    """Nothing, or an :class:`ExportError` naming the extra to install."""
    require("ExecuTorch", EXTRA, ("executorch.exir", "executorch.runtime", "torchao"))


def _hardsigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


DECOMPOSITIONS = {torch.ops.aten.hardsigmoid.default: _hardsigmoid}


@dataclass(frozen=True)
class Delegation:
    """Which spec rows XNNPACK runs, the ops left to ExecuTorch's portable kernels by row
    (``""``: ops outside any row, such as an input quantize), and the delegate's convolutions by
    precision: a row delegated is not yet a row in int8, since XNNPACK also runs a convolution
    the quantizer left float, in float between converts."""

    delegated: list[str]
    fallback: dict[str, Counter] = field(default_factory=dict)
    convs: Counter = field(default_factory=Counter)  # "int8" / "float" → count

    def describe(self) -> str:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.convs.items()))
        rows = f"{len(self.delegated)} rows delegated to XNNPACK" + (
            f" (convolutions: {kinds})" if kinds else ""
        )
        if not self.fallback:
            return f"{rows}; none fall back to portable kernels"
        back = "; ".join(
            f"{row or '(outside rows)'}: " + ", ".join(f"{op}×{n}" for op, n in ops.items())
            for row, ops in self.fallback.items()
        )
        return f"{rows}; falling back to portable kernels: {back}"

    def ops(self) -> Counter:
        return sum(self.fallback.values(), Counter())


def _row(node: torch.fx.Node) -> str:
    """The spec row (``r03_bneck``) a graph node computes, from its module stack; ``""`` if none."""
    for path, _ in (node.meta.get("nn_module_stack") or {}).values():
        parts = path.replace("L['self'].", "").split(".")
        if len(parts) >= 2 and parts[0] == "layers":
            return parts[1]
    return ""


def _conv_precisions(edge_module: torch.fx.GraphModule) -> Counter:
    """The convolutions inside the XNNPACK delegates, ``int8`` where the weight comes through a
    dequantize (XNNPACK then runs the quantized kernel) and ``float`` otherwise."""
    from executorch.exir.lowered_backend_module import get_lowered_backend_modules

    found: Counter = Counter()
    for lowered in get_lowered_backend_modules(edge_module):
        for node in lowered.original_module.graph.nodes:
            if node.op == "call_function" and _op_name(node) == "convolution":
                weight = node.args[1]
                found["int8" if "dequantize" in _op_name(weight) else "float"] += 1
    return found


def _op_name(node: torch.fx.Node) -> str:
    """``_to_dim_order_copy``, ``addmm``: the op without its namespace and overload."""
    name = getattr(node.target, "__name__", str(node.target))
    parts = [p for p in name.split(".") if p not in ("default", "Tensor", "Scalar")]
    return parts[-1] if len(parts) < 3 else parts[1]


def lower(model: nn.Module, example: torch.Tensor) -> tuple[bytes, Delegation]:
    """``model`` (from :func:`~..model.inference.for_xnnpack`, or a PT2E-converted int8 graph)
    traced on ``example``, lowered to XNNPACK, as the bytes of a ``.pte``, and which rows were
    delegated."""
    require_executorch()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(model, (example,)).run_decompositions(DECOMPOSITIONS)
    computing = {_row(n) for n in program.graph.nodes if n.op == "call_function"} - {""}
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    fallback: dict[str, Counter] = {}
    for node in edge.exported_program().graph.nodes:
        name = str(node.target)
        if node.op != "call_function" or "delegate" in name or "getitem" in name:
            continue
        fallback.setdefault(_row(node), Counter())[_op_name(node)] += 1
    order = [row for row in _rows_in_order(program) if row in computing]
    delegated = [row for row in order if row not in fallback]
    convs = _conv_precisions(edge.exported_program().graph_module)
    return edge.to_executorch().buffer, Delegation(delegated, fallback, convs)


def _rows_in_order(program: Any) -> list[str]:
    return list(dict.fromkeys(_row(n) for n in program.graph.nodes if _row(n)))


# what ExecuTorch logs to stderr as its thread pool starts (its CPU probe, cpuinfo, reading /sys
# files that a container or a VM lacks) or is resized: about the machine, not the user's program
POOL_CHATTER = re.compile(
    rb"\[cpuinfo_utils\.cpp:\d+\] |(Error|Warning) in cpuinfo: "
    rb"|\[threadpool\.cpp:\d+\] Resetting threadpool to \d+ threads"
)


def set_threads(threads: int) -> None:
    """XNNPACK's thread pool size in this process. ExecuTorch has one pool for all programs and
    resetting it frees the one that programs already loaded hold (a crash when they run next, as
    in latency's rounds of two programs), so it is reset only when the size changes. The pool
    starts here, before any program is loaded, so its start-up chatter is kept out here."""
    from executorch.extension.pybindings.portable_lib import (
        _threadpool_get_thread_count,
        _unsafe_reset_threadpool,
    )

    with stderr_without(POOL_CHATTER):
        if _threadpool_get_thread_count() != max(1, threads):
            _unsafe_reset_threadpool(max(1, threads))


def runner(
    program: Path | bytes, threads: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The program's ``forward`` as a function of one CPU batch, run by ExecuTorch's runtime."""
    require_executorch()
    from executorch.runtime import Runtime

    set_threads(threads or torch.get_num_threads())
    loaded = Runtime.get().load_program(program if isinstance(program, bytes) else str(program))
    method = loaded.load_method("forward")

    def run(x: torch.Tensor, _alive: Any = (program, loaded)) -> torch.Tensor:
        # The runtime reads the program from the buffer it was loaded from, without a copy: a
        # bytes object freed after this function returned made later calls read garbage
        # (latency's runners, whose lowering returned and dropped the bytes).
        return method.execute([x.contiguous()])[0].clone()

    return run


def shapes(program: Path) -> Shapes:
    """The shapes of the program's ``forward`` inputs and outputs as the program declares them,
    read without running it (an ExecuTorch program's tensors are planned at fixed sizes)."""
    from executorch.runtime import Runtime

    meta = Runtime.get().load_program(str(program)).metadata("forward")
    inputs = [tuple(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]
    return inputs, [tuple(meta.output_tensor_meta(i).sizes()) for i in range(meta.num_outputs())]


# --- int8 (PT2E) -------------------------------------------------------------------------------


def quantize_pt2e(
    fast: nn.Module,
    example: torch.Tensor,
    calib_images: torch.Tensor,
    *,
    exclude_rows: Iterable[str] = (),
    only_rows: Iterable[str] | None = None,
) -> nn.Module:
    """``fast`` (:func:`~..model.inference.for_xnnpack`) quantized by PT2E with the XNNPACK
    quantizer (per-channel, symmetric), calibrated on ``calib_images``: a graph module computing
    with quantize / dequantize pairs, ready for :func:`lower` (and a fake-quant reference to check
    it against).
    ``exclude_rows`` stay float; with ``only_rows`` only those rows are quantized."""
    require_executorch()
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True)
    )
    rows = rows_to_quantize(fast, exclude_rows, only_rows)
    if rows is not None:
        quantizer.set_filter_function(_in_rows(set(rows)))
    return calibrate_pt2e(fast, example, calib_images, quantizer)


def _in_rows(rows: set[str]) -> Callable[[torch.fx.Node], bool]:
    """The XNNPACK quantizer's filter for ``rows``. It asks about every node of a pattern, the
    weight and bias of a convolution too, and those carry no module stack: its own
    ``set_module_name`` therefore never matched a convolution, and rows named that way ran
    their convolutions in float. A parameter passes here; the op that reads it decides."""
    return lambda node: node.op != "call_function" or _row(node) in rows


def rows_to_quantize(
    fast: nn.Module, exclude_rows: Iterable[str], only_rows: Iterable[str] | None
) -> list[str] | None:
    """The rows to quantize (leaving rows float is quantizing every other one), or None for
    all."""
    if only_rows is None and not exclude_rows:
        return None
    rows = only_rows if only_rows is not None else [n for n, _ in fast.layers.named_children()]
    return sorted(set(rows) - set(exclude_rows))


# --- the record ---------------------------------------------------------------------------------


def _lower(fast: nn.Module, example: torch.Tensor, dynamic_batch: bool) -> Lowered:
    program, delegation = lower(fast, example)
    return Lowered(program, delegation.describe())


def _lower_int8(graph: Any, example: torch.Tensor) -> tuple[bytes, str, Counter]:
    program, delegation = lower(graph, example)
    return program, delegation.describe(), delegation.ops()


def time(model: nn.Module, x: torch.Tensor, int8: bool, loads: int = 1) -> Timed:
    """For ``latency``: the network lowered to XNNPACK as export (or quantize, calibrated on
    random inputs) does, run by ExecuTorch's runtime with as many threads as torch uses; the
    program loaded ``loads`` times, run in turn (:func:`~.record.in_turn`)."""
    if x.device.type != "cpu":
        raise ExportError("ExecuTorch runs on the CPU here (its XNNPACK backend is for CPUs)")
    require_executorch()
    fast = for_xnnpack(model)
    if int8:
        calib = torch.randn(CALIB, *x.shape[1:], generator=torch.Generator().manual_seed(0))
        fast = quantize_pt2e(fast, x[:1], calib)
    program, delegation = lower(fast, x)
    runs = [runner(program, threads=torch.get_num_threads()) for _ in range(loads)]
    kind = "int8 (PT2E)" if int8 else "fp32"
    run = in_turn([lambda r=r: r(x) for r in runs])
    return run, f"XNNPACK {kind}, {len(delegation.delegated)} rows delegated"


def load_pte(path: str | Path, threads: int | None = None) -> tuple[ProgramModel, dict]:
    """``(model, metadata)`` of a ``.pte`` written by export or quantize, checked against the
    metadata file beside it; the model runs the program in ExecuTorch's runtime on the CPU."""
    require_executorch()
    return load_program(path, RUNTIME, "ExecuTorch cannot load this program", threads)


# an int8 program's logits within this × their scale of its fake-quant graph's. ExecuTorch
# requantizes in fixed point where the graph rounds in float, and a rounding step apart compounds
# over the rows of the tests' tiny checkpoint: 0.155 measured there (once the convolutions of a
# --keep-float program were int8 at all: 0.05 held only while they ran float); a broken lowering
# (layout, scales) is off by the whole scale.
PARITY = 0.3

RUNTIME = Runtime(
    name="executorch",
    format="executorch",
    choice="executorch",
    suffix=".pte",
    metadata="sidecar",
    extra=EXTRA,
    order=30,
    require=require_executorch,
    prepare=for_xnnpack,
    lower=_lower,
    runner=runner,
    write=write_program,
    check_outputs=check_outputs,
    shapes=shapes,
    load=load_pte,
    time=time,
    quantize=pt2e(Int8(quantize_pt2e, _lower_int8, PARITY)),
    fixed_batch=True,
    signature="ET",
)
