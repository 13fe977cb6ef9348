"""Progress bars on stderr: tqdm when it is installed, else a plain one-line counter."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

__all__ = ["progress", "want_progress"]


def want_progress(show: bool | None, n_steps: int) -> bool:
    """``show`` if given, else only for work of several steps on an interactive terminal."""
    if show is not None:
        return bool(show)
    return n_steps > 1 and sys.stderr.isatty()


def progress(items: list[T], *, desc: str, unit: str, show: bool) -> Iterator[T]:
    """Yield ``items`` while drawing a progress bar on stderr when ``show``."""
    if not show:
        yield from items
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        yield from tqdm(items, desc=desc, unit=unit, file=sys.stderr)
        return
    start = time.monotonic()
    n = len(items)
    for i, item in enumerate(items, start=1):
        yield item
        sys.stderr.write(f"\r{desc}: {i}/{n} {unit}s, {time.monotonic() - start:6.1f} s")
        sys.stderr.flush()
    sys.stderr.write("\n")
