"""One config dataclass per command: BenchConfig, CompareConfig (flags via edgetune._config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgetune import UserError
from edgetune._config import opt


def parse_threads(spec: str, cores: int | None = None) -> list[int]:
    """'1,2,all' -> [1, 2, cores] (deduplicated, sorted); 'all' is every core this process may use."""
    if cores is None:
        from edgetune.runtime import default_threads

        cores = default_threads()
    out = set()
    for part in str(spec).replace(" ", "").split(","):
        if not part:
            continue
        if part == "all":
            out.add(cores)
            continue
        try:
            n = int(part)
        except ValueError:
            raise UserError(f"--threads {spec!r}: expected a comma list of numbers and 'all'") from None
        if n < 1:
            raise UserError(f"--threads {spec!r}: thread counts must be >= 1")
        out.add(n)
    if not out:
        raise UserError("--threads is empty")
    return sorted(out)


@dataclass
class BenchConfig:
    """`edgetune bench`: parity against Keras and latency of exported models on this machine."""

    targets: list[Path] = opt("run dirs (their export/*.tflite|.onnx) and/or model files", None, cli=False)
    labels: str | None = opt("labels file for models without metadata (third-party .tflite)", None)
    size: int | None = opt("input size for models without metadata", None)
    input_range: str | None = opt("input range for models without metadata: raw, 0,255, -1,1, 0,1", None)
    images: Path | None = opt("labelled images for accuracy without a run: class folders named like the labels, or a 'path<TAB>label' list", None)
    split: str = opt("run split used for parity: heldout (validation + test: every image the run did not train on), "
                     "val or test", "heldout", choices=["heldout", "val", "test"])
    data_root: Path | None = opt("where the run's images are on this machine (overrides metadata source.data_root)", None)
    threads: str = opt("thread counts, comma separated; 'all' = every usable core", "1,2,all")
    warmup: int = opt("warm-up runs before timing", 10)
    min_runs: int = opt("timed runs: at least this many ...", 50)
    min_time: float = opt("... and at least this many seconds", 1.0)
    max_drop: float = opt("accuracy budget: largest allowed drop vs Keras, in percentage points", 0.5)
    int8_floor: float = opt("top-1 agreement with Keras an integer model must reach with 95% confidence", 0.97)
    float_floor: float = opt("top-1 agreement with Keras a float model must reach with 95% confidence", 0.98)
    pruned_floor: float = opt("top-1 agreement with Keras a pruned model must reach with 95% confidence", 0.93)
    device: str = opt("cpu, or gpu (ONNX Runtime CUDA provider, TensorFlow GPU); unavailable rows where absent", "cpu", choices=["cpu", "gpu"])
    keras: str = opt("Keras baseline rows: auto (when TensorFlow is installed), on, off", "auto", choices=["auto", "on", "off"])
    reference: str = opt("Keras reference predictions: auto (read, compute if missing and TensorFlow is here), recompute, off", "auto", choices=["auto", "recompute", "off"])
    e2e: bool = opt("time image file -> label end to end (needs images)", True)
    raw: bool = opt("time the raw interpreter invoke beside the Predictor", True)
    isolate: bool = opt("measure each model in its own process (per-model peak RSS, confirmed XNNPACK, clean TF threads)", True)
    baseline: str = opt("row the speed-up column is relative to (e.g. 'keras predict', 'keras tf.function', "
                        "'tflite_fp32.tflite')", "keras predict")
    name: str | None = opt("device name in results and tables (default: hostname-kind)", None)
    out: Path | None = opt("results JSON (default: RUN_DIR/results/<device>.json, or results/<device>.json)", None)

    def validate(self) -> None:
        checks = [
            (bool(self.targets), "give at least one run dir or model file"),
            (self.warmup >= 0, f"--warmup must be >= 0, got {self.warmup}"),
            (self.min_runs >= 1, f"--min-runs must be >= 1, got {self.min_runs}"),
            (self.min_time >= 0, f"--min-time must be >= 0, got {self.min_time}"),
            (self.max_drop >= 0, f"--max-drop must be >= 0, got {self.max_drop}"),
            (all(0 <= f <= 1 for f in (self.int8_floor, self.float_floor, self.pruned_floor)), "agreement floors must be in [0, 1]"),
            (self.size is None or self.size >= 1, f"--size must be >= 1, got {self.size}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        parse_threads(self.threads)


@dataclass
class CompareConfig:
    """`edgetune compare`: merge results from several devices into one table and plots."""

    results: list[Path] = opt("results JSON files (from edgetune bench)", None, cli=False)
    baseline: str = opt("row the speed-ups are relative to, per device and thread count", "keras predict")
    threads: int | None = opt("thread count for the plots and the cross-device table (default: the largest per device)", None)
    out: Path = opt("folder for compare.md and the plots", Path("results/compare"))
