"""Where the time of image file -> label goes, and folder throughput with decoding in threads.

    .venv/bin/python scripts/image_path_speed.py MODEL.tflite --images DIR_OR_RUN [--threads 2]
        [--baseline-code OLD_CHECKOUT] [--workers 1,2] [--interpreters 2] [--rounds 3] [--limit 200]

Prints (and writes with --out) one table of p50 milliseconds per image: decode (exact, and JPEG draft
at the model's size), resize, inference (`Predictor.predict` on a preprocessed image, the model-only
figure) and file -> label, plus images/s over the folder one image at a time, with N decode
threads, and with N interpreters side by side (what `predict` does on a folder). With --baseline-code
(a checkout of an older edgetune) its `load_image`/`resize_bilinear` are timed interleaved with
today's, so "before" and "after" share the machine's conditions.
Variants are interleaved image by image; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgetune.contract import read_split
from edgetune.runtime import (Predictor, find_images, keep_freed_memory, load_image, map_ordered, preprocess,
                              resize_bilinear)


def image_list(spec: str, limit: int) -> list[str]:
    """A run dir (its test split), a folder (recursively) or a split file."""
    p = Path(spec)
    if (p / "metadata.json").is_file():
        files = [str(f) for f, _ in read_split(p, "test")]
    else:
        files = find_images([p])
    return files[:limit] if limit else files


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def p50(values: list[float]) -> float:
    return float(np.percentile(values, 50))


def per_image(p: Predictor, files: list[str], rounds: int, old) -> dict[str, list[float]]:
    """Every step of the file -> label path timed per image, variants interleaved image by image."""
    t: dict[str, list[float]] = {k: [] for k in ("decode", "decode_draft", "resize", "inference", "file_to_label",
                                                 "file_to_label_draft", "model_only", "old_decode", "old_resize",
                                                 "old_file_to_label")}
    perf = time.perf_counter
    x_fixed = p.load(files[0])[None]
    for _ in range(rounds):
        for f in files:
            t0 = perf(); img = load_image(f); t1 = perf()
            x = preprocess(img, p.size); t2 = perf()
            p.labels[int(np.argmax(p.predict(x[None])[0]))]; t3 = perf()
            t["decode"].append(t1 - t0); t["resize"].append(t2 - t1); t["inference"].append(t3 - t2)
            t["file_to_label"].append(t3 - t0)
            t0 = perf(); img = load_image(f, draft=p.size); t1 = perf()
            p.labels[int(np.argmax(p.predict(preprocess(img, p.size)[None])[0]))]; t2 = perf()
            t["decode_draft"].append(t1 - t0); t["file_to_label_draft"].append(t2 - t0)
            t0 = perf(); p.predict(x_fixed); t["model_only"].append(perf() - t0)
            if old is not None:
                t0 = perf(); img = old.load_image(f); t1 = perf()
                x = old.resize_bilinear(img, p.size); t2 = perf()
                p.labels[int(np.argmax(p.predict(x[None])[0]))]; t3 = perf()
                t["old_decode"].append(t1 - t0); t["old_resize"].append(t2 - t1); t["old_file_to_label"].append(t3 - t0)
    return {k: [v * 1000.0 for v in vals] for k, vals in t.items() if vals}


def throughput(p: Predictor, files: list[str], workers: list[int], rounds: int, load, label: str,
               interpreters: list[int] = ()) -> dict[str, float]:
    """Images/s over `files`: one at a time, with each decode worker count, and (exact decoding only) with
    each number of interpreters side by side (`Predictor.classify_files`); passes interleaved."""
    def sequential():
        for f in files:
            p.predict(load(f)[None])

    def pipelined(w):
        for _, x in map_ordered(load, files, w):
            p.predict(x[None])

    def side_by_side(n):
        for _ in p.classify_files(files, interpreters=n):
            pass

    runs: dict[str, list[float]] = {}
    variants = [(f"{label} one at a time", sequential)] + [(f"{label} {w} decode threads", lambda w=w: pipelined(w))
                                                           for w in workers]
    variants += [(f"{label} {n} interpreters side by side", lambda n=n: side_by_side(n)) for n in interpreters]
    for n in interpreters:
        p.replicas(n)  # loaded before timing, as predict does
    for _ in range(rounds):
        for name, fn in variants:
            t0 = time.perf_counter()
            fn()
            runs.setdefault(name, []).append(len(files) / (time.perf_counter() - t0))
    return {name: (float(np.median(v)), float(max(v))) for name, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--images", required=True, help="run dir (test split), folder or split file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", default="1,2", help="decode thread counts for the throughput rows")
    ap.add_argument("--interpreters", default="2", help="interpreter counts side by side for the throughput rows "
                    "(each with --threads / N threads; '' for none)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=200, help="images used (0: all)")
    ap.add_argument("--baseline-code", type=Path, help="an older edgetune checkout: time its image.py too")
    ap.add_argument("--out", type=Path, help="write the figures as JSON")
    ap.add_argument("--malloc-defaults", action="store_true", help="leave glibc's malloc thresholds as they are "
                    "(the `edgetune` command raises them: keep_freed_memory)")
    args = ap.parse_args(argv)
    if not args.malloc_defaults:
        keep_freed_memory()

    files = image_list(args.images, args.limit)
    p = Predictor.from_path(args.model, threads=args.threads)
    old = load_module(args.baseline_code / "runtime" / "image.py", "baseline_image") if args.baseline_code else None
    for f in files[:10]:  # warm the page cache and the interpreter
        p.predict(p.load(f)[None])
    t = per_image(p, files, args.rounds, old)
    workers = [int(w) for w in args.workers.split(",")]
    interpreters = [int(n) for n in args.interpreters.split(",") if n.strip()]
    tp = throughput(p, files, workers, args.rounds, p.load, "exact", interpreters)
    tp.update(throughput(p, files, workers, args.rounds, lambda f: preprocess(load_image(f, draft=p.size), p.size), "draft"))
    if old is not None:
        tp.update(throughput(p, files, [], args.rounds, lambda f: old.resize_bilinear(old.load_image(f), p.size), "before"))

    model, model10 = p50(t["model_only"]), float(np.percentile(t["model_only"], 10))
    load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").is_file() else ["?"] * 3
    print(f"{len(files)} images x {args.rounds} rounds, {args.model.name}, {args.threads} interpreter threads, "
          f"load average {' '.join(load)} (a busy machine inflates every figure; p10 is closer to an idle one)")
    print("| step | p50 ms | x model-only p50 | p10 ms | x model-only p10 |\n|---|---|---|---|---|")
    for key, v in t.items():
        q10 = float(np.percentile(v, 10))
        print(f"| {key} | {p50(v):.2f} | {p50(v) / model:.2f} | {q10:.2f} | {q10 / model10:.2f} |")
    print("\n| folder throughput | images/s, median pass | best pass |\n|---|---|---|")
    for name, (med, best) in tp.items():
        print(f"| {name} | {med:.1f} | {best:.1f} |")
    if args.out:
        args.out.write_text(json.dumps({"images": len(files), "rounds": args.rounds, "threads": args.threads,
                                        "model": str(args.model), "load_average": load,
                                        "p50_ms": {k: p50(v) for k, v in t.items()},
                                        "p10_ms": {k: float(np.percentile(v, 10)) for k, v in t.items()},
                                        "throughput_ips": tp}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
