"""Tables for the terminal and for docs/benchmarks.md, and the formatting of their cells."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned table for the terminal."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def unbold(rows: Sequence[Sequence[str]]) -> list[list[str]]:
    """Rows of a markdown table for the terminal: ``**no**`` printed as ``no``."""
    return [[cell.strip("*") for cell in row] for row in rows]


def fmt(value: float | None, digits: int) -> str:
    """``value`` with ``digits`` decimals; None and NaN (e.g. no successful request) print as ``-``."""
    return f"{value:.{digits}f}" if value is not None and value == value else "-"


def yes(ok: bool) -> str:
    """A cell saying whether a target or check holds; a miss stands out in bold."""
    return "yes" if ok else "**no**"


def errors_cell(errors: int, all_runs: int) -> str:
    """The errors of the median run, with those of all runs when they differ: ``0 (3 in all runs)``."""
    return str(errors) if errors == all_runs else f"{errors} ({all_runs} in all runs)"


def fmt_counts(counts: Mapping[str, int]) -> str:
    """``{"200": 3, "503": 1}`` as ``200: 3, 503: 1`` (``none`` when empty)."""
    return ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none"
