"""How the benchmarks print their figures for people: a table of rows, then every figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def render(rows: Sequence[Sequence[str]], figures: Mapping[str, Any]) -> str:
    """``rows`` as left-aligned columns, a blank line, then each figure as ``name  value``."""
    columns = len(rows[0]) if rows else 0
    widths = [max(len(row[i]) for row in rows) for i in range(columns)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    width = max(map(len, figures), default=0)
    lines += [""] + [f"{key:<{width}}  {value}" for key, value in figures.items()]
    return "\n".join(lines)
