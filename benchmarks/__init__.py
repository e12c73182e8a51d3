"""edgetune.benchmarks: accuracy parity and latency of exported models, merged across devices.

    from edgetune.benchmarks import BenchConfig, run_bench, run_compare
    results = run_bench(BenchConfig(targets=[Path("runs/cats_vs_dogs")]))   # results JSON + Markdown

Benchmarks are functions that return rows (`bench_model`, `bench_keras`, `parity_row`); the results
JSON, the Markdown tables and the plots are views of those rows. Nothing here imports TensorFlow
at import time: the Keras reference and baseline rows import it inside their functions, so the
same code runs on a Raspberry Pi. Names resolve lazily (PEP 562).
"""

from __future__ import annotations

from edgetune._lazy import lazy_exports

_EXPORTS = {
    "BenchConfig": "edgetune.benchmarks.config",
    "CompareConfig": "edgetune.benchmarks.config",
    "parse_threads": "edgetune.benchmarks.config",
    "run_bench": "edgetune.benchmarks.bench",
    "run_compare": "edgetune.benchmarks.compare",
    "compare_report": "edgetune.benchmarks.compare",
    "merge_rows": "edgetune.benchmarks.compare",
    "Timing": "edgetune.benchmarks.latency",
    "LatencyRow": "edgetune.benchmarks.latency",
    "bench_model": "edgetune.benchmarks.latency",
    "bench_keras": "edgetune.benchmarks.keras_baseline",
    "Gate": "edgetune.benchmarks.parity",
    "ParityRow": "edgetune.benchmarks.parity",
    "parity_row": "edgetune.benchmarks.parity",
    "gate_summary": "edgetune.benchmarks.parity",
    "within_budget": "edgetune.benchmarks.parity",
    "write_reference": "edgetune.benchmarks.reference",
    "save_reference": "edgetune.benchmarks.reference",
    "read_reference": "edgetune.benchmarks.reference",
    "load_split_images": "edgetune.benchmarks.reference",
    "read_results": "edgetune.benchmarks.results",
    "validate_results": "edgetune.benchmarks.results",
    "recommend": "edgetune.benchmarks.results",
    "markdown_report": "edgetune.benchmarks.results",
    "fingerprint": "edgetune.benchmarks.env",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
