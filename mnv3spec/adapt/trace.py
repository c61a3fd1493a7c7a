"""``trace.csv``: the search step by step. One row per proposal (its edit, its latency ± spread
and the machine's load — measured whole where ``measured`` is 1, predicted from its rows with
no spread where 0 —, held-out top-1 and loss after the fine-tune (0 where it failed), the
change in each and the score: −ΔLoss (or ΔTop-1, ``--score top1``) / |ΔLatency|), the chosen
one marked; step 0 is the start. With ``--finetune-at-most``, a proposal passed over before
its fine-tune has ``tuned`` 0, no run, and the held-out figures of the weights it inherited
(:func:`~.search.screened`). A resumed
search takes its path from the chosen rows (each holds the edits so far, as JSON) and its run
folders, so the file is read back field by field and a damaged one refused."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import read_regular, writing
from .moves import Edits

TRACE = "trace.csv"
FIX = "restore it, or delete the folder to start the search over"
MAX_TRACE_BYTES = 64 << 20


FIGURES = ("latency_ms", "spread_ms", "load", "holdout_top1", "d_top1", "d_ms", "score",
           "holdout_loss", "d_loss")  # fmt: skip


@dataclass(frozen=True)
class TraceRow:
    step: int
    edit: str  # what changed, in words ("start" at step 0)
    chosen: bool
    latency_ms: float
    spread_ms: float
    load: float
    holdout_top1: float
    d_top1: float  # against the step's parent
    d_ms: float  # the latency it saves (positive)
    score: float  # -d_loss / d_ms, or d_top1 / d_ms (the search's score)
    run: str  # its run folder, relative to the adapt folder
    edits: Edits  # every edit so far, this one included
    measured: bool = True  # its latency measured whole (else predicted from its rows)
    holdout_loss: float = 0.0
    d_loss: float = 0.0  # against the step's parent
    tuned: bool = True  # fine-tuned (else screened out: figures of its inherited weights, no run)

    def cells(self) -> dict[str, Any]:
        cells = dataclasses.asdict(self)
        cells["chosen"] = int(self.chosen)
        cells["measured"] = int(self.measured)
        cells["tuned"] = int(self.tuned)
        cells["edits"] = json.dumps(self.edits, sort_keys=True)
        for k in FIGURES:
            cells[k] = f"{cells[k]:.4f}"
        return cells


HEADER = [f.name for f in dataclasses.fields(TraceRow)]
UNSCREENED = HEADER[:-1]  # a trace written before --finetune-at-most: every proposal fine-tuned


def _parse(cells: dict[str, str]) -> TraceRow:
    """One row as written, or ValueError."""
    values: dict[str, Any] = {"edit": cells["edit"], "run": cells["run"]}
    values["step"] = int(cells["step"])
    values["chosen"] = {"0": False, "1": True}[cells["chosen"]]
    values["measured"] = {"0": False, "1": True}[cells["measured"]]
    values["tuned"] = {"0": False, "1": True}[cells.get("tuned", "1")]
    for k in FIGURES:
        values[k] = float(cells[k])
        if not math.isfinite(values[k]):
            raise ValueError(k)
    edits = json.loads(cells["edits"])
    if not isinstance(edits, dict) or not all(isinstance(v, dict) for v in edits.values()):
        raise ValueError("edits")
    if values["step"] < 0 or values["latency_ms"] <= 0:
        raise ValueError("step")
    if bool(values["run"]) != values["tuned"]:  # a fine-tune has its run; a screened row none
        raise ValueError("run")
    if Path(values["run"]).is_absolute() or ".." in Path(values["run"]).parts:
        raise ValueError("run")
    return TraceRow(**values, edits=edits)


def read(folder: Path) -> list[TraceRow]:
    """The rows of ``folder/trace.csv`` (none if absent), checked: the header, every field, and
    one chosen row per step, the steps in order from 0."""
    path = folder / TRACE
    if not path.exists():
        return []
    raw = read_regular(path, MAX_TRACE_BYTES, what="adapt's trace (trace.csv)")
    try:
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
        if reader.fieldnames not in (HEADER, UNSCREENED):
            raise ValueError("header")
        rows = [_parse(cells) for cells in reader]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(
            f"damaged: not a trace as adapt writes it ({e}); {FIX}", file=str(path)
        ) from None
    steps = [r.step for r in rows if r.chosen]
    unmeasured = any(r.chosen and not (r.measured and r.tuned) for r in rows)
    if steps != list(range(len(steps))) or any(r.step >= len(steps) for r in rows) or unmeasured:
        raise UserError(
            f"damaged: the steps are not 0, 1, 2... each with one chosen row, measured and "
            f"fine-tuned; {FIX}",
            file=str(path),
        )
    return rows


def write(folder: Path, rows: list[TraceRow]) -> None:
    with writing(folder / TRACE) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HEADER)
        w.writeheader()
        w.writerows(r.cells() for r in rows)


def path(rows: list[TraceRow]) -> list[TraceRow]:
    """The chosen row of each step, in order."""
    return [r for r in rows if r.chosen]
