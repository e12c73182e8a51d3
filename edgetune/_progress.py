"""Progress bars on stderr: tqdm where installed (train extra), a plain counter on a lean install."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_bar(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False) -> Iterator[T]:
    """Iterate with a progress bar; silent when stderr is not a terminal and tqdm is missing."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain(items, total, desc, disable or not sys.stderr.isatty())
    return iter(tqdm(items, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr, leave=False))


def _plain(items: Iterable[T], total: int | None, desc: str, disable: bool) -> Iterator[T]:
    last = 0.0
    for i, x in enumerate(items, 1):
        if not disable and time.monotonic() - last > 0.5:
            last = time.monotonic()
            print(f"\r{desc}: {i}/{total or '?'}", end="", file=sys.stderr, flush=True)
        yield x
    if not disable:
        print(file=sys.stderr)
