"""Plain-text tables, shared by every table the CLI prints (show, diff, latency, infer)."""

from __future__ import annotations


def text_table(
    header: tuple[str, ...],
    lines: list[tuple[str, ...]],
    total: tuple[str, ...] | None,
    left: set[int],
) -> list[str]:
    """Aligned columns, those in ``left`` to the left and numbers to the right; a rule under the
    header, and above ``total`` when there is one. Shared by every table the CLI prints."""
    rows = [header, *lines, *([total] if total else [])]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "-" * len(fmt(header))
    table = [fmt(header), rule, *map(fmt, lines)]
    return [*table, rule, fmt(total)] if total else table
