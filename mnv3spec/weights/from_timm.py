"""A timm MobileNetV3 → a spec, read off the instantiated model and checked on the spot.

Walking the built model (stem, ``blocks``, head) rather than decoding timm's arch strings reads
what timm actually built: depth multipliers, ``fix_stem``, rounding and padding already applied.
Every feature the spec format cannot say is refused by name, never approximated.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from torch import nn

from ..errors import UserError
from ..files import check_output, read_regular, writing
from ..model.builder import build
from ..model.summary import count_macs, summarize
from ..ops.rules import se_channels
from ..spec.limits import MAX_SPEC_BYTES
from ..spec.load import load_spec
from . import timm as timm_weights
from .timm import ACTIVATIONS, parse_source, same_function, timm_model

MARK = "# Written by `mnv3spec import"  # the first line of every spec this module writes
HASH = "content sha256 "  # in that line: the hash of the lines after it, as written


@dataclass(frozen=True)
class Imported:
    """What ``import`` wrote and how it checked it."""

    path: Path
    name: str
    params: int
    macs: int
    max_diff: float
    size: int


def _nl(act: nn.Module, where: str) -> str:
    if type(act) not in ACTIVATIONS:
        raise UserError(f"{where} uses the activation {type(act).__name__}")
    return ACTIVATIONS[type(act)]


def _conv(conv: nn.Conv2d) -> tuple[int, int]:
    return conv.kernel_size[0], conv.stride[0]


def _se(block: nn.Module, exp: int, where: str) -> bool:
    se = block.se
    if isinstance(se, nn.Identity):
        return False
    squeeze, act, gate = se.conv_reduce.out_channels, type(se.act1), type(se.gate).__name__
    if squeeze != se_channels(exp) or act is not nn.ReLU or gate.lower() != "hardsigmoid":
        raise UserError(
            f"{where}: its squeeze-and-excite is {squeeze} channels, {act.__name__}, {gate}; the "
            f"format's is make_divisible({exp} // 4) = {se_channels(exp)}, ReLU, Hardsigmoid"
        )
    return True


def _block_row(block: nn.Module, in_ch: int, where: str) -> tuple[dict, int]:
    kind = type(block).__name__
    if kind == "ConvBnAct":
        k, s = _conv(block.conv)
        out = block.conv.out_channels
        if block.has_skip or block.conv.bias is not None:
            raise UserError(f"{where}: a conv with a shortcut or a bias")
        return {"op": "conv2d", "k": k, "out": out, "nl": _nl(block.bn1.act, where), "s": s}, out
    if kind == "DepthwiseSeparableConv":
        dw, project = block.conv_dw, block.conv_pw
    elif kind == "InvertedResidual":
        dw, project = block.conv_dw, block.conv_pwl
        if block.conv_pw.out_channels == in_ch:
            raise UserError(
                f"{where}: an expansion conv that keeps the channels (a bneck skips it)"
            )
    else:
        raise UserError(f"{where} is a {kind}, a block the format does not have")
    k, s = _conv(dw)
    exp, out = dw.out_channels, project.out_channels
    if block.has_skip != (s == 1 and in_ch == out) or getattr(block, "conv_s2d", None):
        raise UserError(f"{where}: no shortcut where a bneck has one (timm's noskip)")
    row = {"op": "bneck", "k": k, "exp": exp, "out": out, "se": _se(block, exp, where)}
    return {**row, "nl": _nl(block.bn1.act, where), "s": s}, out


def rows_of(model: nn.Module) -> list[dict]:
    """The spec rows of a built timm MobileNetV3, one per block as the shipped specs write them."""
    if type(model).__name__ != "MobileNetV3" or not isinstance(model.norm_head, nn.Identity):
        raise UserError(f"it builds a {type(model).__name__} with a normalised head")
    k, s = _conv(model.conv_stem)
    ch = model.conv_stem.out_channels
    rows = [{"op": "conv2d", "k": k, "out": ch, "nl": _nl(model.bn1.act, "the stem"), "s": s}]
    for i, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            row, ch = _block_row(block, ch, f"blocks.{i}.{j}")
            rows.append(row)
    if model.conv_head.bias is None:
        raise UserError("the head conv has neither bias nor BN (an NBN conv has a bias)")
    head = {"op": "conv2d", "k": 1, "out": model.conv_head.out_channels, "fixed": True}
    rows += [{"op": "pool"}, {**head, "bn": False, "nl": _nl(model.act2, "the head")}]
    rows += [{"op": "dropout", "p": "$dropout"}]
    rows += [{"op": "conv2d", "k": 1, "out": "$num_classes", "bn": False, "fixed": True}]
    return rows


def spec_text(model: nn.Module, name: str) -> str:
    """The YAML of the spec of timm's MobileNetV3 ``model`` (built as ``name``) at width 1: every
    channel as timm built it."""
    try:
        rows = rows_of(model)
    except UserError as e:
        raise UserError(f"the spec format cannot say timm's {name}: {e.message}") from None
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    same = any(type(m).__name__ == "Conv2dSame" for m in model.modules())
    lines = [
        "# Every channel as timm builds it; `width` scales them from there. Check: import again.",
        f"name: {name}",
        f"source: timm {_timm_version()}, {name}",
        "params:",
        "  width: 1.0",
        f"  num_classes: {model.num_classes}",
        f"  dropout: {float(model.drop_rate)}      # timm's drop_rate (its recipes train with 0.2)",
        "  resolution: 224",
        "  divisor: 8",
        f"  bn_momentum: {_float(bn.momentum)}",
        f"  bn_eps: {_float(bn.eps)}",
        f"  padding: {'same' if same else 'symmetric'}",
        "layers:",
    ]
    lines += [f"  - {{{', '.join(f'{k}: {_yaml(v)}' for k, v in r.items())}}}" for r in rows]
    body = "\n".join(lines) + "\n"
    first = f"{MARK} timm:{name}` (timm's {name}, read off the built model; {HASH}{_hash(body)})."
    return f"{first}\n{body}"


def _hash(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]


def unedited(text: str) -> bool:
    """Whether ``text`` is a spec ``import`` wrote, exactly as it wrote it: its first line is our
    marker, and the hash in it is that of the rest (an edit anywhere changes it)."""
    first, _, body = text.partition("\n")
    found = re.search(rf"{HASH}([0-9a-f]{{16}})\)\.$", first)
    return first.startswith(MARK) and found is not None and found[1] == _hash(body)


def importable_names() -> list[str]:
    """timm's MobileNetV3s whose spec ``import`` can write (each built on the meta device, no
    weights, and read as :func:`rows_of` reads it): the names to suggest."""
    import torch

    timm, names = timm_weights.import_timm(), []
    for name in timm.list_models("*mobilenetv3*"):
        with torch.device("meta"):
            model = timm.create_model(name)
        try:
            rows_of(model)
        except UserError:
            continue
        names.append(name)
    return names


def _yaml(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _float(x: float) -> str:
    """A float YAML 1.1 reads as one too: ``1.0e-05``, not ``1e-05`` (a string there)."""
    mantissa, e, exponent = repr(float(x)).partition("e")
    return f"{mantissa if '.' in mantissa else mantissa + '.0'}{e}{exponent}"


def _timm_version() -> str:
    import timm

    return timm.__version__


def check_out_path(out: str | Path, force: bool) -> Path:
    """``out`` if ``import`` may write it: a new file, a spec ``import`` wrote, or (``force``)
    any file."""
    path = check_output(out, "spec", suffix=".yaml", field="out")
    if path.exists() and path.stat().st_size and not force:
        try:  # bytes as they are: text mode would fold an edit to CRLF line ends back to LF
            raw = read_regular(path, MAX_SPEC_BYTES, what="a spec")
            ours = unedited(raw.decode("utf-8", errors="replace"))
        except UserError:
            ours = False
        if not ours:
            raise UserError(
                "exists and is not a spec import wrote, or was edited since; it is not replaced: "
                "give another name, or force the overwrite",
                file=str(path),
                field="out",
            )
    return path


def import_timm(source: str, out: str | Path, *, force: bool = False, size: int = 64) -> Imported:
    """Write the spec of ``timm:NAME`` to ``out``, after checking it: the same parameters,
    multiply-adds and (timm's random weights loaded, BN statistics randomised) outputs."""
    path = check_out_path(out, force)
    try:
        name, _ = parse_source(source)
        theirs = timm_model(name)
        text = spec_text(theirs, name)
    except UserError as e:  # say which names would work, not timm's whole MobileNetV3 family
        message = e.message.split("; its MobileNetV3s:")[0]
        raise UserError(
            f"{message}; import takes: {', '.join(importable_names())}", field=e.field
        ) from None
    spec = load_spec(yaml.safe_load(text))
    ours = build(spec).eval()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    macs, their_macs = summarize(ours).macs, count_macs(theirs, spec.resolution)["Global"]
    diff = same_function(ours, theirs, size)
    if (n_ours, macs) != (n_theirs, their_macs) or diff > 1e-9:
        raise UserError(
            f"the spec read off timm's {name} is not the same network: {n_ours:,} vs {n_theirs:,} "
            f"parameters, {macs:,} vs {their_macs:,} multiply-adds, outputs differ by {diff:.1e}"
        )
    with writing(path, field="out") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Imported(path, name, n_ours, macs, diff, size)
