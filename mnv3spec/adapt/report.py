"""What a finished search shows: the table of the retrained networks (the adapted spec and the
baselines, each at its measured latency) and the plot of the path in latency–accuracy space
beside them."""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..files import writing
from ..text import text_table
from .timing import Measured
from .trace import TraceRow


@dataclass(frozen=True)
class Retrained:
    """A network trained from scratch for the comparison: its name, latency, and test top-1
    per seed."""

    name: str
    latency: Measured
    top1: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.top1)


def table(rows: list[Retrained], target_ms: float) -> str:
    head = ("network", "latency ms", "± ms", "÷ target", "test top-1 %", "per seed")
    body = [
        (r.name, f"{r.latency.median_ms:.3f}", f"{r.latency.spread_ms:.3f}",
         f"{r.latency.median_ms / target_ms:.3f}", f"{r.mean:.2f}",
         " ".join(f"{t:.2f}" for t in r.top1))
        for r in rows
    ]  # fmt: skip
    return "\n".join(text_table(head, body, None, {0, 5}))


def write_summary(path: Path, rows: list[Retrained]) -> None:
    with writing(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["network", "latency_ms", "spread_ms", "test_top1_mean", "test_top1_seeds"])
        for r in rows:
            seeds = " ".join(f"{t:.2f}" for t in r.top1)
            w.writerow([r.name, f"{r.latency.median_ms:.4f}", f"{r.latency.spread_ms:.4f}",
                        f"{r.mean:.2f}", seeds])  # fmt: skip


def plot(path: Path, chosen: list[TraceRow], retrained: list[Retrained], target_ms: float) -> None:
    """The path (held-out top-1 after each fine-tune) and the retrained networks (test top-1),
    against measured latency, the target a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r.latency_ms for r in chosen]
    ax.plot(xs, [r.holdout_top1 for r in chosen], "o-", label="adapt path (held-out top-1)")
    for r in retrained:  # the bar spans the IQR around the median
        half = r.latency.spread_ms / 2
        ax.errorbar(r.latency.median_ms, r.mean, xerr=half, fmt="s", capsize=3, label=r.name)
    ax.axvline(target_ms, color="grey", linestyle="--", label="target")
    ax.set_xlim(left=0)
    ax.set_xlabel("measured latency (ms, median; bars: IQR)")
    ax.set_ylabel("top-1 (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with writing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
