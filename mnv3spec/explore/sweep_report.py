"""What a sweep shows: ``sweep.csv``, the table printed at the end, and ``pareto.png`` in the manner
of Figure 1 of the MobileNetV3 paper (accuracy against latency and against multiply-adds, one colour
per spec, the Pareto front drawn and labelled)."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import writing
from ..text import text_table
from .grid import text

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .results import Result, Sweep

MAX_LABELS = 8
Point = tuple[float, float, "Result"]
CSV_START = (
    b"variant,spec,"  # the first bytes of every sweep.csv: a file that lacks them is not ours
)


def pareto_front(points: list[Point], *, more_x_is_better: bool = False) -> list[Point]:
    """Points no other point beats on both axes: higher y, and lower x (or higher with
    ``more_x_is_better``); sorted by x."""
    sign = -1 if more_x_is_better else 1
    ordered = sorted(points, key=lambda p: (sign * p[0], -p[1]))
    front, best = [], float("-inf")
    for p in ordered:
        if p[1] > best:
            front.append(p)
            best = p[1]
    return sorted(front, key=lambda p: p[0])


def _panel(
    ax: Axes,
    points: list[Point],
    colours: dict[str, str],
    xlabel: str,
    ylabel: str,
    front: list[Point],
    *,
    xerr: Callable[[Point], float] | None = None,
    yerr: Callable[[Point], float] | None = None,
) -> None:
    for spec, colour in colours.items():
        mine = [p for p in points if p[2].variant.spec_name == spec]
        _scatter(ax, mine, spec, colour, xerr=xerr, yerr=yerr)
    _front(ax, front)
    ax.margins(x=0.14, y=0.08)  # room for the labels of the front
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.25, lw=0.6)
    ax.spines[["top", "right"]].set_visible(False)


def _scatter(
    ax: Axes,
    points: list[Point],
    spec: str,
    colour: str,
    *,
    xerr: Callable[[Point], float] | None,
    yerr: Callable[[Point], float] | None,
) -> None:
    """One spec's points, with the latency's spread: its IQR, a bar centred on the median."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    style = {"alpha": 0.85, "edgecolors": "white", "linewidths": 0.6, "zorder": 3}
    ax.scatter(xs, ys, s=28, color=colour, label=spec, **style)
    if xerr or yerr:
        spread = [xerr(p) if xerr else yerr(p) for p in points]
        bars = {"xerr" if xerr else "yerr": [[e / 2 for e in spread]] * 2}
        style = {"elinewidth": 0.8, "alpha": 0.6, "zorder": 2}
        ax.errorbar(xs, ys, fmt="none", ecolor=colour, **style, **bars)


def _front(ax: Axes, front: list[Point]) -> None:
    """The Pareto front as a line, every point of it labelled (every step-th of a long one)."""
    xs, ys = [p[0] for p in front], [p[1] for p in front]
    ax.plot(xs, ys, "-", color="0.25", lw=1.1, zorder=2, label="Pareto front")
    step = max(1, -(-len(front) // MAX_LABELS))
    for i, (x, y, r) in enumerate(front[::step]):
        ax.annotate(
            r.variant.label or r.variant.spec_name,
            (x, y),
            fontsize=6.5,
            xytext=(5, -9 if i % 2 else 4),
            textcoords="offset points",
            color="0.15",
        )


def plot(s: Sweep, path: Path) -> None:
    """Trained: top-1 against latency (the first device and backend) and against MAdds.
    Not trained: latency against MAdds, the front being the most MAdds for their latency."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: no display, no global state

    column = s.settings.columns()[0]
    lat_label = f"latency, {column}, batch {s.settings.batch} (ms; bars: IQR)"

    def spread(p: Point) -> float:
        return p[2].iqr_ms.get(column) or 0.0

    if s.settings.predict:
        lat_label = f"predicted {lat_label}"
    ok = [r for r in s.results if r.macs is not None and not r.error]
    specs = list(dict.fromkeys(r.variant.spec_name for r in s.results))
    palette = colormaps["tab10"].colors
    colours = {spec: palette[i % len(palette)] for i, spec in enumerate(specs)}
    trained = s.trained and any(r.top1 is not None for r in ok)
    fig = Figure(figsize=(10, 4.2) if trained else (6, 4.4), dpi=100)
    if trained:
        left, right = fig.subplots(1, 2, sharey=True)
        with_lat = [(r.latency_ms.get(column), r.top1, r) for r in ok if r.top1 is not None]
        with_lat = [p for p in with_lat if p[0] is not None]
        front = pareto_front(with_lat)
        _panel(left, with_lat, colours, lat_label, "top-1 (%)", front, xerr=spread)
        with_macs = [(r.macs / 1e6, r.top1, r) for r in ok if r.top1 is not None]
        _panel(right, with_macs, colours, "multiply-adds (millions)", "", pareto_front(with_macs))
        left.legend(fontsize=8, frameon=False, loc="lower right")
        fig.suptitle("validation top-1 against latency and multiply-adds", fontsize=11)
    else:
        ax = fig.subplots()
        points = [(r.macs / 1e6, r.latency_ms.get(column), r) for r in ok]
        points = [p for p in points if p[1] is not None]
        # latency is a cost: the front is the most multiply-adds for the least latency
        flipped = pareto_front([(x, -y, r) for x, y, r in points], more_x_is_better=True)
        front = [(x, -y, r) for x, y, r in flipped]
        _panel(ax, points, colours, "multiply-adds (millions)", lat_label, front, yerr=spread)
        ax.legend(fontsize=8, frameon=False, loc="upper left")
        ax.set_title(
            "latency against multiply-adds (front: most MAdds for the latency)", fontsize=10
        )
    if not ok:
        fig.text(0.5, 0.5, "no variant succeeded: see sweep.csv", ha="center", fontsize=12)
    fig.tight_layout()
    with writing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def csv_rows(s: Sweep) -> tuple[list[str], list[dict[str, Any]]]:
    lat = [f"{kind} {c}" for c in s.settings.columns() for kind in ("latency_ms", "iqr_ms")]
    header = ["variant", "spec", *s.keys, "params", "macs", *lat, "latency_method"]
    header += ["val_top1", "val_top5", "train_seconds", "run_folder", "error"]
    rows = []
    for r in s.results:
        v = r.variant
        row = {"variant": v.id, "spec": v.spec, **{k: text(v.overrides[k]) for k in s.keys}}
        row |= {"params": r.params, "macs": r.macs, "latency_method": s.method()}
        row |= {f"latency_ms {c}": r.latency_ms.get(c) for c in s.settings.columns()}
        row |= {f"iqr_ms {c}": r.iqr_ms.get(c) for c in s.settings.columns()}
        row |= {"val_top1": r.top1, "val_top5": r.topk, "train_seconds": r.train_seconds}
        rows.append(row | {"run_folder": r.run_folder, "error": r.error})
    return header, rows


def write_csv(s: Sweep, path: Path) -> None:
    header, rows = csv_rows(s)
    with writing(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)


def format_table(s: Sweep) -> str:
    """One line per variant, then how latency was obtained and the errors in full."""
    cols = s.settings.columns()
    header = ("spec", *s.keys, "params M", "MAdds M")
    header += tuple(f"{c} {kind}" for c in cols for kind in ("ms", "IQR"))
    if s.trained:
        header += ("top-1 %", "top-5 %", "train s")
    failed = any(r.error for r in s.results)
    header += ("",) if failed else ()
    lines = []
    for r in s.results:
        line = (r.variant.spec_name, *(text(r.variant.overrides[k]) for k in s.keys))
        line += (_fmt(r.params and r.params / 1e6, 3), _fmt(r.macs and r.macs / 1e6, 1))
        line += tuple(_fmt(d.get(c)) for c in cols for d in (r.latency_ms, r.iqr_ms))
        if s.trained:
            line += (_fmt(r.top1), _fmt(r.topk), _fmt(r.train_seconds, 0))
        lines.append((*line, "error: see below" if r.error else "") if failed else line)
    notes = [f"latency: {s.method()}"]
    notes += [f"error: {r.variant.id}: {r.error}" for r in s.results if r.error]
    table = text_table(header, lines, None, set(range(1 + len(s.keys))))
    return "\n".join([*table, *notes])


def write(s: Sweep) -> None:
    """sweep.csv and pareto.png, in the sweep folder (checked to be ours before any work)."""
    write_csv(s, s.folder / "sweep.csv")
    plot(s, s.folder / "pareto.png")


def summary(s: Sweep, started: float) -> str:
    """The table, then what was written, and a last line that says plainly when no variant
    succeeded."""
    seconds = time.perf_counter() - started
    lines = [
        format_table(s),
        f"{len(s.results)} variants in {seconds:.0f} s: wrote {s.folder / 'sweep.csv'} and "
        f"{s.folder / 'pareto.png'}",
    ]
    failed = sum(bool(r.error) for r in s.results)
    if failed == len(s.results):
        lines.append(f"no variant succeeded: all {failed} failed (the errors above say why)")
    elif failed:
        lines.append(f"{failed} of {len(s.results)} variants failed (the errors above say why)")
    return "\n".join(lines)
