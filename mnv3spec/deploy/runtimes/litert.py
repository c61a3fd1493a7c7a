"""LiteRT (TFLite) models (``.tflite``), in float or int8, converted by ``litert-torch``.

LiteRT is the runtime of the MobileNetV3 paper's phone latencies. ``litert_torch.convert`` takes
the network as :func:`~..model.inference.for_xnnpack` prepares it (BN folded, classifier a 1×1
convolution) and writes a flatbuffer that LiteRT's interpreter (``ai-edge-litert``) runs with its
default XNNPACK delegate. int8 is the converter's own path: PT2E with ``litert_torch``'s quantizer
(per-channel symmetric int8 weights, int8 activations calibrated on images), converted with that
quantizer's config. The int8 model takes and gives int8 tensors; :func:`runner` quantizes the
image and dequantizes the logits with the scale and zero point the model records, as an app does.
Each model is run back in the interpreter before it is kept; its metadata travels beside it
(:mod:`.phone`), as a ``.pte``'s does.

No converter is written here: a network the converter cannot take is refused in one paragraph
that names the converter's complaint (:func:`convert`).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import ExportError, UserError
from ...model.inference import for_xnnpack
from .native import stderr_without
from .phone import (
    CALIB,
    ProgramModel,
    calibrate_pt2e,
    check_outputs,
    first_line,
    load_program,
    pt2e,
    write_program,
)
from .record import Int8, Lowered, Runtime, Shapes, Timed, in_turn, require

EXTRA = "litert"


def require_litert(convert: bool = False) -> None:
    """Nothing, or an :class:`ExportError` naming the extra: the interpreter always, the
    converter (and torchao, for int8) when ``convert``."""
    converter = ("litert_torch", "torchao") if convert else ()
    with stderr_without(CONVERTER_CHATTER):  # litert-torch 0.10 logs through absl as imported
        require("LiteRT", EXTRA, ("ai_edge_litert.interpreter", *converter))


def convert(model: nn.Module, example: torch.Tensor, int8: bool = False) -> bytes:
    """``model`` (from :func:`~..model.inference.for_xnnpack`, or its PT2E graph from
    :func:`quantize_pt2e` with ``int8``) converted by ``litert_torch`` at ``example``'s shape,
    as ``.tflite`` bytes."""
    require_litert(convert=True)
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    # the converter reads from the quantizer only whether it is static or dynamic
    config = QuantConfig(pt2e_quantizer=_quantizer()) if int8 else None
    try:
        with (
            stderr_without(CONVERTER_CHATTER),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            return bytes(
                litert_torch.convert(model, (example,), quant_config=config).model_content()
            )
    except Exception as e:  # the converter raises many types; its message names the op
        raise ExportError(
            f"litert-torch cannot convert this network ({first_line(e)}); export it to "
            "ExecuTorch or ONNX instead"
        ) from None


# what the converter's C++ logs to stderr (absl's INFO lines: op counts, and the notice that
# logging has not been set up), whatever the network
CONVERTER_CHATTER = re.compile(rb"I\d{4} \d\d:\d\d:|WARNING: All log messages before absl::")


def _quantizer() -> Any:
    """litert-torch's PT2E quantizer, per-channel symmetric int8 for every op it quantizes."""
    from litert_torch.quantize import pt2e_quantizer as pq

    return pq.PT2EQuantizer().set_global(_config())


def _config() -> Any:
    from litert_torch.quantize import pt2e_quantizer as pq

    return pq.get_symmetric_quantization_config(is_per_channel=True)


ROWS_REFUSED = (
    "litert-torch's quantizer cannot leave rows in float here (its module-name filter matches "
    "nothing in torch 2.14's graphs), so tflite quantizes every row; quantize for executorch to "
    "keep rows in float or to measure each row's sensitivity"
)


def quantize_pt2e(
    fast: nn.Module,
    example: torch.Tensor,
    calib_images: torch.Tensor,
    *,
    exclude_rows: Iterable[str] = (),
    only_rows: Iterable[str] | None = None,
) -> nn.Module:
    """``fast`` quantized by PT2E with ``litert_torch``'s quantizer (per-channel, symmetric, every
    row) and calibrated on ``calib_images``: the fake-quant graph that :func:`convert` takes with
    ``int8``. Rows cannot be chosen (:data:`ROWS_REFUSED`)."""
    require_litert(convert=True)
    if exclude_rows or only_rows is not None:
        raise UserError(ROWS_REFUSED, field="keep_float")
    return calibrate_pt2e(fast, example, calib_images, _quantizer(), fold_quantize=False)


def runner(
    model: Path | bytes, threads: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's signature as a function of one CPU batch of float images, run by LiteRT's
    interpreter with its XNNPACK delegate; an int8 model's input is quantized and its output
    dequantized with the parameters it records."""
    require_litert()
    from ai_edge_litert.interpreter import Interpreter

    source = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    interpreter = Interpreter(**source, num_threads=threads or torch.get_num_threads())
    with stderr_without(DELEGATE_CHATTER):
        interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()

    def run(x: torch.Tensor) -> torch.Tensor:
        interpreter.set_tensor(inp["index"], _to(inp, x.numpy()))
        interpreter.invoke()
        return torch.from_numpy(_from(out, interpreter.get_tensor(out["index"])))

    return run


# what LiteRT logs to stderr as it applies its XNNPACK delegate, once per model loaded
DELEGATE_CHATTER = re.compile(rb"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.")


def shapes(model: Path) -> Shapes:
    """The shapes of the model's inputs and outputs as the model declares them, read without
    running it."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    return _sizes(interpreter.get_input_details()), _sizes(interpreter.get_output_details())


def _sizes(details: list[dict]) -> list[tuple[int, ...]]:
    return [tuple(int(n) for n in d["shape"]) for d in details]


def _to(detail: dict, x: np.ndarray) -> np.ndarray:
    """A float array as the input tensor's type (quantized if it is an integer tensor)."""
    if detail["dtype"] == np.float32:
        return np.ascontiguousarray(x, dtype=np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _from(detail: dict, y: np.ndarray) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.copy()
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def op_counts(model: bytes, float_only: bool = False) -> Counter:
    """Op name → count in the model's graph (``CONV_2D``, ``HARD_SWISH``, …); with
    ``float_only``, only the ops computing in float (what an int8 model left unquantized)."""
    require_litert()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    counts: Counter = Counter()
    for op in interpreter._get_ops_details():
        computes_float = op["op_name"] not in ("DEQUANTIZE", "QUANTIZE") and any(
            dtypes.get(i) == np.float32 for i in op["outputs"]
        )
        if computes_float or not float_only:
            counts[op["op_name"]] += 1
    return counts


def load_tflite(path: str | Path, threads: int | None = None) -> tuple[ProgramModel, dict]:
    """``(model, metadata)`` of a ``.tflite`` written by export or quantize, checked against the
    metadata file beside it; the model runs in LiteRT's interpreter on the CPU."""
    require_litert()
    return load_program(path, RUNTIME, "LiteRT cannot load this model", threads)


# --- the record ---------------------------------------------------------------------------------


def _lower(fast: nn.Module, example: torch.Tensor, dynamic_batch: bool) -> Lowered:
    program = convert(fast, example)
    ops = sum(op_counts(program).values())
    return Lowered(program, f"{ops} ops, run by LiteRT's XNNPACK delegate")


def _lower_int8(graph: Any, example: torch.Tensor) -> tuple[bytes, str, Counter]:
    model = convert(graph, example, int8=True)
    ops, floats = op_counts(model), op_counts(model, float_only=True)
    left = ", ".join(f"{op}×{n}" for op, n in floats.most_common()) or "none"
    return model, f"{sum(ops.values())} ops run by LiteRT; computing in float: {left}", floats


def time(model: nn.Module, x: torch.Tensor, int8: bool, loads: int = 1) -> Timed:
    """For ``latency``: the network converted by litert-torch as export (or quantize, calibrated
    on random inputs) does, run by LiteRT's interpreter (XNNPACK delegate) with torch's thread
    count; the model loaded ``loads`` times, run in turn (:func:`~.record.in_turn`)."""
    if x.device.type != "cpu":
        raise ExportError("LiteRT runs on the CPU here (its XNNPACK delegate is for CPUs)")
    require_litert(convert=True)
    fast = for_xnnpack(model)
    if int8:
        calib = torch.randn(CALIB, *x.shape[1:], generator=torch.Generator().manual_seed(0))
        fast = quantize_pt2e(fast, x[:1], calib)
    converted = convert(fast, x, int8=int8)
    runs = [runner(converted, threads=torch.get_num_threads()) for _ in range(loads)]
    run = in_turn([lambda r=r: r(x) for r in runs])
    return run, f"LiteRT XNNPACK {'int8 (PT2E)' if int8 else 'fp32'}"


# an int8 program's logits within this × their scale of its fake-quant graph's: LiteRT
# requantizes in fixed point where the graph rounds in float, 0.075 measured on the tests' tiny
# checkpoint; a broken lowering (layout, scales) is off by the whole scale.
PARITY = 0.15

RUNTIME = Runtime(
    name="litert",
    format="tflite",
    choice="tflite",
    suffix=".tflite",
    metadata="sidecar",
    extra=EXTRA,
    order=40,
    require=lambda: require_litert(convert=True),
    prepare=for_xnnpack,
    lower=_lower,
    runner=runner,
    write=write_program,
    check_outputs=check_outputs,
    shapes=shapes,
    load=load_tflite,
    time=time,
    quantize=pt2e(Int8(quantize_pt2e, _lower_int8, PARITY)),
    rows_refused=ROWS_REFUSED,
    fixed_batch=True,
    signature="TFL3",
)
