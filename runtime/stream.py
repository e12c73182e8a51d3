"""`StreamRunner`: classify a stream of frames as a pipeline of threads where the newest frame wins.

    capture thread --[slot]--> preprocess thread --[slot]--> inference thread --> emit(decision)

Each slot holds one item. A stage that is slower than the one before it never falls behind: an item
it has not taken yet is replaced by the newer one (counted as dropped), so a decision is always about
a recent frame and latency stays bounded instead of growing with a queue. Capture -> decision latency
is measured per processed frame, from the moment the frame was in memory to the moment its label
was known. Frames are preprocessed exactly as image files are (`frame_to_input`).
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgetune.runtime.image import preprocess
from edgetune.runtime.sources import Frame, FrameSource, SourceLost

STATS_KIND = "edgetune-stream-stats"
STATS_SCHEMA = 1
JOIN_TIMEOUT_S = 3.0
FPS_WINDOW_S = 2.0


def frame_to_input(image: np.ndarray, order: str, size: tuple[int, int]) -> np.ndarray:
    """A captured uint8 frame -> the model's float32 (H, W, 3) RGB input in 0..255, as `preprocess` makes it.

    A BGR frame (OpenCV, picamera2's RGB888) is resized first and its channels reversed after: the
    bilinear resize treats channels independently, so this equals converting to RGB first, bit for
    bit, at a fraction of the copying.
    """
    if order == "RGB":
        return preprocess(image, size)
    if order != "BGR":
        raise ValueError(f"frame channel order {order!r} is not RGB or BGR")
    return np.ascontiguousarray(preprocess(image, size)[..., ::-1])


class LatestSlot:
    """A one-item hand-over between two threads: `put` replaces an item not yet taken (counted as dropped)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False
        self.dropped = 0
        self.discarded = 0

    def put(self, item: Any) -> None:
        with self._cond:
            if self._closed:  # the stream stopped while this item was being made
                self.discarded += 1
                return
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def get(self) -> Any:
        """The next item; None once the slot is closed and empty."""
        with self._cond:
            while self._item is None and not self._closed:
                self._cond.wait()
            item, self._item = self._item, None
            return item

    def close(self, discard: bool = False) -> None:
        """No more items. With `discard` (a stop), an item still waiting is thrown away and counted."""
        with self._cond:
            if discard and self._item is not None:
                self._item = None
                self.discarded += 1
            self._closed = True
            self._cond.notify_all()


@dataclass
class Decision:
    """The model's answer for one frame."""

    frame: int
    time_s: float
    """Seconds since the stream started."""
    label: str
    index: int
    probability: float
    latency_ms: float
    """Capture -> decision."""
    fps: float
    """Decisions per second over the last couple of seconds."""


@dataclass
class StreamStats:
    """What a stream did, written by `--stats FILE` (kind edgetune-stream-stats)."""

    source: str
    model: str = ""
    created: str = ""
    seconds: float = 0.0
    stopped: str = ""
    """Why it ended: end of source, max-frames, duration, interrupted, source lost, window closed, ..."""
    failed: bool = False
    frames_read: int = 0
    skipped_every: int = 0
    """Frames left out by --every N."""
    captured: int = 0
    """Frames handed to the pipeline (read minus --every skips)."""
    processed: int = 0
    dropped: int = 0
    """Captured frames replaced by a newer one before a stage could take them (newest frame wins)."""
    unfinished: int = 0
    """Frames in the pipeline when it stopped (captured = processed + dropped + unfinished)."""
    below_confidence: int = 0
    fps: float = 0.0
    """Processed frames per second of wall time."""
    capture_fps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    """Capture -> decision latency of processed frames: p50, p90, p99, max, mean."""
    preprocess_p50_ms: float | None = None
    inference_p50_ms: float | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": STATS_KIND, "schema": STATS_SCHEMA, **asdict(self)}

    def summary(self) -> list[str]:
        """Human-readable lines for the end of a stream."""
        lines = [f"stopped: {self.stopped}",
                 f"{self.frames_read} frames read, {self.captured} into the pipeline, {self.processed} classified, "
                 f"{self.dropped} dropped (a newer frame replaced them), {self.unfinished} unfinished at the stop"
                 + (f", {self.skipped_every} skipped by --every" if self.skipped_every else "")
                 + (f", {self.below_confidence} below --min-confidence" if self.below_confidence else ""),
                 f"{self.fps:.1f} classified frames/s over {self.seconds:.1f} s (source delivered {self.capture_fps:.1f}/s)"]
        if self.latency_ms:
            lat = self.latency_ms
            lines.append(f"capture -> decision latency p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms "
                         f"(max {lat['max']:.1f}); per frame p50: preprocess {self.preprocess_p50_ms:.2f} ms, "
                         f"inference {self.inference_p50_ms:.2f} ms")
        return lines


def latency_summary(samples_ms: list[float]) -> dict[str, float]:
    if not samples_ms:
        return {}
    a = np.asarray(samples_ms, np.float64)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "mean": float(a.mean())}


class StreamRunner:
    """Run one source through one predictor until the source ends or a limit/stop is reached.

    Args:
        source: Where frames come from (`edgetune.runtime.sources`).
        predictor: Anything with `size`, `labels` and `predict(batch) -> probabilities` (a `Predictor`).
        emit: Called in the inference thread with every decision at or above `min_confidence`.
        every: Classify every Nth frame read.
        min_confidence: Decisions below this top probability are counted, not emitted.
        duration: Stop after this many seconds (None: no limit).
        max_frames: Stop after this many classified frames (None: no limit).
    """

    def __init__(self, source: FrameSource, predictor: Any, emit: Callable[[Decision], None], *, every: int = 1,
                 min_confidence: float = 0.0, duration: float | None = None, max_frames: int | None = None):
        self.source, self.predictor, self.emit = source, predictor, emit
        self.every, self.min_confidence = every, min_confidence
        self.duration, self.max_frames = duration, max_frames
        self.stats = StreamStats(source=source.name)
        self.latest: tuple[Frame, Decision] | None = None
        """The newest frame and its decision (for a display)."""
        self._stop = threading.Event()
        self._slots = (LatestSlot(), LatestSlot())
        self._error: BaseException | None = None
        self._reason = ""
        self._latency: list[float] = []
        self._pre_ms: list[float] = []
        self._inf_ms: list[float] = []
        self._t0 = 0.0

    # ---------------------------------------------------------------- stages (one thread each)
    def _capture(self) -> None:
        slot, src, st = self._slots[0], self.source, self.stats
        try:
            while not self._stop.is_set():
                if src.fps:  # replaying a file: frame n is due at n / fps
                    delay = self._t0 + st.frames_read / src.fps - time.perf_counter()
                    if delay > 0 and self._stop.wait(delay):
                        break
                frame = src.read()
                if frame is None:
                    note, failed = src.end_note(st.frames_read)
                    self._finish(note, failed, stop=False)
                    break
                st.frames_read += 1
                if frame.index % self.every:
                    st.skipped_every += 1
                    continue
                st.captured += 1
                slot.put(frame)
        except SourceLost as exc:
            self._finish(str(exc), True, stop=False)
        except BaseException as exc:
            self._fail(exc)
        finally:
            slot.close()
            src.close()

    def _preprocess(self) -> None:
        src_slot, out_slot = self._slots
        size = tuple(self.predictor.size)
        try:
            while (frame := src_slot.get()) is not None:
                t = time.perf_counter()
                x = frame_to_input(frame.image, frame.order, size)
                self._pre_ms.append((time.perf_counter() - t) * 1000.0)
                out_slot.put((frame, x))
        except BaseException as exc:
            self._fail(exc)
        finally:
            out_slot.close()

    def _infer(self) -> None:
        slot, st, labels = self._slots[1], self.stats, self.predictor.labels
        recent: deque[float] = deque()
        try:
            while (item := slot.get()) is not None:
                frame, x = item
                t = time.perf_counter()
                probs = np.asarray(self.predictor.predict(x[None]))[0]
                done = time.perf_counter()
                k = int(np.argmax(probs))
                self._inf_ms.append((done - t) * 1000.0)
                self._latency.append((done - frame.t_capture) * 1000.0)
                st.processed += 1
                recent.append(done)
                while done - recent[0] > FPS_WINDOW_S:
                    recent.popleft()
                span = recent[-1] - recent[0]
                fps = (len(recent) - 1) / span if span > 0 else 0.0
                d = Decision(frame.index, done - self._t0, labels[k], k, float(probs[k]), self._latency[-1], fps)
                self.latest = (frame, d)
                if d.probability >= self.min_confidence:
                    self.emit(d)
                else:
                    st.below_confidence += 1
                if self.max_frames and st.processed >= self.max_frames:
                    self._finish(f"--max-frames {self.max_frames} reached", False)
                    break
        except BrokenPipeError:
            self._finish("output closed", False)
        except BaseException as exc:
            self._fail(exc)

    def _finish(self, reason: str, failed: bool, stop: bool = True) -> None:
        if not self._reason:
            self._reason, self.stats.failed = reason, failed
        if stop:
            self._stop.set()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._finish(f"error: {exc}", True)

    # ---------------------------------------------------------------- driver (caller's thread)
    def run(self, on_tick: Callable[[], bool] | None = None, tick_s: float = 0.1) -> StreamStats:
        """Start the threads and wait for the end (Ctrl-C stops cleanly and still returns the stats).

        Args:
            on_tick: Called about every `tick_s` seconds in this thread (a display's refresh); returning
                False stops the stream.
            tick_s: Seconds between ticks.

        Raises:
            Whatever a stage raised (a model that fails on a frame, ...), after the threads stopped.
        """
        self._t0 = time.perf_counter()
        threads = [threading.Thread(target=fn, name=f"edgetune-{fn.__name__.strip('_')}", daemon=True)
                   for fn in (self._capture, self._preprocess, self._infer)]
        for t in threads:
            t.start()
        try:
            while threads[2].is_alive() and not self._stop.is_set():
                if self.duration is not None and time.perf_counter() - self._t0 >= self.duration:
                    self._finish(f"--duration {self.duration:g} s reached", False)
                    break
                if on_tick is not None and on_tick() is False:
                    self._finish("window closed", False)
                    break
                self._stop.wait(tick_s)
        except KeyboardInterrupt:
            self._finish("interrupted (Ctrl-C)", False)
        finally:
            self._stop.set()
            for slot in self._slots:
                slot.close(discard=True)
            for t in threads:  # a capture thread stuck in a device read is a daemon: it cannot hold the exit
                t.join(JOIN_TIMEOUT_S)
        if self._error is not None:
            raise self._error
        return self._collect()

    def _collect(self) -> StreamStats:
        st = self.stats
        st.seconds = time.perf_counter() - self._t0
        st.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        st.stopped = self._reason or "stopped"
        st.dropped = sum(s.dropped for s in self._slots)
        st.unfinished = max(0, st.captured - st.processed - st.dropped)
        st.fps = st.processed / st.seconds if st.seconds > 0 else 0.0
        st.capture_fps = st.frames_read / st.seconds if st.seconds > 0 else 0.0
        st.latency_ms = latency_summary(self._latency)
        st.preprocess_p50_ms = float(np.percentile(self._pre_ms, 50)) if self._pre_ms else None
        st.inference_p50_ms = float(np.percentile(self._inf_ms, 50)) if self._inf_ms else None
        return st
