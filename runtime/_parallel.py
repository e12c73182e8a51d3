"""Decode images in a few threads while the interpreter runs, or run several interpreters side by
side; results in input order.

Pillow's decoders and most numpy work release the GIL, and so do the interpreters' invoke() and
ONNX Runtime's run(), so a small thread pool keeps a second core busy decoding the next images while
the model runs on the current one (`map_ordered`), or lets N interpreters of one thread each classify
N images at once (`map_ordered_pooled`): on few cores, image-level parallelism wastes less than
splitting one small model's layers over threads. Only a bounded number of images is in flight
(memory stays flat on a huge folder).
"""

from __future__ import annotations

import os
import queue
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")


def default_decode_workers() -> int:
    """Decode threads for folder throughput: one per core beyond the first, at least one, at most 4."""
    return max(1, min(4, available_cores() - 1))


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def default_interpreters(threads: int | None, images: int, device: str = "cpu") -> int:
    """Interpreters for a folder: one per core of the thread budget (at most 4), 1 on GPU or for few images.

    `threads` is the whole budget (None = every core). Below 16 images the extra interpreters' load time
    is not won back.
    """
    if device != "cpu" or images < 16:
        return 1
    budget = available_cores() if threads is None else threads
    return max(1, min(budget, available_cores(), 4))


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


def map_ordered_pooled(fn: Callable[[S, T], R], items: Iterable[T], resources: Sequence[S], *,
                       catch: type[BaseException] | tuple[type[BaseException], ...] = ()) -> Iterator[tuple[T, R | BaseException]]:
    """`map_ordered` with one thread per resource, each call borrowing a resource no other call holds.

    For objects that must not be used by two threads at once (an interpreter): `fn(resource, item)`.
    The pool has exactly `len(resources)` threads, so a free resource is always waiting.
    """
    if not resources:
        raise ValueError("map_ordered_pooled needs at least one resource")
    free: queue.SimpleQueue = queue.SimpleQueue()
    for r in resources:
        free.put(r)

    def call(item: T) -> R:
        r = free.get()
        try:
            return fn(r, item)
        finally:
            free.put(r)

    return map_ordered(call, items, len(resources), catch=catch)
