"""What moves int8 agreement with Keras on a trained run: calibration, per-layer float fallback, latency.

    .venv/bin/python scripts/quant_study.py RUN_DIR --out study.json [--parts calib,layers,latency,int16]

Every agreement is measured on all the run's held-out images (splits/val.txt + splits/test.txt), with
the Keras deployment model as reference, through LiteRT (XNNPACK) like the runtime. Prints one line
per variant and writes every number to --out. `int16` (not run by default): the weight-corrected model
convert's int8 presets start from, in float, int8 and 16-bit activations, to tell weight error from
activation error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgetune.runtime import probabilities as logits_to_probs
from edgetune.contract import read_metadata, read_split
from edgetune.runtime import load_and_preprocess
from edgetune.stats import wilson_interval


def load(items, size):
    return np.stack([load_and_preprocess(p, size) for p, _ in items]).astype(np.float32)


def run_tflite(model: bytes, x: np.ndarray, threads: int = 2) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model, num_threads=threads)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    out = []
    for img in x:
        it.set_tensor(i["index"], img[None].astype(i["dtype"]))
        it.invoke()
        out.append(it.get_tensor(o["index"]).astype(np.float32))
    return np.concatenate(out)


def p50_ms(model: bytes, shape, threads: int, n: int = 60) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model, num_threads=threads)
    it.allocate_tensors()
    i = it.get_input_details()[0]
    x = np.random.default_rng(0).uniform(0, 255, shape).astype(i["dtype"])
    for _ in range(10):
        it.set_tensor(i["index"], x)
        it.invoke()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        it.set_tensor(i["index"], x)
        it.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


class Judge:
    def __init__(self, keras_probs, y, split, kind):
        self.ref, self.y, self.split, self.kind = keras_probs, y, split, kind

    def __call__(self, logits) -> dict:
        p = logits_to_probs(logits, self.kind)
        agree = p.argmax(1) == self.ref.argmax(1)
        n = len(agree)
        lo, hi = wilson_interval(int(agree.sum()), n)
        drop = 100 * ((self.ref.argmax(1) == self.y).mean() - (p.argmax(1) == self.y).mean())
        per = {s: float(agree[self.split == s].mean()) for s in np.unique(self.split)}
        return {"n": n, "agreement": float(agree.mean()), "ci95": [lo, hi], "drop_points": float(drop),
                "flips": int(n - agree.sum()), "per_split": per, "mean_abs_dprob": float(np.abs(p - self.ref).mean())}


def stratified(items, n, seed):
    rng = np.random.default_rng(seed)
    labels = np.array([l for _, l in items])
    classes = np.unique(labels)
    per = max(1, n // len(classes))
    idx = []
    for c in classes:
        pool = np.flatnonzero(labels == c)
        idx += list(rng.choice(pool, min(per, len(pool)), replace=False))
    return [items[i] for i in sorted(idx)]


def random_sample(items, n, seed):
    idx = np.sort(np.random.default_rng(seed).choice(len(items), min(n, len(items)), replace=False))
    return [items[i] for i in idx]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--parts", default="calib,layers,latency")
    ap.add_argument("--ladder", default="1,2,3,4,6,8,12,16")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    import tensorflow as tf

    from edgetune.convert.accuracy_control import SelectiveQuantizer
    from edgetune.convert.tflite import convert_saved_model
    from edgetune.train.model import deployment_model, load_model

    run = args.run
    meta = read_metadata(run / "metadata.json")
    size = tuple(meta.preprocessing.size)
    held = [(p, l, "val") for p, l in read_split(run, "val")] + [(p, l, "test") for p, l in read_split(run, "test")]
    train = read_split(run, "train")
    t0 = time.perf_counter()
    x = load([(p, l) for p, l, _ in held], size)
    y = np.array([l for _, l, _ in held])
    split = np.array([s for _, _, s in held])
    model = deployment_model(load_model(run / "model.keras"))
    keras_logits = np.concatenate([np.asarray(model(x[i:i + 64], training=False)) for i in range(0, len(x), 64)])
    judge = Judge(logits_to_probs(keras_logits, meta.output_kind), y, split, meta.output_kind)
    print(f"{run}: {len(x)} held-out images, {len(train)} train, {meta.num_classes} classes, "
          f"keras acc {(judge.ref.argmax(1) == y).mean():.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    sm = run / "saved_model"
    out: dict = {"run": str(run), "n_heldout": len(x), "classes": meta.num_classes, "results": {}}

    def record(name, model_bytes, **info):
        t = time.perf_counter()
        r = judge(run_tflite(model_bytes, x))
        r.update(info, size_bytes=len(model_bytes))
        out["results"][name] = r
        print(f"  {name:<40} agree {r['agreement']:.4f} [{r['ci95'][0]:.4f},{r['ci95'][1]:.4f}] flips {r['flips']:>3} "
              f"drop {r['drop_points']:+.2f} per-split {r['per_split']} ({time.perf_counter() - t:.0f}s eval)", flush=True)
        args.out.write_text(json.dumps(out, indent=1))
        return r

    fp32 = convert_saved_model(sm, "fp32")
    record("fp32", fp32)
    calib_cache = {}
    if "calib" in parts:
        for how, n, seed in [("random", 200, 0), ("random", 200, 1), ("stratified", 200, 0), ("stratified", 200, 1),
                             ("random", 1000, 0), ("stratified", 1000, 0)]:
            items = (random_sample if how == "random" else stratified)(train, n, seed)
            t = time.perf_counter()
            cal = load(items, size)
            b = convert_saved_model(sm, "int8", cal)
            calib_cache[(how, n, seed)] = cal
            record(f"int8 calib {how} n={len(items)} seed={seed}", b, convert_s=round(time.perf_counter() - t, 1))
        dyn = convert_saved_model(sm, "dynamic")
        record("dynamic", dyn)
    if "layers" in parts:
        cal = calib_cache.get(("random", 200, 0))
        if cal is None:
            cal = load(random_sample(train, 200, 0), size)
        t = time.perf_counter()
        q = SelectiveQuantizer(sm, cal)
        print(f"  debugger calibrated in {time.perf_counter() - t:.0f}s", flush=True)
        t = time.perf_counter()
        errors = q.layer_errors()
        print(f"  layer errors in {time.perf_counter() - t:.0f}s; worst:", flush=True)
        for e in errors[:15]:
            print(f"    {e.op:<18} {e.rmse_per_scale:7.3f} {e.mean_error_per_scale:+7.3f} {e.tensor}")
        out["layer_errors"] = [e.as_dict() for e in errors]
        t = time.perf_counter()
        base = q.model()
        print(f"  rebuild in {time.perf_counter() - t:.0f}s", flush=True)
        record("int8 via debugger (no denylist)", base)
        for k in [int(v) for v in args.ladder.split(",")]:
            deny = [e.tensor for e in errors[:k]]
            b = q.model(deny)
            r = record(f"int8 denylist top-{k}", b, denylist=deny)
            if "latency" in parts:
                r["p50_ms"] = {t: p50_ms(b, (1, *size, 3), t) for t in (1, 2)}
                print(f"     p50 {r['p50_ms']}", flush=True)
        if "latency" in parts:
            for name, b in (("int8 via debugger (no denylist)", base), ("fp32", fp32)):
                out["results"][name]["p50_ms"] = {t: p50_ms(b, (1, *size, 3), t) for t in (1, 2)}
                print(f"  {name} p50 {out['results'][name]['p50_ms']}", flush=True)
    if "int16" in parts:
        int16_activations(run, train, size, record, out)
    args.out.write_text(json.dumps(out, indent=1))
    return 0


def int16_activations(run: Path, train, size, record, out: dict) -> None:
    """Where int8's flips come from: weights (on the grid as convert puts them) vs 8- or 16-bit activations.

    From the weight-corrected copy convert's int8 presets use (`correct_biases`: GPTQ + bias correction):
    its float export, plain int8, and int16 activations with int8 weights (TensorFlow's 16x8 mode, the whole
    model), each judged against the original Keras model, with p50 latency (16x8 has no XNNPACK kernels).
    """
    import tempfile

    import tensorflow as tf

    from edgetune.convert.bias_correction import correct_biases
    from edgetune.convert.tflite import convert_saved_model
    from edgetune.train.model import export_model, load_model

    cal = load(random_sample(train, 200, 0), size)
    with tempfile.TemporaryDirectory() as tmp:
        corrected = load_model(run / "model.keras")
        out["correction"] = correct_biases(corrected, cal).as_dict()
        export_model(corrected).export(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([cal[i:i + 1]] for i in range(len(cal)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        variants = {"corrected weights, float activations": convert_saved_model(Path(tmp), "fp32"),
                    "corrected weights, int8 activations": convert_saved_model(Path(tmp), "int8", cal),
                    "corrected weights, int16 activations (16x8)": converter.convert()}
    for name, b in variants.items():
        r = record(name, b)
        r["p50_ms"] = {t: p50_ms(b, (1, *size, 3), t) for t in (1, 2)}
        print(f"     p50 {r['p50_ms']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
