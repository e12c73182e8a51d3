"""Decode images in a few threads while the interpreter runs, results in input order.

Pillow's decoders and most numpy work release the GIL, and so does the interpreter's invoke(), so
a small thread pool keeps a second core busy decoding the next images while the model runs on the
current one. Only a bounded number of images is in flight (memory stays flat on a huge folder).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_decode_workers() -> int:
    """Decode threads for folder throughput: one per core beyond the first, at least one, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, min(4, cores - 1))


def map_ordered(fn: Callable[[T], R], items: Iterable[T], workers: int, *,
                catch: type[BaseException] | tuple[type[BaseException], ...] = ()) -> Iterator[tuple[T, R | BaseException]]:
    """Yield `(item, fn(item))` in input order, computing up to `2 * workers` items ahead in threads.

    Args:
        fn: The work for one item (e.g. decode + preprocess one image file).
        items: Inputs, consumed lazily.
        workers: Threads; 0 runs `fn` inline in the caller's thread (no pool, no look-ahead).
        catch: Exception types that become results (yielded in place of the value) instead of
            ending the iteration: one unreadable image must not stop a folder.

    Yields:
        (item, result or caught exception), in the order of `items`.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")

    def call(item: T) -> Any:
        try:
            return fn(item)
        except catch as exc:  # an empty tuple catches nothing
            return exc

    if workers == 0:
        for item in items:
            yield item, call(item)
        return
    ahead = 2 * workers
    pending: deque[tuple[T, Future]] = deque()
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgetune-decode") as pool:
        try:
            for item in it:
                pending.append((item, pool.submit(call, item)))
                if len(pending) >= ahead:
                    done_item, fut = pending.popleft()
                    yield done_item, fut.result()
            while pending:
                done_item, fut = pending.popleft()
                yield done_item, fut.result()
        finally:
            # A consumer that stops early (error, Ctrl-C, break) must not wait for queued decodes.
            for _, fut in pending:
                fut.cancel()
