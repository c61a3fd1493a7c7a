"""What a run tells its user, from rank 0 only: its lines, a progress bar per epoch (at a
terminal), the line of each finished epoch, and the rows of metrics.csv."""

from __future__ import annotations

import sys

from tqdm import tqdm

from ..services.device import World
from ..services.run_folder import MetricsRow


class Reporter:
    def __init__(self, world: World, epochs: int, rows: list[MetricsRow]) -> None:
        self.main, self.epochs = world.main, epochs
        self.rows = list(rows)  # the epochs done, one row each

    def say(self, *lines: str | None) -> None:
        for line in lines:
            if line and self.main:
                print(line, flush=True)

    def bar(self, epoch: int, steps: int) -> tqdm:
        """The epoch's progress bar, drawn only at a terminal."""
        shown = self.main and sys.stderr.isatty()
        desc = f"epoch {epoch}/{self.epochs}"
        return tqdm(total=steps, desc=desc, leave=False, disable=not shown)

    def add(self, row: MetricsRow) -> None:
        self.rows.append(row)

    def epoch_line(self, row: MetricsRow, k: int) -> None:
        """The finished epoch in one line (``k``: the k of the validation top-k)."""
        self.say(
            f"epoch {row.epoch}/{self.epochs}  lr {row.lr:.4g}  train loss {row.train_loss:.4f} "
            f"acc {row.train_top1:.2f}%  val loss {row.val_loss:.4f} acc {row.val_top1:.2f}% "
            f"top{k} {row.val_top5:.2f}%  {row.seconds:.1f}s {row.images_per_s:.0f} img/s"
        )
