"""The tflite_int8_ac preset: int8 with the fewest most sensitive layers in float until the budget holds.

Calibrate once (from the same folded, weight-corrected source as tflite_int8); if plain int8 already agrees
with Keras on at least --ac-min-agreement of the held-out images and loses at most --max-drop points, that is
the model. Otherwise, when asked (--ac-range-percentiles),
try the same all-int8 model with percentile activation ranges (`activation_ranges`: same ops, same
latency). Then rank the quantized ops by their own rounding error (QuantizationDebugger, in int8 steps)
and keep the worst ones in float, as few as meet both targets (`accuracy_control.search`; the input stage, up to
the first convolution, always stays float in the search: `accuracy_control.input_stage`), from min/max
ranges and from the best percentile ranges when they agreed better. The JSON records which layers, why,
every trial and the latency cost against plain int8 (p50 through the edgetune runtime at 1 and 2 threads).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from edgetune.convert.config import ConvertConfig
from edgetune.convert.inputs import Inputs
from edgetune.convert.presets import Preset

LATENCY_RUNS = 40


def _judge_bytes(inp: Inputs, cfg: ConvertConfig, preset: Preset, scratch: Path):
    from edgetune.convert.exporter import judge, predict_heldout

    meta = inp.export_metadata()

    def judge_model(model: bytes) -> tuple[float, float]:
        scratch.write_bytes(model)
        row = judge(inp, cfg, preset, predict_heldout(scratch, meta, inp))
        return row.agreement, row.drop_points

    return judge_model


def _predictor(model: bytes, inp: Inputs, path: Path, threads: int):
    from edgetune.runtime import Predictor, open_backend

    path.write_bytes(model)
    return Predictor(open_backend(path, threads=threads), inp.export_metadata(), path=path)


def p50_pair(a: bytes, b: bytes, inp: Inputs, scratch: Path, threads: int, rounds: int = 6) -> tuple[float, float]:
    """p50 latency (ms) of two models on one image through the edgetune runtime, timed in alternating rounds.

    Alternating rounds make a busy machine slow both alike, so their ratio holds where each alone would not.
    """
    predictors = [_predictor(m, inp, scratch.with_name(f"{scratch.stem}.{i}{scratch.suffix}"), threads) for i, m in enumerate((a, b))]
    x = inp.heldout_x[:1]
    samples: list[list[float]] = [[], []]
    for p in predictors:
        for _ in range(5):
            p.predict(x)
    for _ in range(rounds):
        for i, p in enumerate(predictors):
            for _ in range(LATENCY_RUNS // rounds):
                t0 = time.perf_counter()
                p.predict(x)
                samples[i].append((time.perf_counter() - t0) * 1e3)
    for i in range(2):
        scratch.with_name(f"{scratch.stem}.{i}{scratch.suffix}").unlink(missing_ok=True)
    return float(np.median(samples[0])), float(np.median(samples[1]))


def _latency_cost(inp: Inputs, plain: bytes, scratch: Path):
    """model bytes -> p50 over plain int8's p50 at 1 thread, timed in alternating rounds."""
    def cost(model: bytes) -> float:
        base, candidate = p50_pair(plain, model, inp, scratch, 1)
        return candidate / base

    return cost


def _search(quantizer, inp: Inputs, cfg: ConvertConfig, judge_model, plain: bytes, scratch: Path,
            calibrations: list[tuple[bytes, dict]]):
    """For each calibration (activation ranges), ranked ops first, then a float tail if ranking alone does not
    meet the targets. The fewest float ops that meet the targets win; if none does, the highest agreement.

    Two calibrations because flips on low-margin models move by a few images either way: on one trashnet
    run min/max ranges met the targets with 1 float op, the run's best percentile ranges only with 13.

    Returns (model, float tensor names, the winner's ranges for the JSON, every trial, the winner's layer errors).
    """
    from dataclasses import replace

    from edgetune.convert.accuracy_control import input_stage, ranked, search, tail

    targets = _targets(cfg)
    cost = _latency_cost(inp, plain, scratch) if cfg.ac_max_latency_ratio else None
    results, errors = [], []
    for calibrated, ranges in calibrations:
        quantizer.use_calibration(calibrated)
        errors = quantizer.layer_errors()  # each calibration ranks its own ops (own ranges change which ops err)
        label = "min/max" if ranges["method"] == "min/max" else f"percentile {ranges['percentile']:g}"
        keep = input_stage(errors)
        for name, order in (("ranked", ranked(errors)), ("tail", tail(errors))):
            model, float_layers, trials = search(quantizer, order, judge_model, targets, name, cost, keep)
            trials = [replace(t, order=f"{t.order}, {label} ranges") for t in trials]
            results.append((model, float_layers, trials, ranges, errors))
            if any(t.met for t in trials):
                break
        if any(len(r[1]) <= len(keep) + 1 and _chosen(r).met for r in results):
            break  # no other calibration can do better than one op beyond the input stage

    met = [r for r in results if _chosen(r).met]
    if met:
        model, float_layers, _, ranges, errors = min(met, key=lambda r: (len(r[1]), -_chosen(r).agreement))
    else:
        model, float_layers, _, ranges, errors = max(results, key=lambda r: (_chosen(r).agreement, -len(r[1])))
    return model, float_layers, ranges, [t for r in results for t in r[2]], errors


def _targets(cfg: ConvertConfig):
    """What tflite_int8_ac must reach and may spend, from the convert flags."""
    from edgetune.convert.accuracy_control import Targets

    return Targets(cfg.ac_min_agreement, cfg.max_drop, cfg.ac_max_float_layers, cfg.ac_max_latency_ratio or None)


def _chosen(result):
    """The trial of a search result's own model (the one with its number of float layers)."""
    return next(t for t in result[2] if t.float_layers == len(result[1]))


def _ranges_first(quantizer, inp: Inputs, cfg: ConvertConfig, judge_model, plain: bytes, first):
    """All-int8 models with percentile activation ranges, in --ac-range-percentiles order.

    Returns (model, ranges for the JSON, trials, met, calibrations). When none meets the targets, the
    model is the one that agreed best (min/max included), and `calibrations` lists that calibration and
    min/max (once when they are the same), each with its ranges, for the float-op search.
    """
    from edgetune.convert.accuracy_control import Trial
    from edgetune.convert.activation_ranges import percentile_ranges

    minmax = quantizer.calibrated
    best = ((first.agreement, -first.drop_points), minmax, plain, {"method": "min/max"})
    trials = []
    for p in cfg.range_percentiles:
        calibrated, summary = percentile_ranges(minmax, inp.calibration, p)
        quantizer.use_calibration(calibrated)
        model = quantizer.model()
        agreement, drop = judge_model(model)
        met = _targets(cfg).met(agreement, drop)
        trials.append(Trial(f"percentile {p:g}", 0, agreement, drop, met))
        print(f"tflite_int8_ac: percentile {p:g} activation ranges agree on {agreement * 100:.2f}% "
              f"(drop {drop:+.2f} points)", file=sys.stderr)
        if met:
            return model, summary.as_dict(), trials, True, []
        if (agreement, -drop) > best[0]:
            best = ((agreement, -drop), calibrated, model, summary.as_dict())
    quantizer.use_calibration(best[1])
    calibrations = [(best[1], best[3])] + ([(minmax, {"method": "min/max"})] if best[1] is not minmax else [])
    return best[2], best[3], trials, False, calibrations


def export_int8_ac(inp: Inputs, cfg: ConvertConfig, preset: Preset, out: Path) -> dict:
    """Write the accuracy-controlled int8 model to `out`; returns its quantization details for the metadata."""
    from edgetune.convert.accuracy_control import SelectiveQuantizer, Trial

    scratch = out.parent / f".{preset.name}.trial.tmp.tflite"
    try:
        source, how = inp.int8_source(cfg.bias_correction, cfg.weight_rounding, cfg.fold_preprocessing)
        quantizer = SelectiveQuantizer(source, inp.calibration)
        judge_model = _judge_bytes(inp, cfg, preset, scratch)
        plain = quantizer.model()
        agreement, drop = judge_model(plain)
        trials = [Trial("none", 0, agreement, drop, _targets(cfg).met(agreement, drop))]
        chosen, float_layers, errors, ranges = plain, [], [], {"method": "min/max"}
        if not trials[0].met:
            print(f"{preset.name}: plain int8 agrees on {agreement * 100:.2f}% (drop {drop:+.2f} points)", file=sys.stderr)
            chosen, ranges, range_trials, met, calibrations = _ranges_first(quantizer, inp, cfg, judge_model, plain,
                                                                             trials[0])
            trials += range_trials
            if not met:
                print(f"{preset.name}: searching for ops to keep in float", file=sys.stderr)
                chosen, float_layers, ranges, search_trials, errors = _search(quantizer, inp, cfg, judge_model, plain,
                                                                              scratch, calibrations)
                trials += search_trials
        out.write_bytes(chosen)
        pairs = {str(t): p50_pair(plain, chosen, inp, scratch, t) for t in (1, 2)}
        latency = {"tflite_int8": {t: round(v[0], 3) for t, v in pairs.items()},
                   preset.name: {t: round(v[1], 3) for t, v in pairs.items()}}
    finally:
        scratch.unlink(missing_ok=True)
    by_tensor = {e.tensor: e for e in errors}
    return {"quantization": {
        "method": "int8 (float input and output): min/max activation ranges (then percentile ranges when "
                  "--ac-range-percentiles asks), else the fewest ops kept in float that meet the targets",
        "activation_ranges": ranges,
        "calibration_images": len(inp.calibration), "calibration_sampling": cfg.calibration_sampling, **how,
        "targets": {"min_agreement": cfg.ac_min_agreement, "max_drop_points": cfg.max_drop,
                    "max_float_layers": cfg.ac_max_float_layers, "max_latency_ratio": cfg.ac_max_latency_ratio},
        "targets_met": any(t.met for t in trials),
        "float_layers": [{**by_tensor[t].as_dict(), "position": list(by_tensor).index(t)} for t in float_layers],
        "why": "input stage: the ops up to the first convolution, kept float in every searched candidate so that "
               "nothing rounds the input before it; then ranked: the ops with the largest int8 rounding error (rmse "
               "in int8 steps; 0.29 is pure rounding noise); tail: the last ops of the network, which then run "
               "without requantization in between",
        "search": [t.__dict__ for t in trials],
        "search_images": f"{len(inp.heldout_y)} held-out images, the same the gate judges: the search stops at the "
                         "first candidate meeting the targets, so the gate sees the numbers the search saw",
        "quantized_ops": len(errors) or None,
        "latency_p50_ms": latency,
        "latency_ratio": {t: round(latency[preset.name][t] / latency["tflite_int8"][t], 3) if float_layers else 1.0
                          for t in ("1", "2")},
    }}
