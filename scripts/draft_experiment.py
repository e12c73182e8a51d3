"""Does JPEG draft decoding change accuracy? Train the same recipe on exact and on drafted pixels, then score.

    # 1. a copy of a class-folder tree holding what the runtime decodes with jpeg_draft at SIZE, as PNG
    #    content under the original names (PNG is lossless, so any decoder reads exactly those pixels and
    #    the split files, keyed by name, come out the same):
    python scripts/draft_experiment.py copy SRC DST --size 160
    # 2. train the same recipe (same code, seed and flags) on SRC and on DST, e.g. edgetune train --data ...
    # 3. score a run's Keras model on its test split, decoded by the runtime exactly or with draft, from
    #    the ORIGINAL files (--data-root SRC), with 95% Wilson intervals; paired counts between decodes:
    python scripts/draft_experiment.py score RUN --data-root SRC [--split test]

Only images that draft actually shrinks differ (a JPEG at least twice the model input on both sides);
`copy` reports how many those are. Needs the train extra (TensorFlow) for `score`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from edgetune.runtime import ImageError, find_images, load_image, preprocess, probabilities
from edgetune.stats import format_accuracy, wilson_interval


def copy_tree(src: Path, dst: Path, size: int) -> dict:
    """Write the drafted decode of every image under `src` to the same relative path under `dst` (PNG content)."""
    files = find_images([src])
    changed = failed = 0
    for f in files:
        rel = Path(f).relative_to(src)
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            drafted = load_image(f, draft=(size, size))
            full_shape = load_image(f).shape
        except ImageError:
            failed += 1
            continue
        changed += drafted.shape != full_shape
        Image.fromarray(drafted).save(out, format="PNG")
    return {"images": len(files), "drafted_smaller": changed, "unreadable_skipped": failed, "size": size}


def score(run: Path, data_root: Path | None, split: str, batch: int = 64) -> dict:
    import keras  # noqa: F401 (TensorFlow is needed to run model.keras)

    from edgetune.contract import read_metadata, read_split

    meta = read_metadata(run / "metadata.json")
    items = read_split(run, split, data_root)
    model = keras.models.load_model(run / "model.keras", compile=False)
    size = tuple(meta.preprocessing.size)
    y = np.array([k for _, k in items])
    out, correct = {}, {}
    for mode in ("exact", "draft"):
        preds = []
        for i in range(0, len(items), batch):
            x = np.stack([preprocess(load_image(p, meta.preprocessing.exif_orientation,
                                                draft=size if mode == "draft" else None), size)
                          for p, _ in items[i:i + batch]])
            preds.append(probabilities(np.asarray(model(x, training=False)), meta.output_kind).argmax(1))
        pred = np.concatenate(preds)
        correct[mode] = pred == y
        n, k = len(y), int(correct[mode].sum())
        out[mode] = {"accuracy": k / n, "n": n, "ci95": wilson_interval(k, n), "text": format_accuracy(k / n, n)}
    e, d = correct["exact"], correct["draft"]
    out["paired"] = {"exact_only_right": int((e & ~d).sum()), "draft_only_right": int((d & ~e).sum())}
    out["run"], out["split"] = str(run), split
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("copy")
    c.add_argument("src", type=Path)
    c.add_argument("dst", type=Path)
    c.add_argument("--size", type=int, default=160)
    s = sub.add_parser("score")
    s.add_argument("run", type=Path)
    s.add_argument("--data-root", type=Path)
    s.add_argument("--split", default="test")
    args = ap.parse_args(argv)
    if args.cmd == "copy":
        if args.dst.exists():
            print(f"{args.dst} exists; choose a new folder", file=sys.stderr)
            return 2
        print(json.dumps(copy_tree(args.src, args.dst, args.size)))
    else:
        print(json.dumps(score(args.run, args.data_root, args.split), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
