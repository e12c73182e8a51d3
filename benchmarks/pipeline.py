"""`run_pipeline`: train -> convert (all presets) -> Keras reference -> parity + latency -> report.md.

The README's main job. Every stage is called through its Python API (no subprocesses), and every
stage's output is the next one's input on disk, so a failed stage can be re-run alone
(`edgetune convert RUN_DIR`, `edgetune bench RUN_DIR`) and `--resume` (default) skips what is done.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from edgetune import UserError
from edgetune.benchmarks.config import BenchConfig, PipelineConfig

QUICK = {"image_size": 96, "epochs": 1, "fine_tune_epochs": 1, "threads": "1,all", "min_runs": 20, "min_time": 0.3}
QUICK_PRESETS = ("tflite_fp32", "tflite_int8", "onnx_fp32")
"""Preset subset of --quick: the float reference, the int8 edge model and ONNX (no tfmot fine-tunes)."""
TRAINING_PLOTS = ("learning_curves.png", "confusion_matrix.png", "sample_predictions.png")


def _log(msg: str) -> None:
    print(f"[pipeline] {msg}", file=sys.stderr, flush=True)


def quick_subset(data: Path, dest: Path, per_class: int) -> Path:
    """Copy the first `per_class` files (sorted) of every class folder of every split folder into `dest`.

    Keeps the data set's layout (train/, validation/, test/ or one class-folder tree), so training
    makes the same splits it would on the full set. Written to a temporary folder, then renamed.
    """
    if dest.is_dir():
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    copied = 0
    for class_dir in sorted(p for p in data.rglob("*") if p.is_dir()):
        files = sorted(f for f in class_dir.iterdir() if f.is_file() and not f.name.startswith("."))
        if not files or any(c.is_dir() for c in class_dir.iterdir()):
            continue
        target = tmp / class_dir.relative_to(data)
        target.mkdir(parents=True, exist_ok=True)
        for f in files[:per_class]:
            shutil.copy2(f, target / f.name)
            copied += 1
    if not copied:
        raise UserError(f"{data}: no class folders with images found")
    tmp.rename(dest)
    return dest


def _convert(run: Path, presets: list[str] | None, quick: bool) -> list[Path]:
    """Export the run through the convert stage's API; returns the model files placed in run/export.

    A preset that fails its own parity floor is moved aside by convert (export/failed/) and is not
    benchmarked; the convert summary says why.
    """
    from edgetune.convert import ConvertConfig, convert_run, summary_table

    spec = ",".join(presets) if presets else (",".join(QUICK_PRESETS) if quick else "all")
    cc = ConvertConfig(run=run, preset=spec)
    if quick:
        cc.calibration_images = 32
    rows = convert_run(cc)
    print(summary_table(rows), file=sys.stderr)
    return sorted(p for p in (run / "export").glob("*") if p.suffix in (".tflite", ".onnx"))


def _data(cfg: PipelineConfig, out: Path) -> Path:
    """The data folder: --data, else the tutorial's cats-vs-dogs from the cache (downloaded when missing)."""
    if cfg.data is not None:
        data = Path(cfg.data)
    else:
        from edgetune.train.datasets import fetch

        _log("data: the tutorial's cats-vs-dogs (cache, or download)")
        try:
            data = fetch("cats-vs-dogs")
        except UserError as exc:
            raise UserError(f"{exc}. For the pipeline: pass --data DIR, or seed the cache once with "
                            "`edgetune data fetch cats-vs-dogs --from PATH`") from exc
    if not data.is_dir():
        raise UserError(f"--data {data} is not a folder")
    if cfg.quick:
        data = quick_subset(data, out.with_name(out.name + ".quick-data"), cfg.quick_images)
        _log(f"--quick: {cfg.quick_images} images per class and split folder in {data}")
    return data


def run_pipeline(cfg: PipelineConfig) -> Path:
    """Run every stage into `cfg.out`; returns the path of report.md.

    Raises:
        UserError: Bad flags, missing data, or a stage that is not installed.
    """
    from edgetune.benchmarks.bench import run_bench
    from edgetune.benchmarks.compare import compare_report

    out = Path(cfg.out)
    q = QUICK if cfg.quick else {}

    # 1. train (the data is only needed when training runs)
    if cfg.resume and (out / "metadata.json").is_file() and (out / "model.keras").is_file():
        _log(f"train: {out} is complete, reused (--no-resume to retrain)")
    else:
        from edgetune.train import TrainConfig, train_run

        data = _data(cfg, out)
        tc = TrainConfig(data=data, out=out, weights=cfg.weights, seed=cfg.seed,
                         image_size=cfg.image_size or q.get("image_size", 160),
                         epochs=cfg.epochs or q.get("epochs", 10),
                         fine_tune_epochs=cfg.fine_tune_epochs if cfg.fine_tune_epochs is not None else q.get("fine_tune_epochs", 10),
                         resume=cfg.resume and out.exists(), force=not cfg.resume and out.exists(),
                         verbose=2 if cfg.quick else 1)
        if cfg.quick:
            tc.batch_size = 16
        _log(f"train: {tc.epochs}+{tc.fine_tune_epochs} epochs at {tc.image_size} px -> {out}")
        out = Path(train_run(tc))

    # 2. convert
    presets = [p for p in cfg.presets.split(",") if p] if cfg.presets else None
    existing = sorted(p for p in (out / "export").glob("*") if p.suffix in (".tflite", ".onnx"))
    if cfg.resume and existing and presets is None:
        _log(f"convert: {len(existing)} exports in {out / 'export'} reused")
    else:
        _log(f"convert: presets {','.join(presets) if presets else ('quick subset' if cfg.quick else 'all')}")
        existing = _convert(out, presets, cfg.quick)
    if not existing:
        raise UserError(f"convert produced no models in {out / 'export'}")

    # 3 + 4. Keras reference, parity and latency on this machine (bench writes the reference)
    full = BenchConfig(targets=[out])
    pick = lambda name: getattr(cfg, name) if getattr(cfg, name) is not None else q.get(name, getattr(full, name))  # noqa: E731
    bc = BenchConfig(targets=[out], threads=pick("threads"), min_runs=pick("min_runs"), min_time=pick("min_time"),
                     max_drop=cfg.max_drop, device=cfg.device, reference="auto")
    _log(f"bench: {len(existing)} models, threads {bc.threads}")
    results = run_bench(bc)

    # 5. report
    text, plots = compare_report([results], out / "results", details=False)
    return write_report(out, results, text, cfg)


def write_report(run: Path, results: dict[str, Any], compare_text: str, cfg: PipelineConfig) -> Path:
    """report.md in the run dir: training summary and plots, parity, latency, recommendation, plots."""
    from edgetune.benchmarks.results import markdown_report

    lines = [f"# edgetune pipeline report: {run.name}", ""]
    metrics = _training_metrics(run)
    if metrics:
        lines += [metrics, ""]
    lines += [markdown_report(results), ""]
    lines += ["## Comparison view", "", compare_text.replace("](", "](results/"), ""]
    plots = [p for p in TRAINING_PLOTS if (run / p).is_file()]
    if plots:
        lines += ["## Training plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    lines += ["Reproduce: `edgetune pipeline" + (" --quick" if cfg.quick else "") + f" --out {run}`; results JSON: "
              f"`{Path(results.get('_path', '')).relative_to(run) if results.get('_path') else ''}`"]
    path = run / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _training_metrics(run: Path) -> str:
    from edgetune.contract import read_metadata
    from edgetune.stats import format_accuracy

    try:
        m = read_metadata(run / "metadata.json").extra.get("metrics", {})
    except Exception:  # a report without the training summary beats no report
        return ""
    final = m.get("final", {})
    parts = []
    for split in ("val", "test"):
        acc, n = final.get(split, {}).get("accuracy"), final.get(split, {}).get("n")
        if acc is not None:
            parts.append(f"{split} accuracy " + (format_accuracy(acc, n) if n else f"{acc * 100:.1f}%"))
    secs = [m.get(s, {}).get("seconds") for s in ("stage1", "stage2")]
    if any(secs):
        parts.append("training " + " + ".join(f"{s:.0f} s" for s in secs if s))
    return "Training (Keras): " + ", ".join(parts) if parts else ""
