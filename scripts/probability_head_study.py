"""Does ending the export graph in per-class probabilities cost int8 agreement? Prints one row per variant.

    python scripts/probability_head_study.py RUN [--calibration-images 200] [--kinds fp32,int8] [--out study.json]

Variants, each converted from the same run with the same calibration images (convert's default sample:
200 stratified, seed 0) and judged through the edgetune runtime against the Keras model on every held-out
image (splits/val.txt + splits/test.txt):

  logits        the deployment graph as before: int8 logits, sigmoid/softmax in numpy (the runtime)
  probs         `export_model`: softmax inside the graph, quantized like the rest (TFLite's int8 softmax
                output has a fixed 1/256 scale)
  probs_float   the same graph with the softmax (and the binary [0, z] Dense) kept in float: int8 logits,
                dequantized, then a float softmax inside the model

for the int8 (float I/O) and int8_uint8io presets, plus fp32 as the exactness check.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def agreement_row(name: str, probs: np.ndarray, keras_probs: np.ndarray, y: np.ndarray) -> dict:
    from edgetune.stats import wilson_interval

    agree = probs.argmax(1) == keras_probs.argmax(1)
    n, k = len(agree), int(agree.sum())
    lo, hi = wilson_interval(k, n)
    top2 = np.sort(keras_probs, axis=1)[:, -2:]
    flips = np.flatnonzero(~agree)
    return {"variant": name, "n": n, "agree": k, "agreement": k / n, "ci95": [round(lo, 4), round(hi, 4)],
            "flips": int(n - k), "max_abs_dprob": float(np.abs(probs - keras_probs).max()),
            "accuracy": float((probs.argmax(1) == y).mean()), "keras_accuracy": float((keras_probs.argmax(1) == y).mean()),
            "flip_keras_margins": [round(float(top2[i, 1] - top2[i, 0]), 4) for i in flips][:20]}


def run_model(path: Path, meta, x: np.ndarray) -> np.ndarray:
    from edgetune.runtime import Predictor, open_backend

    predictor = Predictor(open_backend(path, threads=2), meta, path=path)
    return np.concatenate([predictor.predict(x[i:i + 32]) for i in range(0, len(x), 32)])


def float_head_tensors(int8_model: Path) -> list[str]:
    """Output tensor names of the head's ops in an int8 model: the SOFTMAX, and the binary [0, z] FULLY_CONNECTED."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(int8_model))
    names = {d["index"]: d["name"] for d in it.get_tensor_details()}
    ops = it._get_ops_details()  # noqa: SLF001 - the only way to list ops and their tensors in LiteRT's Python API
    found = [names[int(op["outputs"][0])] for op in ops if op["op_name"] == "SOFTMAX"]
    found += [names[int(op["outputs"][0])] for op in ops if op["op_name"] == "FULLY_CONNECTED"
              and "two_logits" in names[int(op["outputs"][0])]]
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--calibration-images", type=int, default=200)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--kinds", default="fp32,int8,int8_uint8io", help="TFLite kinds to convert (comma-separated)")
    args = ap.parse_args()

    import copy

    from edgetune.contract import read_metadata, read_split
    from edgetune.convert.accuracy_control import SelectiveQuantizer
    from edgetune.convert.inputs import load_items, sample
    from edgetune.convert.tflite import convert_saved_model
    from edgetune.runtime import probabilities
    from edgetune.train.model import deployment_model, export_model, load_model

    run = args.run
    meta = read_metadata(run / "metadata.json")
    held = read_split(run, "val") + read_split(run, "test")
    x = load_items(held, meta, "val", "held-out")
    y = np.array([label for _, label in held])
    calibration = load_items(sample(read_split(run, "train"), args.calibration_images, 0, stratified=True), meta, "train",
                             "calibration")
    model = load_model(run / "model.keras")
    deploy = deployment_model(model)
    logits = np.concatenate([np.asarray(deploy(x[i:i + 64], training=False)) for i in range(0, len(x), 64)])
    keras_probs = probabilities(logits, meta.output_kind)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        deploy.export(str(tmp / "logits"), verbose=False)
        export_model(model).export(str(tmp / "probs"), verbose=False)
        probs_meta = copy.deepcopy(meta)
        probs_meta.output_kind = "probabilities"
        for kind in args.kinds.split(","):
            for graph, m in (("logits", meta), ("probs", probs_meta)):
                path = tmp / f"{graph}_{kind}.tflite"
                path.write_bytes(convert_saved_model(tmp / graph, kind, calibration if kind != "fp32" else None))
                rows.append(agreement_row(f"{graph} {kind}", run_model(path, m, x), keras_probs, y))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "flip_keras_margins"}), flush=True)
        quantizer = SelectiveQuantizer(tmp / "probs", calibration)
        head = float_head_tensors(tmp / "probs_int8.tflite")
        path = tmp / "probs_float_int8.tflite"
        path.write_bytes(quantizer.model(head))
        rows.append(agreement_row(f"probs_float int8 (float: {', '.join(head)})", run_model(path, probs_meta, x), keras_probs, y))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "flip_keras_margins"}), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"run": str(run), "classes": meta.num_classes, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
