"""What a sweep is asked (:class:`SweepSettings`) and what it finds (:class:`Result` per variant,
:class:`Sweep` in all); read by the sweep that fills them and by its report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..latency import predict
from ..services.run_folder import RunFolder
from . import MAX_VARIANTS
from .grid import Variant
from .training import ClusterSettings, Training

DIVERGED = 3  # train's exit status when the loss became NaN or infinite (TrainingError)


@dataclass(frozen=True)
class SweepSettings:
    """One sweep: its variants (``specs`` × the ``grids``, each with ``fixed`` set), where it
    goes, how each variant is trained and timed. Everything here is checked before any work."""

    specs: tuple[str, ...]
    grids: tuple[str, ...] = ()  # "KEY=V1,V2,..."
    fixed: dict[str, Any] = field(default_factory=dict)  # spec overrides every variant takes
    out: str = "sweeps"
    name: str | None = None  # default: the spec names
    training: dict[str, Any] | None = field(default_factory=dict)  # TrainConfig fields; None: none
    devices: tuple[str, ...] | None = None  # latency's; None: its defaults
    backends: tuple[str, ...] = ("eager",)
    latency_batch: int = 1
    latency_runs: int = 50
    latency_warmup: int = 10
    predict: str | None = None  # a look-up table to predict latency from, instead of timing
    max_variants: int = MAX_VARIANTS
    cluster: ClusterSettings | None = None  # the Ray cluster the trainings run on; None: here


@dataclass(frozen=True)
class LatencySettings:
    devices: tuple[str, ...]
    backends: tuple[str, ...]
    batch: int
    runs: int
    warmup: int
    threads: int
    predict: str | None  # a look-up table, or None: measured

    def columns(self) -> list[str]:
        return [f"{d} {b}" for d in self.devices for b in self.backends]

    def method(self) -> str:
        if self.predict:
            return f"{predict.METHOD}; table {self.predict}"
        return (
            f"measured as latency does: median of {self.runs} runs after {self.warmup} warm-up, "
            f"batch {self.batch}, {self.threads} CPU threads"
        )


@dataclass
class Result:
    variant: Variant
    params: int | None = None
    macs: int | None = None
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # "cpu eager" → median
    iqr_ms: dict[str, float | None] = field(default_factory=dict)  # and its spread
    top1: float | None = None
    topk: float | None = None  # top-k of the same epoch, k = min(5, classes)
    train_seconds: float | None = None
    run_folder: str = ""
    error: str = ""
    train_exit: int = 0  # the exit status of its training (3: diverged)

    def fail(self, what: str, e: Exception) -> None:
        self.error = "; ".join(filter(None, [self.error, f"{what}: {e}"]))

    def read_best_epoch(self, folder: RunFolder) -> None:
        """Best val top-1 of the run in ``folder``, the top-k of that epoch, and the seconds of
        all its epochs."""
        self.run_folder = str(folder)
        rows = folder.read_metrics()
        if rows:
            best = max(rows, key=lambda r: r.val_top1)
            self.top1, self.topk = best.val_top1, best.val_top5
            self.train_seconds = sum(r.seconds for r in rows)


@dataclass
class Sweep:
    folder: Path
    results: list[Result]
    keys: list[str]
    settings: LatencySettings
    trained: bool
    trainings: list[Training] = field(default_factory=list)  # those started (or to start)

    def method(self) -> str:
        return self.settings.method()

    def exit_code(self) -> int:
        """0 when some variant succeeded and none diverged; 3 (as train) when one diverged;
        2 when none succeeded for another reason (bad data, bad settings)."""
        if any(r.train_exit == DIVERGED for r in self.results):
            return DIVERGED
        return 0 if any(not r.error for r in self.results) else 2
