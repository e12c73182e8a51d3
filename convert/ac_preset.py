"""The tflite_int8_ac preset: int8 with the fewest most sensitive layers in float until the budget holds.

Calibrate once; if plain int8 already agrees with Keras on at least --ac-min-agreement of the held-out
images and loses at most --max-drop points, that is the model. Otherwise rank the quantized ops by
their own rounding error (QuantizationDebugger, in int8 steps) and keep the worst ones in float, as few
as meet both targets (`accuracy_control.search`). The JSON records which layers, why, every trial and
the latency cost against plain int8 (p50 through the edgetune runtime at 1 and 2 threads).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from edgetune.contract import read_metadata
from edgetune.convert.config import ConvertConfig
from edgetune.convert.inputs import Inputs
from edgetune.convert.presets import Preset

LATENCY_RUNS = 40


def _judge_bytes(inp: Inputs, cfg: ConvertConfig, preset: Preset, scratch: Path):
    from edgetune.convert.exporter import judge, predict_heldout

    meta = read_metadata(inp.model_file)

    def judge_model(model: bytes) -> tuple[float, float]:
        scratch.write_bytes(model)
        row = judge(inp, cfg, preset, predict_heldout(scratch, meta, inp))
        return row.agreement, row.drop_points

    return judge_model


def p50_ms(model: bytes, inp: Inputs, scratch: Path, threads: int) -> float:
    """Median latency of one image through the edgetune runtime (after warm-up)."""
    from edgetune.runtime import Predictor, open_backend

    scratch.write_bytes(model)
    predictor = Predictor(open_backend(scratch, threads=threads), read_metadata(inp.model_file), path=scratch)
    x = inp.heldout_x[:1]
    for _ in range(10):
        predictor.predict(x)
    times = []
    for _ in range(LATENCY_RUNS):
        t0 = time.perf_counter()
        predictor.predict(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def export_int8_ac(inp: Inputs, cfg: ConvertConfig, preset: Preset, out: Path) -> dict:
    """Write the accuracy-controlled int8 model to `out`; returns its quantization details for the metadata."""
    from edgetune.convert.accuracy_control import SelectiveQuantizer, Trial, search

    scratch = out.parent / f".{preset.name}.trial.tmp.tflite"
    try:
        quantizer = SelectiveQuantizer(inp.saved_model, inp.calibration)
        judge_model = _judge_bytes(inp, cfg, preset, scratch)
        plain = quantizer.model()
        agreement, drop = judge_model(plain)
        trials = [Trial(0, agreement, drop, agreement >= cfg.ac_min_agreement and drop <= cfg.max_drop + 1e-9)]
        chosen, float_layers, ranking = plain, [], []
        if not trials[0].met:
            print(f"{preset.name}: plain int8 agrees on {agreement * 100:.2f}% (drop {drop:+.2f} points); ranking layers",
                  file=sys.stderr)
            ranking = quantizer.layer_errors()
            chosen, float_layers, trials = search(quantizer, ranking, judge_model, cfg.ac_min_agreement, cfg.max_drop,
                                                  cfg.ac_max_float_layers)
        out.write_bytes(chosen)
        latency = {name: {str(t): round(p50_ms(m, inp, scratch, t), 3) for t in (1, 2)}
                   for name, m in (("tflite_int8", plain), (preset.name, chosen))}
    finally:
        scratch.unlink(missing_ok=True)
    by_tensor = {e.tensor: e for e in ranking}
    return {"quantization": {
        "method": "int8 (float input and output), the fewest most sensitive ops kept in float",
        "calibration_images": len(inp.calibration), "calibration_sampling": cfg.calibration_sampling,
        "targets": {"min_agreement": cfg.ac_min_agreement, "max_drop_points": cfg.max_drop,
                    "max_float_layers": cfg.ac_max_float_layers},
        "float_layers": [{**by_tensor[t].as_dict(), "why": "largest int8 rounding error of the remaining ops "
                          "(rmse in int8 steps; 0.29 is pure rounding noise)"} for t in float_layers],
        "search": [t.__dict__ for t in trials],
        "search_images": f"{len(inp.heldout_y)} held-out images (the same the gate judges: the search stops at the "
                         "first k meeting the targets, so the gate's numbers are those the search saw)",
        "ranked_layers": len(ranking),
        "latency_p50_ms": latency,
        "latency_ratio": {t: round(latency[preset.name][t] / latency["tflite_int8"][t], 3) for t in ("1", "2")},
    }}
