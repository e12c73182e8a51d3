"""Table of every export of a converted run: verdict, agreement with its interval, drop, p50 latency, size.

    .venv/bin/python scripts/quant_table.py RUN_DIR [--runs 40] [--rounds 3] [--json out.json]

Parity comes from each `<preset>.json` (all held-out images, written by `edgetune convert`), failed
presets included (export/failed/). Latency: p50 of one image through `edgetune.runtime.Predictor` at 1
and 2 threads; the models are timed in interleaved rounds (each round times every model once, the p50 is
the median over all rounds' samples) so that a busy machine slows them alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgetune.contract import read_metadata
from edgetune.runtime import Predictor


def models(run: Path) -> list[Path]:
    export = run / "export"
    found = [p for folder in (export, export / "failed") if folder.is_dir() for p in sorted(folder.iterdir())
             if p.suffix in (".tflite", ".onnx")]
    return sorted(found, key=lambda p: p.stem)


def latency(paths: list[Path], threads: int, runs: int, rounds: int) -> dict[str, float]:
    predictors = {p: Predictor.from_path(p, threads=threads) for p in paths}
    x = {p: np.random.default_rng(0).uniform(0, 255, (1, *pr.size, 3)).astype(np.float32) for p, pr in predictors.items()}
    samples: dict[Path, list[float]] = {p: [] for p in paths}
    for _ in range(rounds):
        for p, pr in predictors.items():
            for _ in range(5):
                pr.predict(x[p])
            for _ in range(runs):
                t0 = time.perf_counter()
                pr.predict(x[p])
                samples[p].append((time.perf_counter() - t0) * 1e3)
    return {p.stem: float(np.median(v)) for p, v in samples.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    paths = models(args.run)
    lat = {t: latency(paths, t, args.runs, args.rounds) for t in (1, 2)}
    int8 = {t: lat[t].get("tflite_int8") for t in (1, 2)}
    rows = []
    print("| preset | verdict | agreement (95% CI) | drop points (95% CI) | p50 ms 1 thr | p50 ms 2 thr | x int8 (1 / 2) | size KB |")
    print("|---|---|---|---|---:|---:|---|---:|")
    for p in paths:
        meta = read_metadata(p)
        par = meta.extra.get("parity", {})
        lo, hi = par.get("agreement_ci95") or (0, 0)
        dlo, dhi = par.get("drop_ci95") or (0, 0)
        ratio = " / ".join(f"{lat[t][p.stem] / int8[t]:.2f}" if int8[t] else "-" for t in (1, 2))
        row = {"preset": p.stem, "verdict": par.get("verdict"), "n": par.get("n"), "agreement": par.get("agreement"),
               "agreement_ci95": [lo, hi], "drop_points": par.get("drop_points"), "drop_ci95": [dlo, dhi],
               "p50_ms": {t: lat[t][p.stem] for t in (1, 2)}, "size_bytes": p.stat().st_size,
               "float_layers": len(meta.extra.get("quantization", {}).get("float_layers", []))}
        rows.append(row)
        print(f"| {p.stem} | {row['verdict']} | {row['agreement'] * 100:.2f}% ({lo * 100:.1f}-{hi * 100:.1f}) | "
              f"{row['drop_points']:+.2f} ({dlo:+.2f} to {dhi:+.2f}) | {lat[1][p.stem]:.2f} | {lat[2][p.stem]:.2f} | "
              f"{ratio} | {p.stat().st_size / 1024:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run), "n": rows[0]["n"] if rows else 0, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
