"""Plain text for the user: tables shared by every table the CLI prints (show, diff, latency,
infer), and the one rule that keeps a message on one printable line."""

from __future__ import annotations

import json
import re
from typing import Any


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


# Characters a terminal or a log reader acts on: C0 and C1 controls, DEL, Unicode's line and
# paragraph separators and its direction overrides (which reorder what a reader sees). A file
# name holding a newline and "::warning::" would otherwise start a GitHub Actions workflow
# command of its own in a CI log.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with every control character escaped (``\\n``, ``\\x1b``, ``\\u2028``): one line
    that means on a terminal or in a CI log only what it says."""
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def quoted(text: str, limit: int = 60) -> str:
    """``text`` in single quotes for a message: control characters escaped, cut to ``limit``."""
    text = printable(text)
    return f"'{text if len(text) <= limit else text[: limit - 3] + '...'}'"


def kind_of(value: Any) -> str:
    """What a value is, without its text: ``a string``, ``an integer``, ``a mapping``..."""
    kinds = [(bool, "true or false"), (int, "an integer"), (float, "a number"), (str, "a string")]
    kinds += [(dict, "a mapping"), (list, "a list")]
    return next((name for kind, name in kinds if isinstance(value, kind)), "null")


def shown(value: Any, quote: bool = False) -> str:
    """A value as an error message quotes it: JSON for plain values (cut short), else its kind."""
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, int) and value.bit_length() > 190:
        try:
            return f"an integer of {len(str(abs(value)))} digits"
        except ValueError:  # str() refuses 4,300 digits
            return "an integer of thousands of digits"
    try:
        text = json.dumps(value) if quote else str(value)
    except (TypeError, ValueError):
        return f"a {type(value).__name__} value"
    return text if len(text) <= 60 else text[:57] + "..."
