"""One latency job in a fresh process: `python -m edgetune.benchmarks._worker SPEC.json OUT.json`.

A fresh process per model gives each model its own peak RSS, lets LiteRT log (once per process)
whether it created the XNNPACK delegate, and lets TensorFlow size its thread pools before it starts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    from edgetune._memory import keep_freed_memory

    keep_freed_memory()  # as the `edgetune` command does: the file -> label rows time what a user's run gets
    spec = json.loads(Path(argv[0]).read_text())
    from edgetune.benchmarks.latency import Timing

    timing = Timing(**spec["timing"])
    image = np.load(spec["image"]) if spec.get("image") else None
    if spec["kind"] == "keras":
        from edgetune.benchmarks.keras_baseline import bench_keras

        rows = bench_keras(spec["run"], spec["threads"][0], timing, image=image, device=spec["device"])
    else:
        from edgetune.benchmarks.latency import bench_model

        rows = bench_model(spec["model"], spec["threads"], timing, image=image, e2e_files=spec.get("e2e_files", ()),
                           throughput_files=spec.get("throughput_files", ()),
                           labels=spec.get("labels"), size=spec.get("size"), input_range=spec.get("input_range"),
                           device=spec["device"], raw=spec.get("raw", True),
                           decode_workers=spec.get("decode_workers"), interpreters=spec.get("interpreters"))
    Path(argv[1]).write_text(json.dumps([r.to_dict() for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
