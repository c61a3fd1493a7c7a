"""A sweep folder's own state, written and read back here only: ``sweep.json`` (what the sweep
is: its specs, grids, overrides and training settings; also the marker that makes the folder a sweep
folder) and ``measured.json`` (the latencies measured so far, reused while the latency settings
are the same). Every read checks what it finds and names the file and the way out."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import read_json, writing

SETTINGS = "sweep.json"
MEASURED = "measured.json"
MAX_STATE_BYTES = 64 << 20  # measured.json holds a few hundred bytes per variant


@dataclass(frozen=True)
class Measured:
    """One variant's latencies: median and spread (IQR) in ms per ``device backend`` column."""

    settings: str  # the latency settings they were measured with (JSON)
    latency_ms: dict[str, float | None]
    iqr_ms: dict[str, float | None]


def _load(path: Path, what: str, fix: str) -> Any:
    return read_json(path, what=what, fix=fix, max_bytes=MAX_STATE_BYTES)


SETTINGS_FIX = (
    "this file holds what the sweep in this folder is: restore it, or give the sweep another "
    "--name (or delete the folder to start it over)"
)


def read_settings(folder: Path) -> dict[str, Any] | None:
    """``sweep.json`` of ``folder`` (None if it has none), checked to be what :func:`settings`
    makes."""
    path = folder / SETTINGS
    if not path.exists():
        return None
    found = _load(path, "a sweep's settings (sweep.json)", SETTINGS_FIX)
    kinds = {"specs": list, "grids": list, "set": dict, "train": (dict, type(None))}
    if not isinstance(found, dict) or set(found) != set(kinds):
        raise UserError(
            f"damaged: not the mapping of {', '.join(kinds)}; {SETTINGS_FIX}", file=str(path)
        )
    for key, kind in kinds.items():
        value = found[key]
        strings = value.keys() if isinstance(value, dict) else value or []
        if not isinstance(value, kind) or not all(isinstance(v, str) for v in strings):
            raise UserError(
                f"damaged: {key} is not as a sweep writes it; {SETTINGS_FIX}", file=str(path)
            )
    return found


def settings(
    specs: list[str], grids: list[str], fixed: dict, training: dict[str, Any] | None
) -> dict[str, Any]:
    """What ``sweep.json`` holds: the specs, grids and overrides, and the training settings
    every variant shares (None: not trained)."""
    return {"specs": specs, "grids": grids, "set": fixed, "train": training}


def check_same(folder: Path, mine: dict[str, Any]) -> dict[str, Any]:
    """``mine``, or refused if ``folder`` holds another sweep; a ``--no-train`` rerun of a
    trained sweep only redraws it, so it takes that sweep's training settings."""
    theirs = read_settings(folder)
    if theirs is None:
        return mine
    if mine["train"] is None and theirs["train"] is not None:
        mine = {**mine, "train": theirs["train"]}
    if theirs != mine:
        raise UserError(
            f"{folder} holds another sweep ({SETTINGS} differs: specs, grids, overrides or "
            "train settings); choose another name, or repeat its command to continue it",
            field="name",
        )
    return mine


def write_settings(folder: Path, mine: dict[str, Any]) -> None:
    with writing(folder / SETTINGS) as tmp:
        tmp.write_text(json.dumps(mine, indent=2))


MEASURED_FIX = "delete it, and the latencies are measured again"


def _ms(value: Any, *, spread: bool = False) -> bool:
    """A latency as we write it: None (not measured) or a finite float, positive (a median) or
    at least 0 (a spread)."""
    if value is None:
        return True
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return ok and math.isfinite(value) and (value >= 0 if spread else value > 0) and value < 1e9


def read_measured(folder: Path) -> dict[str, Measured]:
    """``measured.json`` by variant id (empty if there is none), every value checked."""
    path = folder / MEASURED
    if not path.exists():
        return {}
    found = _load(path, "a sweep's latencies (measured.json)", MEASURED_FIX)
    if not isinstance(found, dict):
        raise UserError(f"damaged: not a mapping of variants; {MEASURED_FIX}", file=str(path))
    out = {}
    for variant, entry in found.items():
        got = entry if isinstance(entry, dict) else {}
        columns = [got.get("latency_ms"), got.get("iqr_ms", {})]
        if not (
            isinstance(got.get("settings"), str)
            and all(isinstance(c, dict) for c in columns)
            and all(_ms(v) for v in columns[0].values())
            and all(_ms(v, spread=True) for v in columns[1].values())
        ):
            raise UserError(
                f"damaged: the latencies of {variant[:80]!r} are not as a sweep writes them "
                f"(finite, positive milliseconds); {MEASURED_FIX}",
                file=str(path),
            )
        out[variant] = Measured(got["settings"], *columns)
    return out


def write_measured(folder: Path, measured: dict[str, Measured]) -> None:
    entries = {
        v: {"settings": m.settings, "latency_ms": m.latency_ms, "iqr_ms": m.iqr_ms}
        for v, m in measured.items()
    }
    with writing(folder / MEASURED) as tmp:
        tmp.write_text(json.dumps(entries, indent=1))
