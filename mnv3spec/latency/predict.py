"""Latency predicted from a look-up table of spec rows (the idea of nn-Meter, Zhang et al. 2021,
with a whole spec row as the kernel).

``latency --table FILE.csv`` times each distinct row of each network once — its operator, input
and output shape, kernel, stride, expansion, SE, activation, BN, repeats, on one device, backend,
batch and thread count — alone, in the same alternating rounds as the whole network. The whole
network's median minus the sum of its rows' medians is the fixed overhead of the call (the
Sequential, the flatten, the timer), kept as an ``(overhead)`` row per network timed.

A prediction is the sum of the network's row medians plus the median of those overhead rows.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..errors import UserError
from ..files import check_output, read_regular, writing
from ..model.builder import SpecNet, build
from ..model.summary import describe, row_features
from ..spec.load import load_spec
from . import measure


class Key(NamedTuple):
    """A row of the look-up table: what it was timed on (device, backend, batch and the thread
    count), then what its latency depends on (the operator, its shapes and its settings)."""

    device: str
    backend: str
    batch: str
    threads: str
    op: str
    input: str
    output: str
    k: str
    s: str
    exp: str
    se: str
    nl: str
    bn: str
    n: str
    p: str

    @property
    def timed_on(self) -> tuple[str, str, str, str]:
        return self.device, self.backend, self.batch, self.threads


KEY = Key._fields
COLUMNS = (*KEY, "median_ms", "iqr_ms", "example")
OVERHEAD = "(overhead)"
BACKENDS = ("eager", "channels_last")  # the row-by-row ones: compiled and ONNX fuse across rows
METHOD = (
    "predicted: sum of the rows' medians from the look-up table + the table's median fixed "
    "overhead (whole network − sum of its rows, measured per network timed)"
)

MAX_TABLE_BYTES = 64 << 20  # a table of every row of a thousand networks is about 1 MB
MAX_MS = 1e6  # a row or an overhead of more than 1,000 s is not a measurement of one call
FIX = "this table is written by latency --table: restore it, or delete it to time the rows again"


@dataclass
class Table:
    """Rows of the look-up table by key; ``(overhead)`` rows hold one network each."""

    path: Path
    rows: dict[Key, dict[str, str]] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)  # the user's own columns, kept as they are

    def add(self, key: Key, median: float, iqr: float, example: str) -> None:
        values = {"median_ms": f"{median:.6g}", "iqr_ms": f"{iqr:.6g}", "example": example}
        self.rows[key] = {c: "" for c in self.extra} | dict(zip(KEY, key, strict=True)) | values

    def iqr(self, key: Key) -> float | None:
        row = self.rows.get(key)
        return float(row["iqr_ms"]) if row else None

    def median(self, key: Key) -> float | None:
        row = self.rows.get(key)
        return float(row["median_ms"]) if row else None

    def overhead(self, like: Key) -> float | None:
        """Median overhead over the networks timed as ``like`` was (device … threads)."""
        values = [
            float(r["median_ms"])
            for k, r in self.rows.items()
            if k.timed_on == like.timed_on and k.op == OVERHEAD
        ]
        return statistics.median(values) if values else None


def read_table(path: str | Path, *, field: str = "table", must_exist: bool = False) -> Table:
    """The table at ``path`` (an empty one if there is no such file yet, or it is empty, unless
    ``must_exist``), every row checked: all columns present, batch and threads whole numbers,
    medians and spreads finite milliseconds (a row's positive; a network's overhead may be
    negative, the timer's noise), each key once. Columns it does not know are kept."""
    path = Path(path)
    table = Table(path)
    if not path.exists() and not must_exist:
        return table
    raw = read_regular(path, MAX_TABLE_BYTES, what="a latency table (CSV)", field=field)
    if not raw and not must_exist:
        return table
    where = {"file": str(path), "field": field}
    try:
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8"), newline=""))
        names = reader.fieldnames or []
        missing = [c for c in COLUMNS if c not in names]
        if missing or len(set(names)) != len(names):
            what = f"no column {', '.join(missing)}" if missing else "a column named twice"
            raise UserError(
                f"not a latency table ({what}); time rows into a new table to make one", **where
            )
        table.extra = [c for c in names if c not in COLUMNS]
        for row in reader:
            key = _checked_row(row, reader.line_num, where)
            if key in table.rows:
                raise UserError(
                    f"the row of {key.op} {key.input}→{key.output} appears twice; {FIX}",
                    line=reader.line_num,
                    **where,
                )
            table.rows[key] = row
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read as CSV ({e}); {FIX}", **where) from None
    return table


def _checked_row(row: dict, line: int, where: dict) -> Key:
    """The key of one table row, after checking its values."""
    if None in row or any(v is None for v in row.values()):
        raise UserError(
            f"a row of {len(row)} cells where the header has more or fewer; {FIX}",
            line=line,
            **where,
        )
    for name in ("batch", "threads"):
        if not row[name].isdigit() or int(row[name]) < 1:
            raise UserError(
                f"{name} {row[name]!r} is not a whole number >= 1; {FIX}", line=line, **where
            )
    overhead = row["op"] == OVERHEAD
    for name in ("median_ms", "iqr_ms"):
        try:
            value = float(row[name])
        except ValueError:
            value = math.nan
        low = -MAX_MS if overhead and name == "median_ms" else 0
        if not (math.isfinite(value) and low <= value <= MAX_MS) or (
            value == 0 and name == "median_ms" and not overhead
        ):
            allowed = "finite" if low else "a positive number of"
            raise UserError(
                f"{name} {row[name]!r} is not {allowed} milliseconds; {FIX}", line=line, **where
            )
    return Key(*(row[k] for k in KEY))


def write_table(table: Table) -> None:
    """The table, sorted by key, with the user's own columns after ours."""
    with writing(table.path, field="table") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, [*COLUMNS, *table.extra])
        writer.writeheader()
        writer.writerows(sorted(table.rows.values(), key=lambda r: tuple(r[k] for k in KEY)))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "/".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def timed_on(device: str, backend: str, batch: int) -> dict[str, str]:
    """The first fields of a key: what the rows were timed on, this process's threads included."""
    threads = str(torch.get_num_threads())
    return {"device": device, "backend": backend, "batch": str(batch), "threads": threads}


def row_keys(model: SpecNet, device: str, backend: str, batch: int) -> list[Key]:
    """One key per spec row of ``model``: what its latency depends on."""
    keys = []
    for p in model.plans:
        f = row_features(p)
        shapes = {
            "input": "x".join(map(str, p.in_shape)),
            "output": "x".join(map(str, p.out_shape)),
        }
        rest = {k: _cell(f[k]) for k in ("k", "s", "exp", "se", "nl", "bn", "n", "p")}
        keys.append(Key(**timed_on(device, backend, batch), op=f["op"], **shapes, **rest))
    return keys


def time_rows(
    model: SpecNet,
    table: Table,
    *,
    device: str,
    backend: str,
    batch: int,
    runs: int,
    warmup: int,
    whole: bool = True,
) -> int:
    """Time the rows of ``model`` the table lacks (and with ``whole`` the network, for one more
    overhead row), all in the same alternating rounds; returns how many rows were timed."""
    if backend not in BACKENDS:
        raise UserError(
            f"a latency table times rows one by one, so only {', '.join(BACKENDS)}; "
            f"'{backend}' optimises across rows",
            field="backends",
        )
    model = model.eval().to(device)
    keys = row_keys(model, device, backend, batch)
    size, channels = model.spec.resolution, model.spec.in_channels
    runners: dict[Any, Callable] = {}
    for p, key in zip(model.plans, keys, strict=True):
        if table.median(key) is None and key not in runners:
            module = model.layers.get_submodule(p.name)
            x = torch.randn(batch, *p.in_shape, device=device)
            runners[key] = measure.prepare(module, backend, x)[0]
    if whole:
        x = torch.randn(batch, channels, size, size, device=device)
        runners[OVERHEAD] = measure.prepare(model, backend, x)[0]
    if not runners:
        return 0
    times = measure.time_rounds(runners, runs, warmup, device)
    stats = {k: measure.percentiles(v) for k, v in times.items()}
    for p, key in zip(model.plans, keys, strict=True):
        if key in stats and table.median(key) is None:
            table.add(key, stats[key][0], stats[key][2], describe(row_features(p)))
    if whole:
        name = f"{model.spec.name} width {model.spec.width:g} at {size}px"
        row_sum = sum(stats[k][0] if k in stats else table.median(k) for k in keys)
        empty = dict.fromkeys(KEY[6:], "")
        key = Key(**timed_on(device, backend, batch), op=OVERHEAD, input=name, **empty)
        table.add(key, stats[OVERHEAD][0] - row_sum, stats[OVERHEAD][2], f"whole {name}")
    return len(runners) - whole


def predict(
    model: SpecNet, table: Table, device: str, backend: str, batch: int
) -> tuple[float, float]:
    """Predicted median latency (ms) of ``model`` (its rows' medians + the fixed overhead), and
    its spread: the sum of its rows' IQRs (as if the rows varied together, the worst case)."""
    keys = row_keys(model, device, backend, batch)
    missing = [k for k in keys if table.median(k) is None]
    if missing:
        raise UserError(
            f"{len(missing)} rows are not in the table (first: {missing[0].op} "
            f"{missing[0].input}→{missing[0].output} k{missing[0].k}, {missing[0].threads} "
            "threads); time "
            "them into it with latency SPEC --table (with the same --set)",
            file=str(table.path),
        )
    overhead = table.overhead(keys[0])
    if overhead is None:
        raise UserError(
            f"no overhead measured for {keys[0].device} {keys[0].backend}, batch {batch}, "
            f"{keys[0].threads} threads; time a whole network into the table",
            file=str(table.path),
        )
    median = sum(table.median(k) for k in keys) + overhead
    if median <= 0:
        raise UserError(
            f"the prediction, {median:.3g} ms, is not positive: the table's overhead rows are "
            "noise larger than the rows; time more networks into it, with more runs",
            file=str(table.path),
        )
    return median, sum(table.iqr(k) for k in keys)


def make_table(
    path: str | Path,
    specs: Iterable[str | Path] | None,
    *,
    widths: tuple[float, ...],
    devices: list[str] | None,
    backends: tuple[str, ...],
    batch: int,
    resolution: int | None,
    overrides: dict[str, Any],
    runs: int,
    warmup: int,
    progress: Callable[[str], None] = lambda line: None,
) -> str:
    """``latency --table``: add every network's missing rows and its overhead to the table at
    ``path`` (made if absent, kept otherwise); returns a summary line."""
    check_output(path, "csv", inputs=specs or (), suffix=".csv", field="table")
    devices = devices or measure.default_devices()
    bad = [d for d in devices if d not in measure.DEVICES]
    if bad or ("cuda" in devices and not torch.cuda.is_available()):
        raise UserError(f"cannot time on {', '.join(bad) or 'cuda'} here", field="devices")
    if "width" in overrides:
        raise UserError("give widths instead (one network per width)", field="set width")
    table = read_table(path)
    before = len(table.rows)
    for source in specs or measure.DEFAULT_SPECS:
        spec = load_spec(source, **overrides)
        for width in widths:
            settings = {"width": width, **({"resolution": resolution} if resolution else {})}
            model = build(spec.derive(**settings))
            for device in devices:
                for backend in backends:
                    progress(f"timing {spec.name} width {width:g} on {device} ({backend})")
                    time_rows(
                        model,
                        table,
                        device=device,
                        backend=backend,
                        batch=batch,
                        runs=runs,
                        warmup=warmup,
                    )
    write_table(table)
    added = len(table.rows) - before
    return f"wrote {path}: {len(table.rows)} rows ({added} new), batch {batch}, {runs} runs each"
