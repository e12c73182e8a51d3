"""Benchmark: the tutorial's plain recipe vs edgetune's fast path, in one run, same data and seed.

    python scripts/bench_train_speed.py --data ../shared/assets/cats_and_dogs_filtered \
        --weights ../shared/assets/mobilenet_v2/mobilenet_v2_1.0_imagenet_no_top.weights.h5

Prints one table (wall time per stage, validation and test accuracy) and writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from edgetune.train import TrainConfig, train_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--fine-tune-epochs", type=int, default=10)
    p.add_argument("--feature-copies", type=int, default=TrainConfig.feature_copies)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default="plain,fast", help="comma-separated: plain, fast")
    p.add_argument("--json", type=Path, default=Path("results/train_speed.json"))
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetune-bench-") as tmp:
        for mode in args.modes.split(","):
            cfg = TrainConfig(data=args.data, out=Path(tmp) / mode, weights=args.weights, epochs=args.epochs,
                              fine_tune_epochs=args.fine_tune_epochs, seed=args.seed, verbose=2,
                              cache_features="off" if mode == "plain" else "memory", feature_copies=args.feature_copies)
            t0 = time.perf_counter()
            run = train_run(cfg)
            total = time.perf_counter() - t0
            m = json.loads((run / "metrics.json").read_text())
            rows.append({"mode": mode, "total_s": round(total, 1), "stage1_s": m["stage1"]["seconds"],
                         "stage2_s": m.get("stage2", {}).get("seconds", 0.0),
                         "stage1_val": m["stage1"]["val"]["accuracy"], "final_val": m["final"]["val"]["accuracy"],
                         "test": m["final"]["test"]["accuracy"]})
    print("| mode | total s | stage 1 s | stage 2 s | stage 1 val | final val | test |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['total_s']:.0f} | {r['stage1_s']:.0f} | {r['stage2_s']:.0f} | "
              f"{r['stage1_val']:.4f} | {r['final_val']:.4f} | {r['test']:.4f} |")
    if len(rows) == 2:
        print(f"speed-up (total wall time, plain / fast): {rows[0]['total_s'] / rows[1]['total_s']:.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"feature_copies": args.feature_copies, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
