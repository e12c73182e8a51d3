"""`edgetune pipeline`, the main job: train -> convert (all presets) -> Keras reference -> parity + latency -> report.md.

Every stage is called through its Python API and writes its output to disk, where the next stage reads
it, so a stage can also be re-run alone (`edgetune convert RUN_DIR`, `edgetune bench RUN_DIR`). With
`--reuse` (the default) a second call continues where the first one stopped: a complete training run is
reused, an interrupted one is resumed from its last epoch checkpoint, and convert makes only the presets
that `export/convert_report.json` does not list as done.

This module imports only the lean top package at import time: train, convert and bench (TensorFlow)
are imported inside the stages.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetune import UserError
from edgetune._config import opt
from edgetune.outputs import check_output, is_complete, staged_output

# 10 head epochs cost ~1 s on cached features and give the smoke model real answers (1 gave chance level)
QUICK = {"image_size": 96, "epochs": 10, "fine_tune_epochs": 1, "threads": "1,all", "min_runs": 20, "min_time": 0.3}
QUICK_PRESETS = ("tflite_fp32", "tflite_int8", "onnx_fp32")
"""Preset subset of --quick: the float reference, the int8 edge model and ONNX (no tfmot fine-tunes)."""


@dataclass
class PipelineConfig:
    """`edgetune pipeline`: train -> convert (all presets) -> parity -> latency -> report.md."""

    data: Path | None = opt("image folders (default: the tutorial's cats-vs-dogs, fetched into the cache)", None)
    out: Path = opt("run dir to create (training artifacts, export/, reference/, results/, report.md)", Path("runs/cats_vs_dogs"))
    quick: bool = opt("smoke version: few images, small size, 10+1 epochs, a subset of presets", False)
    recipe: str | None = opt("training recipe (see edgetune train --help); default: train's default", None)
    weights: str = opt("base weights: imagenet, a .weights.h5 PATH, or none", "imagenet")
    image_size: int | None = opt("model input size (default: train's; 96 with --quick)", None)
    epochs: int | None = opt("stage 1 epochs (default: the recipe's; 10 with --quick)", None)
    fine_tune_epochs: int | None = opt("stage 2 epochs (default: the recipe's; 1 with --quick)", None)
    quick_images: int = opt("--quick: images per class and split folder taken from the data", 24)
    presets: str | None = opt("comma-separated convert presets (default: all; a small subset with --quick)", None)
    threads: str | None = opt("latency thread counts (default 1,2,all; 1,all with --quick)", None)
    min_runs: int | None = opt("timed runs per latency row, at least (default 50; 20 with --quick)", None)
    min_time: float | None = opt("seconds per latency row, at least (default 1.0; 0.3 with --quick)", None)
    max_drop: float = opt("accuracy budget in percentage points (convert's gate and bench)", 0.5)
    int8_floor: float = opt("top-1 agreement an integer export must reach with 95% confidence", 0.97)
    float_floor: float = opt("top-1 agreement a float export must reach with 95% confidence", 0.98)
    pruned_floor: float = opt("top-1 agreement a pruned export must reach with 95% confidence", 0.93)
    device: str = opt("cpu or gpu", "cpu", choices=["cpu", "gpu"])
    seed: int = opt("seed for training", 0)
    reuse: bool = opt("continue in --out: reuse a complete training run, resume an interrupted one, convert only the "
                      "presets not done yet (--no-reuse starts over, which needs --force over an existing run)", True)
    force: bool = opt("with --no-reuse: replace an existing edgetune run in --out", False)


@dataclass
class PipelineResult:
    """What the main job produced, and whether it reached its goal (an integer model within the budget)."""

    report: Path
    run: Path
    problems: list[str] = field(default_factory=list)
    """Presets that failed or were inconclusive, with their reasons (the report's first lines)."""
    integer_ok: bool = True
    """At least one integer (quantized) model passed the gate or was inconclusive within the budget."""

    @property
    def exit_code(self) -> int:
        return 0 if self.integer_ok else 1


def _log(msg: str) -> None:
    print(f"[pipeline] {msg}", file=sys.stderr, flush=True)


def quick_subset(data: Path, dest: Path, per_class: int) -> Path:
    """Copy the first `per_class` files (sorted) of every class folder of every split folder into `dest`.

    Keeps the data set's layout (train/, validation/, test/ or one class-folder tree), so training makes
    the same splits it would on the full set. `dest` is an edgetune output ("quick-data"): reused when
    complete, written atomically, never over a folder edgetune did not make.
    """
    if is_complete(dest, "quick-data"):
        return dest
    copied = 0
    with staged_output(dest, "quick-data", inputs=[data], force=True) as tmp:
        for class_dir in sorted(p for p in Path(data).rglob("*") if p.is_dir()):
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
    return dest


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


def _train_stage(cfg: PipelineConfig, out: Path) -> Path:
    """Reuse a complete run, resume an interrupted one, or train; ends with a one-line summary."""
    if cfg.reuse and is_complete(out, "run"):
        _log(f"train: {out} is complete, reused (--no-reuse --force to retrain)")
        _log("train: " + training_summary(out))
        return out
    from edgetune.train import TrainConfig, train_run

    if not cfg.reuse:
        check_output(out, "run", force=cfg.force)
    data = _data(cfg, out)
    q = QUICK if cfg.quick else {}
    chosen = {"recipe": cfg.recipe, "image_size": cfg.image_size or q.get("image_size"),
              "epochs": cfg.epochs or q.get("epochs"),
              "fine_tune_epochs": cfg.fine_tune_epochs if cfg.fine_tune_epochs is not None else q.get("fine_tune_epochs")}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: v for k, v in chosen.items() if v is not None and k in known}
    resume = cfg.reuse and _resumable(out)
    tc = TrainConfig(data=data, out=out, weights=cfg.weights, seed=cfg.seed, resume=resume, force=cfg.force and not cfg.reuse,
                     verbose=2 if cfg.quick else 1, **kw)
    if cfg.quick:
        tc.batch_size = 16
    _log(("train: resuming the interrupted run " if resume else "train: ") + f"-> {out}")
    run = Path(train_run(tc))
    _log("train: " + training_summary(run))
    return run


def _resumable(out: Path) -> bool:
    """Whether an interrupted `edgetune train` left a checkpoint to resume from."""
    try:
        from edgetune.train.trainer import resumable
    except ImportError:  # an edgetune without the helper: look for the checkpoint by hand
        partial = out.with_name(out.name + ".partial")
        return (partial / "checkpoint" / "state.json").is_file()
    return resumable(out)


def _wanted_presets(cfg: PipelineConfig) -> list[str]:
    from edgetune.convert import PRESETS

    if cfg.presets:
        return [p.strip() for p in cfg.presets.split(",") if p.strip()]
    return list(QUICK_PRESETS) if cfg.quick else list(PRESETS)


def converted(run: Path) -> dict[str, dict[str, Any]]:
    """{preset: row} of convert_report.json for this run (rows of presets whose files are still in place)."""
    import json

    try:
        rows = json.loads((Path(run) / "export" / "convert_report.json").read_text()).get("rows", [])
    except (OSError, ValueError, AttributeError):
        return {}
    return {r["preset"]: r for r in rows if isinstance(r, dict) and r.get("preset")}


def _convert_stage(cfg: PipelineConfig, run: Path) -> None:
    """Convert the wanted presets that are not done yet for this model.keras; ends with a one-line summary."""
    from edgetune.convert import ConvertConfig, convert_run, done_presets

    wanted = _wanted_presets(cfg)
    done = done_presets(run) if cfg.reuse else set()
    todo = [p for p in wanted if p not in done]
    if done & set(wanted):
        _log(f"convert: {len(done & set(wanted))} presets already done for this model, reused")
    if todo:
        _log(f"convert: {','.join(todo)}")
        known = {f.name for f in dataclasses.fields(ConvertConfig)}
        gate = {k: getattr(cfg, k) for k in ("max_drop", "int8_floor", "float_floor", "pruned_floor") if k in known}
        cc = ConvertConfig(run=run, preset=",".join(todo), **gate)
        if cfg.quick:
            cc.calibration_images = 32
        convert_run(cc)
    rows = [r for p, r in converted(run).items() if p in wanted]
    counts = {s: [r["preset"] for r in rows if r.get("status") == s] for s in ("ok", "inconclusive", "failed", "error")}
    _log("convert: " + ", ".join(f"{len(v)} {'passed' if s == 'ok' else s}" + (f" ({', '.join(v)})" if v and s != "ok" else "")
                                 for s, v in counts.items() if v))


def run_pipeline(cfg: PipelineConfig) -> PipelineResult:
    """Run every stage into `cfg.out`; returns the report and whether an integer model met the budget.

    Raises:
        UserError: Bad flags, missing data, a refused output folder, or a stage that is not installed.
    """
    from edgetune.benchmarks.bench import run_bench
    from edgetune.benchmarks.compare import compare_report
    from edgetune.benchmarks.config import BenchConfig
    from edgetune.report import pipeline_report

    out = Path(cfg.out)
    _check_out(cfg, out)
    run = _train_stage(cfg, out)
    _convert_stage(cfg, run)
    if not any(p.suffix in (".tflite", ".onnx") for p in (run / "export").glob("*")):
        _log(f"convert: no model passed in {run / 'export'}; bench measures Keras only")
    q = QUICK if cfg.quick else {}
    full = BenchConfig(targets=[run])
    pick = lambda name: getattr(cfg, name) if getattr(cfg, name) is not None else q.get(name, getattr(full, name))  # noqa: E731
    bc = BenchConfig(targets=[run], threads=pick("threads"), min_runs=pick("min_runs"), min_time=pick("min_time"),
                     max_drop=cfg.max_drop, int8_floor=cfg.int8_floor, float_floor=cfg.float_floor,
                     pruned_floor=cfg.pruned_floor, device=cfg.device, reference="auto")
    _log(f"bench: parity on every held-out image, latency at threads {bc.threads}")
    results = run_bench(bc)
    _log("bench: " + results["recommendation"]["line"])
    text, _plots = compare_report([results], run / "results", details=False)
    result = pipeline_report(run, results, converted(run), text, reproduce=_reproduce(cfg, run))
    for line in result.problems:
        _log(line)
    return result


def _check_out(cfg: PipelineConfig, out: Path) -> None:
    """Refuse a bad --out before anything is written (the --quick data subset lives beside it)."""
    if is_complete(out, "run") or out.with_name(out.name + ".partial").is_dir():
        check_output(out, "run", inputs=[cfg.data], force=True)  # ours: reused, resumed or (with --force) replaced
    else:
        check_output(out, "run", inputs=[cfg.data], force=cfg.force)
    if cfg.quick:
        check_output(out.with_name(out.name + ".quick-data"), "quick-data", inputs=[cfg.data], force=True)


def _reproduce(cfg: PipelineConfig, run: Path) -> str:
    flags = [f"--out {run}"] + (["--quick"] if cfg.quick else []) + ([f"--data {cfg.data}"] if cfg.data else [])
    return "edgetune pipeline " + " ".join(flags)


def training_summary(run: Path) -> str:
    """One line: each stage's validation and test accuracy with its interval, and the training time."""
    from edgetune.contract import read_metadata
    from edgetune.stats import format_accuracy

    try:
        m = read_metadata(run / "metadata.json").extra.get("metrics", {})
    except Exception:  # a report without the training summary beats no report
        return "no training metrics found"
    parts = []
    for stage in ("stage1", "stage2"):
        s = m.get(stage)
        if not s:
            continue
        accs = [f"{split} {format_accuracy(s[split]['accuracy'], s[split]['n'])}" for split in ("val", "test")
                if split in s and s[split].get("n")]
        parts.append(f"{stage} ({s.get('seconds', 0):.0f} s): " + ", ".join(accs))
    return "; ".join(parts) or "no training metrics found"
