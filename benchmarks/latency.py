"""Latency rows: load time, first inference, warm-up, then timed runs until a count AND a time are reached.

Lean on purpose (numpy + edgetune.runtime): this is the code that runs on a Raspberry Pi. The Keras
baseline rows live in `edgetune.benchmarks.keras_baseline`, which imports TensorFlow inside its
functions only. Nothing here asserts a timing; rows record what was measured, and where something
cannot run (no GPU, no CUDA provider) the row says `unavailable` instead of failing the run.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

@dataclass
class Timing:
    """Timed-run parameters shared by every latency row."""

    warmup: int = 10
    min_runs: int = 50
    min_time_s: float = 1.0
    max_runs: int = 100_000
    """Hard cap so a microsecond-scale model cannot loop for ever."""


@dataclass
class LatencyRow:
    """One latency measurement: a model (or Keras baseline) in one mode at one thread count, batch 1."""

    name: str
    """Table name, e.g. 'tflite_int8.tflite' or 'keras'."""
    mode: str
    threads: int | None
    format: str = ""
    preset: str = ""
    model: str = ""
    device: str = "cpu"
    batch: int = 1
    status: str = "ok"
    """ok | unavailable (e.g. no GPU) | error."""
    note: str = ""
    size_bytes: int | None = None
    load_s: float | None = None
    first_ms: float | None = None
    warmup: int = 0
    runs: int = 0
    time_s: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    throughput_ips: float | None = None
    """Images per second at batch 1 (1000 / mean_ms)."""
    peak_rss_mb: float | None = None
    """Peak resident memory of the process that measured the row (one process per model by default)."""
    backend: str = ""
    accelerator: str = ""
    """XNNPACK / none for LiteRT, the execution provider for ONNX Runtime, the TF device for Keras."""
    accelerator_confirmed: bool | None = None
    """True when the runtime itself reported it (LiteRT's 'XNNPACK delegate' log, ORT's session providers)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/std/min and throughput of per-call times in milliseconds."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        return {}
    mean = float(a.mean())
    return {
        "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": mean, "std_ms": float(a.std()), "min_ms": float(a.min()),
        "throughput_ips": 1000.0 / mean if mean > 0 else None, "runs": int(a.size), "time_s": float(a.sum() / 1000.0),
    }


def time_calls(fns: Sequence[Callable[[], Any]], timing: Timing) -> list[list[float]]:
    """Warm up, then time each callable in turn until every one has `min_runs` runs and `min_time_s` passed.

    Several callables are interleaved call by call (alternating which goes first), so a pair such as
    predictor vs raw invoke sees the same thermal and scheduler conditions: on a shared or throttling
    machine, timing them one after the other would compare two different machines.
    """
    for _ in range(timing.warmup):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    perf = time.perf_counter
    start = perf()
    order = list(range(len(fns)))
    n = 0
    while n < timing.max_runs and (n < timing.min_runs or perf() - start < timing.min_time_s):
        for i in order:
            t0 = perf()
            fns[i]()
            samples[i].append((perf() - t0) * 1000.0)
        order.reverse()
        n += 1
    return samples


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory. Not
    ru_maxrss: Linux carries it across fork + exec, so a worker started from a parent holding 170 MB
    of decoded images would report the parent's peak. Elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def model_format(path: str | Path) -> str:
    return Path(path).suffix.lstrip(".").lower()


def _preset_of(predictor: Any, path: Path) -> str:
    preset = getattr(predictor.metadata, "preset", "") or ""
    return path.stem if preset in ("", "external") else preset


def _accelerator(info: dict[str, Any]) -> tuple[str, bool | None]:
    if info.get("backend") == "onnxruntime":
        return str(info.get("provider", "")), True  # session.get_providers(): what ORT actually uses
    return str(info.get("delegate", "")), None  # LiteRT: confirmed later from its log, where captured


def bench_model(
    path: str | Path,
    threads: Sequence[int],
    timing: Timing,
    *,
    image: np.ndarray | None = None,
    e2e_files: Sequence[str | Path] = (),
    throughput_files: Sequence[str | Path] = (),
    labels: Any = None,
    size: Any = None,
    input_range: Any = None,
    device: str = "cpu",
    raw: bool = True,
    decode_workers: int | None = None,
    interpreters: int | None = None,
) -> list[LatencyRow]:
    """Latency rows of one exported model, for each thread count (batch 1).

    Modes: predictor (`Predictor.predict` on one preprocessed image: quantize + invoke + softmax),
    raw_invoke (the bare interpreter call on an already typed input), e2e (image file -> label, with
    decode / resize / inference timed apart) and throughput (images/s over the files as `predict`
    runs a folder: N interpreters side by side, and decoding in threads for one interpreter, beside
    the same files one image at a time).

    For every thread count: the model is loaded fresh (load time), one first inference is timed,
    then `Predictor.predict` and the raw interpreter `invoke_raw` are timed interleaved. With
    `e2e_files`, an e2e and a throughput row follow at the largest thread count.

    Args:
        path: .tflite or .onnx model (metadata JSON beside it, or `labels`/`size` for a bare model).
        threads: Interpreter thread counts to measure.
        timing: Warm-up and timed-run limits.
        image: One preprocessed float32 (H, W, 3) 0..255 image; a fixed random image when None.
        e2e_files: Image files for the end-to-end row (cycled).
        throughput_files: The folder the throughput row passes over; `e2e_files` when empty (bench gives
            it more images than the e2e row: a short folder understates what side-by-side interpreters gain).
        labels, size, input_range: Passed to `Predictor.from_path` for models without metadata.
        device: 'cpu' or 'gpu' (ONNX Runtime's CUDA provider).
        raw: Also time the raw interpreter invoke (the wrapper-overhead comparison).
        decode_workers: Decode threads of the throughput row; None = the runtime's default.
        interpreters: Interpreters side by side in the throughput row; None = what `predict` would use.

    Returns:
        Rows; a model that cannot run on `device` gives one `unavailable` row per thread count.
    """
    from edgetune import UserError
    from edgetune.runtime import Predictor

    path = Path(path)
    base = dict(name=path.name, format=model_format(path), model=str(path), device=device,
                size_bytes=path.stat().st_size if path.is_file() else None)
    rows: list[LatencyRow] = []
    last = None
    for t in threads:
        t0 = time.perf_counter()
        try:
            p = Predictor.from_path(path, labels=labels, size=size, threads=t, device=device, input_range=input_range)
        except UserError as exc:
            status = "unavailable" if device != "cpu" else "error"
            rows.append(LatencyRow(mode="predictor", threads=t, status=status, note=str(exc), **base))
            continue
        common, timed = _model_rows(p, path, t, time.perf_counter() - t0, image, timing, raw, base)
        rows += timed
        last = (p, common)
    if e2e_files and last is not None:
        p, common = last
        files = [Path(f) for f in e2e_files]
        rows.append(_e2e_row(p, files, timing, common, base))
        folder = [Path(f) for f in throughput_files] or files
        rows.append(_throughput_row(p, folder, timing, common, base, decode_workers, interpreters))
    return rows


def _model_rows(p: Any, path: Path, threads: int, load_s: float, image: np.ndarray | None, timing: Timing, raw: bool,
                base: dict) -> tuple[dict, list[LatencyRow]]:
    """One loaded model: first inference, then `predict` and the raw `invoke` timed interleaved."""
    info = p.backend_info()
    accel, confirmed = _accelerator(info)
    x = image if image is not None else _fixed_image(p.size)
    x = np.ascontiguousarray(x[None] if x.ndim == 3 else x, dtype=np.float32)
    t0 = time.perf_counter()
    p.predict(x)
    first_ms = (time.perf_counter() - t0) * 1000.0
    xq = np.array(p.quantize(x), copy=True)  # typed input for the raw call, outside the timed region
    fns = [lambda: p.predict(x)] + ([lambda: p.invoke_raw(xq)] if raw else [])
    samples = time_calls(fns, timing)
    common = dict(threads=threads, preset=_preset_of(p, path), load_s=load_s, first_ms=first_ms,
                  warmup=timing.warmup, backend=f"{info.get('package', info.get('backend'))} {info.get('version', '')}".strip(),
                  accelerator=accel, accelerator_confirmed=confirmed, peak_rss_mb=peak_rss_mb())
    pred = LatencyRow(mode="predictor", **common, **base, **summarize(samples[0]))
    rows = [pred]
    if raw:
        raw_row = LatencyRow(mode="raw_invoke", **common, **base, **summarize(samples[1]))
        if raw_row.p50_ms:
            # The wrapper's cost over the bare interpreter (target < 1.05).
            pred.extra["predictor_over_raw_p50"] = pred.p50_ms / raw_row.p50_ms
            pred.extra["predictor_over_raw_mean"] = pred.mean_ms / raw_row.mean_ms
        rows.append(raw_row)
    return common, rows


def _e2e_row(p: Any, files: list[Path], timing: Timing, common: dict, base: dict) -> LatencyRow:
    """Image file -> label (decode, resize, inference + argmax) cycling over `files`, each part timed too."""
    from edgetune.runtime import preprocess

    state = {"i": 0}
    parts: dict[str, list[float]] = {"decode": [], "resize": [], "inference": []}
    perf = time.perf_counter

    def one() -> str:
        f = files[state["i"] % len(files)]
        state["i"] += 1
        t0 = perf()
        img = p.decode(f)  # the contract's decode: EXIF orientation, JPEG draft when the model was trained so
        t1 = perf()
        x = preprocess(img, p.size)
        t2 = perf()
        label = p.labels[int(np.argmax(p.predict(x[None])[0]))]
        t3 = perf()
        for key, ms in (("decode", t1 - t0), ("resize", t2 - t1), ("inference", t3 - t2)):
            parts[key].append(ms * 1000.0)
        return label

    t0 = perf()
    one()
    first_ms = (perf() - t0) * 1000.0
    samples = time_calls([one], timing)[0]
    row = LatencyRow(mode="e2e", **{**common, "first_ms": first_ms, "peak_rss_mb": peak_rss_mb()}, **base, **summarize(samples))
    n = len(samples)
    for key, values in parts.items():
        row.extra[f"{key}_p50_ms"] = float(np.percentile(values[-n:], 50))
    row.extra["decode_resize_p50_ms"] = float(np.percentile(np.add(parts["decode"][-n:], parts["resize"][-n:]), 50))
    row.extra["images"] = len(files)
    row.extra["jpeg_draft"] = bool(p.metadata.preprocessing.jpeg_draft)
    return row


def _throughput_row(p: Any, files: list[Path], timing: Timing, common: dict, base: dict,
                    workers: int | None, interpreters: int | None = None) -> LatencyRow:
    """Images/s over `files` the ways `edgetune predict` can run a folder, beside one image at a time.

    One pass = every file once (file -> probabilities): one at a time (decode, then the model, in one
    thread); decoding in `workers` threads while the model runs; and, when `interpreters` > 1, that
    many interpreters side by side (each with threads / N threads, decoding its own images). Passes of
    all kinds are interleaved, so they see the same machine. The row's p50/p99 (per image: pass time /
    files) and images/s are those of what `predict` does by default on this folder.
    """
    from edgetune.runtime import default_decode_workers, default_interpreters

    workers = default_decode_workers() if workers is None else workers
    device = p.backend_info().get("device", "cpu")
    n = default_interpreters(p.backend.threads, len(files), device) if interpreters is None else interpreters

    def sequential() -> None:
        for f in files:
            p.predict(p.load(f)[None])

    def pipelined() -> None:
        for _ in p.classify_files(files, interpreters=1, decode_workers=workers):
            pass

    def side_by_side() -> None:
        for _ in p.classify_files(files, interpreters=n):
            pass

    variants = [sequential, pipelined] + ([side_by_side] if n > 1 else [])
    if n > 1:
        p.replicas(n)  # loaded before timing, as predict loads them before its first image
    passes = time_calls(variants, Timing(warmup=1, min_runs=3, min_time_s=timing.min_time_s, max_runs=timing.max_runs))
    seq, pipe, *par = (np.asarray(s) / len(files) for s in passes)  # ms per image, one value per pass
    default = par[0] if par else pipe
    row = LatencyRow(mode="throughput", **{**common, "peak_rss_mb": peak_rss_mb()}, **base, **summarize(default))
    row.throughput_ips = 1000.0 / float(np.median(default))
    row.extra.update(decode_workers=workers, interpreters=n, images=len(files), passes=int(pipe.size),
                     sequential_ips=1000.0 / float(np.median(seq)), decode_pool_ips=1000.0 / float(np.median(pipe)),
                     parallel_ips=1000.0 / float(np.median(par[0])) if par else None,
                     interpreter_threads=p.replicas(n)[0].backend.threads if n > 1 else p.backend.threads,
                     speedup=float(np.median(seq) / np.median(default)))
    return row


def _fixed_image(size: Sequence[int]) -> np.ndarray:
    """A deterministic non-constant 0..255 image (latency does not depend on content for these models)."""
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (int(size[0]), int(size[1]), 3)).astype(np.float32)
