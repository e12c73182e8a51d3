"""`run_bench`: parity and latency of every model of a run (or of given model files) in one results JSON.

Parity is computed in this process (one decode of the held-out images, shared by every model); latency
runs each model in its own process by default (see `_worker`). Keras baseline rows need TensorFlow
and are added only where it is installed; without it (a Pi) they are simply absent, or marked
unavailable when asked for explicitly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgetune import UserError
from edgetune._config import config_to_dict
from edgetune.benchmarks.config import BenchConfig, parse_threads
from edgetune.benchmarks.latency import LatencyRow, Timing, model_format
from edgetune.benchmarks.parity import Gate, ParityRow, parity_row
from edgetune.benchmarks.reference import load_split_images, read_reference, write_reference
from edgetune.benchmarks.results import RESULTS_KIND, make_results, markdown_report, write_results
from edgetune.contract import read_metadata, read_split, read_split_file
from edgetune.outputs import check_output_file

MODEL_SUFFIXES = (".tflite", ".onnx")
E2E_IMAGES = 20
"""Files cycled by the end-to-end row (enough to vary sizes, few enough to stay in the page cache)."""
THROUGHPUT_IMAGES = 100
"""Files the folder-throughput row passes over. More than the e2e row's: split over two interpreters, 20
images leave one idle for up to a tenth of a pass (cats-vs-dogs, tflite_int8, a 2-core VNNI VM: two
interpreters vs one at a time 1.37x over 20 images, 1.58x over 200)."""


def find_models(targets: Sequence[Path]) -> tuple[Path | None, list[Path]]:
    """(run dir or None, model files): a run dir contributes its export/*.tflite|.onnx."""
    run, models = None, []
    for t in targets:
        t = Path(t)
        if t.is_dir():
            if not (t / "metadata.json").is_file():
                raise UserError(f"{t} is not an edgetune run dir (no metadata.json)")
            if run is not None and run != t:
                raise UserError("give one run dir per bench (compare merges several results)")
            run = t
            models += sorted(p for p in (t / "export").glob("*") if p.suffix in MODEL_SUFFIXES)
        elif t.is_file():
            if t.suffix.lower() not in MODEL_SUFFIXES:
                raise UserError(f"{t}: edgetune bench takes .tflite and .onnx models or a run dir")
            models.append(t)
        else:
            raise UserError(f"{t} does not exist")
    names = [m.name for m in models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"several models are named {dupes}: rows are keyed by file name, rename or bench them separately")
    return run, models


def labelled_images(source: Path, labels: Sequence[str]) -> list[tuple[Path, int]]:
    """(path, class index) from class folders named like the labels, or from a 'path<TAB>label' list."""
    from edgetune.runtime import find_images

    items: list[tuple[Path, int]] = []
    if source.is_file():
        items = read_split_file(source, list(labels), source.parent)
    elif source.is_dir():
        index = {name: i for i, name in enumerate(labels)}
        for folder in sorted(p for p in source.iterdir() if p.is_dir()):
            if folder.name not in index:
                raise UserError(f"{source}/{folder.name}: folder name is not one of the model's labels")
            items += [(Path(f), index[folder.name]) for f in find_images([folder])]
    else:
        raise UserError(f"--images {source} does not exist")
    if not items:
        raise UserError(f"--images {source}: no images found")
    return items


def _model_record(path: Path, predictor: Any) -> dict[str, Any]:
    preset = predictor.metadata.preset if predictor.metadata.preset not in ("", "external") else path.stem
    return {"name": path.name, "path": str(path), "format": model_format(path), "preset": preset,
            "size_bytes": path.stat().st_size, "input_dtype": str(predictor.input_details.dtype),
            "input_shape": list(predictor.input_details.shape), "output_kind": predictor.metadata.output_kind}


def run_bench(cfg: BenchConfig, write: bool = True) -> dict[str, Any]:
    """Benchmark a run dir's exports (and/or model files): parity, latency, environment, recommendation.

    Args:
        cfg: The bench configuration.
        write: Write the results JSON (and a .md beside it) to `cfg.out` or the default place.

    Returns:
        The results document (see `edgetune.benchmarks.results`).
    """
    from edgetune.benchmarks.env import fingerprint, thermal_state

    cfg.validate()
    threads = parse_threads(cfg.threads)
    run, models = find_models(cfg.targets)
    if not models and run is None:
        raise UserError("no models to benchmark")
    if run is not None and not models:
        print(f"note: {run}/export has no .tflite/.onnx models yet (run edgetune convert); Keras rows only", file=sys.stderr)
    _check_baseline_name(cfg, run, models)
    out = _results_path(cfg, run) if write else None  # refused outputs fail before minutes of timing
    device = fingerprint(cfg.device, cfg.name)
    records, predictors = _load_models(models, cfg)
    parity, items, image = _parity_rows(run, cfg, predictors, records)
    predictors.clear()  # free the interpreters before timing
    latency = _latency_rows(run, models, cfg, threads, items, image)
    # Temperature and throttling after the timed runs too: a Pi that heated up during the run says so.
    device["thermal_after"] = thermal_state()
    config = config_to_dict(cfg) | {"targets": [str(t) for t in cfg.targets], "threads_resolved": threads}
    results = make_results(device, config, records, parity, latency, run=str(run) if run else None, max_drop=cfg.max_drop)
    if out is not None:
        write_results(out, results)
        out.with_suffix(".md").write_text(markdown_report(results, cfg.baseline))
        results["_path"] = str(out)
    return results


def _check_baseline_name(cfg: BenchConfig, run: Path | None, models: list[Path]) -> None:
    """An unknown --baseline is an error listing the rows there will be, before minutes of timing."""
    from edgetune.benchmarks.results import KERAS_LABELS

    if cfg.baseline == BenchConfig.baseline:
        return  # the default: without Keras rows the speed-up column is simply left out
    labels = [f"{m.name}{mode}" for m in models for mode in ("", " (raw invoke)", " (file->label)")]
    labels += list(KERAS_LABELS.values()) if run is not None else []
    if cfg.baseline not in labels:
        raise UserError(f"--baseline {cfg.baseline!r} is not a row of this bench; rows: {', '.join(labels)}")


def _results_path(cfg: BenchConfig, run: Path | None) -> Path:
    """Where the results JSON goes; an existing file there must be an edgetune results file (never a user's)."""
    from edgetune.benchmarks.env import default_device_name

    out = cfg.out or ((run / "results" if run else Path("results")) / f"{cfg.name or default_device_name(cfg.device)}.json")
    return check_output_file(out, RESULTS_KIND, inputs=[m for m in cfg.targets if Path(m).is_file()])


def _load_models(models: list[Path], cfg: BenchConfig) -> tuple[list[dict[str, Any]], dict[Path, Any]]:
    from edgetune.runtime import Predictor

    records, predictors = [], {}
    for m in models:
        try:
            predictors[m] = Predictor.from_path(m, labels=cfg.labels, size=cfg.size, input_range=cfg.input_range)
        except UserError as exc:
            raise UserError(f"{m}: {exc}") from exc
        records.append(_model_record(m, predictors[m]))
    return records, predictors


def _gate(cfg: BenchConfig) -> Gate:
    return Gate(max_drop=cfg.max_drop, int8_floor=cfg.int8_floor, float_floor=cfg.float_floor, pruned_floor=cfg.pruned_floor)


def _parity_rows(run: Path | None, cfg: BenchConfig, predictors: dict[Path, Any], records: list[dict[str, Any]]):
    """Parity in this process (CPU, all cores: accuracy does not depend on the thread count).

    Returns (parity rows as dicts, the (path, label) items used, one preprocessed image for latency).
    A run dir's exports are compared with its stored Keras reference on every held-out image.
    """
    gate, presets = _gate(cfg), {r["name"]: r["preset"] for r in records}
    rows: list[ParityRow] = []
    items, image = None, None
    if run is not None:
        meta = read_metadata(run / "metadata.json")
        items = read_split(run, cfg.split, cfg.data_root)
        missing = [p for p, _ in items if not p.is_file()]
        if missing:
            raise UserError(f"{len(missing)} held-out images of {run} are missing (first: {missing[0]}); "
                            "pass --data-root where the data set is on this machine")
        x = load_split_images(items, meta.preprocessing)
        ref = _reference(run, cfg, x)
        y = np.array([k for _, k in items])
        if ref is not None:
            keras_row = parity_row("keras", ref[0], y, meta.labels)  # accuracy only: it is the reference
            keras_row.note = f"reference from {ref[1].get('created', '?')}"
            rows.append(keras_row)
        for m, p in predictors.items():
            floor = gate.floor_for(presets[m.name])
            rows.append(_parity_or_error(m, lambda p=p: p.predict(x), y, p.labels, None if ref is None else ref[0],
                                         floor, gate.max_drop))
        image = x[0] if len(x) else None
    elif cfg.images is not None and predictors:
        items = labelled_images(cfg.images, next(iter(predictors.values())).labels)
        y = np.array([k for _, k in items])
        cache: dict[str, np.ndarray] = {}
        for m, p in predictors.items():
            key = json.dumps(p.metadata.preprocessing.to_dict(), sort_keys=True)  # models with the same contract share pixels
            if key not in cache:
                cache[key] = load_split_images(items, p.metadata.preprocessing)
            rows.append(_parity_or_error(m, lambda p=p, k=key: p.predict(cache[k]), y, p.labels, None,
                                         gate.floor_for(presets[m.name]), gate.max_drop))
    sizes = {rec["name"]: rec["size_bytes"] for rec in records}
    for r in rows:
        r.size_bytes = sizes.get(r.name)
    if run is not None:
        keras_file = run / "model.keras"
        records.insert(0, {"name": "keras", "path": str(keras_file), "format": "keras", "preset": "keras",
                           "size_bytes": keras_file.stat().st_size if keras_file.is_file() else None,
                           "input_dtype": "float32", "baseline": True})
    return [r.to_dict() for r in rows], items, image


def _latency_rows(run: Path | None, models: list[Path], cfg: BenchConfig, threads: list[int],
                  items: list | None, image: np.ndarray | None) -> list[dict[str, Any]]:
    """One job per model (and per thread count for Keras), each in a fresh process unless --no-isolate."""
    from edgetune._progress import progress_bar
    from edgetune.benchmarks.keras_baseline import tensorflow_available

    timing = Timing(warmup=cfg.warmup, min_runs=cfg.min_runs, min_time_s=cfg.min_time)
    e2e_files = [str(p) for p, _ in items[:E2E_IMAGES]] if (cfg.e2e and items) else []
    throughput_files = [str(p) for p, _ in items[:THROUGHPUT_IMAGES]] if (cfg.e2e and items) else []
    kw = dict(labels=cfg.labels, size=cfg.size, input_range=cfg.input_range)
    latency: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgetune-bench-") as tmp:
        img_file = None
        if image is not None:
            img_file = str(Path(tmp) / "image.npy")
            np.save(img_file, image)
        jobs = [("model", m) for m in models]
        want_keras = run is not None and cfg.keras != "off" and (
            cfg.keras == "on" or (tensorflow_available() and (run / "model.keras").is_file()))
        if want_keras:
            jobs.append(("keras", run))
        for kind, target in progress_bar(jobs, desc="latency", unit="model"):
            if kind == "model":
                spec = {"kind": "model", "model": str(target), "threads": threads, "e2e_files": e2e_files,
                        "throughput_files": throughput_files, "device": cfg.device, "raw": cfg.raw, **kw}
                latency += _run_job(spec, timing, img_file, tmp, cfg.isolate)
            else:
                for t in threads:  # one process per thread count: TF sizes its pools once
                    spec = {"kind": "keras", "run": str(target), "threads": [t], "device": cfg.device}
                    latency += _run_job(spec, timing, img_file, tmp, cfg.isolate)
    return latency


def _parity_or_error(model: Path, predict, y: np.ndarray, labels, reference, floor: float, max_drop: float) -> ParityRow:
    """One parity row; a model that cannot run on the data gives an error row instead of ending the bench."""
    try:
        return parity_row(model.name, predict(), y, labels, reference, floor=floor, max_drop=max_drop)
    except (ValueError, RuntimeError, UserError) as exc:
        return ParityRow.error(model.name, str(exc).splitlines()[0][:300], n=int(len(y)))


def _reference(run: Path, cfg: BenchConfig, x: np.ndarray) -> tuple[np.ndarray, dict] | None:
    """The stored Keras reference; computed (and stored) when missing and TensorFlow is installed."""
    from edgetune.benchmarks.keras_baseline import tensorflow_available

    if cfg.reference == "off":
        return None
    if cfg.reference == "auto":
        # With --data-root the files live elsewhere; the reference records paths relative to the data root.
        ref = read_reference(run, cfg.split)
        if ref is not None:
            return ref
        if not tensorflow_available():
            print(f"note: {run}/reference/ is missing and TensorFlow is not installed: accuracy without the Keras "
                  "comparison (copy reference/ from the training machine)", file=sys.stderr)
            return None
    if cfg.data_root is not None:
        raise UserError("computing the Keras reference with --data-root is not supported; compute it where the run was trained")
    write_reference(run, cfg.split, images=x)
    return read_reference(run, cfg.split)


def _run_job(spec: dict[str, Any], timing: Timing, img_file: str | None, tmp: str, isolate: bool) -> list[dict[str, Any]]:
    """Run one latency job, in a fresh Python process when `isolate`; failures become error rows."""
    spec = {**spec, "timing": timing.__dict__, "image": img_file}
    if not isolate:
        from edgetune.benchmarks import _worker

        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(json.dumps(spec))
        out_file = Path(tmp) / "rows.json"
        _worker.main([str(spec_file), str(out_file)])
        return json.loads(out_file.read_text())
    spec_file = Path(tempfile.mkstemp(suffix=".json", dir=tmp)[1])
    out_file = spec_file.with_suffix(".out.json")
    spec_file.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "edgetune.benchmarks._worker", str(spec_file), str(out_file)],
                          capture_output=True, text=True)
    name = Path(spec.get("model") or "model.keras").name if spec["kind"] == "model" else "keras"
    if proc.returncode != 0 or not out_file.is_file():
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        mode = "predictor" if spec["kind"] == "model" else "keras_predict"
        return [LatencyRow(name=name, mode=mode, threads=t, status="error", device=spec["device"],
                           note=f"worker exit {proc.returncode}: {' | '.join(tail)[:300]}").to_dict() for t in spec["threads"]]
    rows = json.loads(out_file.read_text())
    # LiteRT logs "Created TensorFlow Lite XNNPACK delegate" once per process: a fresh process per
    # model makes that log a per-model confirmation that XNNPACK really ran.
    xnnpack_logged = "XNNPACK delegate" in (proc.stderr or "")
    for r in rows:
        if r.get("format") == "tflite" and r.get("accelerator") == "XNNPACK":
            r["accelerator_confirmed"] = xnnpack_logged
    return rows
