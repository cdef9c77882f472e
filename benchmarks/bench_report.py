"""Output of the benchmarks: progress on stderr, aligned tables, percentiles, temp dirs."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def log(message: str) -> None:
    """Progress on stderr (stdout carries the table and the JSON line)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def temp_root(prefix: str, keep: bool = False) -> contextlib.AbstractContextManager[str]:
    """A temp directory, removed afterwards unless `keep`."""
    if keep:
        return contextlib.nullcontext(tempfile.mkdtemp(prefix=prefix))
    return tempfile.TemporaryDirectory(prefix=prefix)


def pct(values: Sequence[float], q: float) -> float:
    """Percentile by linear interpolation (q in 0..100)."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def dir_size(path: Path) -> int:
    """Bytes under a directory (files only)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    """A plain aligned table on stdout (rows may differ in length; numbers right-aligned)."""
    width = max([len(header), *(len(r) for r in rows)])
    cells = [[*map(str, header), *[""] * (width - len(header))]]
    numeric: list[list[bool]] = [[False] * width]
    for r in rows:
        cells.append([*(fmt(c) for c in r), *[""] * (width - len(r))])
        numeric.append([isinstance(c, int | float) for c in r] + [False] * (width - len(r)))
    widths = [max(len(r[i]) for r in cells) for i in range(width)]
    for n, (r, nums) in enumerate(zip(cells, numeric, strict=True)):
        line = "  ".join(
            c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, nums, strict=True)
        )
        print(line.rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def fmt(value: Any) -> str:
    """Compact number formatting for tables."""
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
