"""Run every committed fixture model on the fixture images and write, or compare, the outputs.

    python scripts/pi_reference.py --pillow-only --out tests/fixtures/reference_x86_64.json  # on x86-64
    python scripts/pi_reference.py --out aarch64.json \
        --compare tests/fixtures/reference_x86_64.json                            # on the Pi (or qemu)

Uses only the lean runtime (numpy, Pillow, LiteRT, optionally ONNX Runtime): it is what runs on a
Raspberry Pi. Tolerances: float models within 1e-5 (probabilities and raw outputs); quantized
models the same top-1 and raw outputs at most QUANT_STEPS quantization steps apart (integer kernels
differ between x86-64 and ARM: rounding in requantization is implementation-defined).
Decoded pixels must be identical: every fixture image (images/ and formats/) is decoded with
`load_image` and its SHA-256 compared exactly. The committed reference was decoded by Pillow alone
(`--pillow-only`), so on a Pi that has simplejpeg this also checks that libjpeg-turbo's direct path
gives Pillow's pixels on ARM.
Exit code 1 when a comparison fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
FLOAT_TOL = 1e-5
QUANT_STEPS = 16


def run_all(fixtures: Path) -> dict:
    from edgetune.runtime import Predictor, find_images, load_and_preprocess

    images = find_images([fixtures / "images"])
    out = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__, "models": {}}
    for model in sorted((fixtures / "models").glob("*.*")):
        if model.suffix not in (".tflite", ".onnx"):
            continue
        try:
            p = Predictor.from_path(model, threads=1)
        except Exception as exc:  # e.g. onnxruntime not installed on a base Pi install
            print(f"skip {model.name}: {exc}", file=sys.stderr)
            continue
        rows = {}
        for img in images:
            x = load_and_preprocess(img, p.size)[None]
            raw = np.asarray(p.invoke_raw(p.quantize(x))).reshape(-1)
            rows[Path(img).name] = {"probs": p.predict(x)[0].tolist(), "raw": raw.tolist()}
        out["models"][model.name] = {"backend": p.backend_info(), "quantized": p.output_details.quantized, "images": rows}
    return out


def pixel_digests(fixtures: Path) -> dict[str, str]:
    """SHA-256 of every fixture image as `load_image` decodes it (shape and uint8 pixels)."""
    from edgetune.runtime import find_images, load_image

    out = {}
    for img in find_images([fixtures / "images", fixtures / "formats"]):
        a = load_image(img)
        out[str(Path(img).relative_to(fixtures))] = hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()
    return out


def jpeg_decoder() -> str:
    from edgetune.runtime import image

    turbo = image._simplejpeg
    return f"simplejpeg {turbo.__version__}" if turbo is not None else "pillow"


def compare_pixels(ours: dict, ref: dict) -> bool:
    if "pixels" not in ref:
        return True
    differ = sorted(k for k, v in ref["pixels"].items() if ours["pixels"].get(k) != v)
    print(f"pixels: {len(ref['pixels']) - len(differ)} of {len(ref['pixels'])} fixture images identical "
          f"(JPEGs decoded by {ours['jpeg_decoder']} here, {ref.get('jpeg_decoder', 'pillow')} there)"
          + (f"; DIFF: {', '.join(differ)} FAIL" if differ else ""))
    return not differ


def compare(ours: dict, ref: dict) -> bool:
    ok = compare_pixels(ours, ref)
    print(f"{'model':28s} {'image':10s} {'top1':>5s} {'max|dp|':>10s} {'max|draw|':>10s}  verdict")
    for name, m in ref["models"].items():
        if name not in ours["models"]:
            print(f"{name:28s} missing here")
            ok = False
            continue
        for img, r in m["images"].items():
            o = ours["models"][name]["images"][img]
            dp = float(np.max(np.abs(np.subtract(o["probs"], r["probs"]))))
            draw = float(np.max(np.abs(np.subtract(o["raw"], r["raw"]))))
            same_top1 = int(np.argmax(o["probs"])) == int(np.argmax(r["probs"]))
            good = same_top1 and draw <= QUANT_STEPS if m["quantized"] else dp <= FLOAT_TOL and draw <= FLOAT_TOL
            ok &= good
            print(f"{name:28s} {img:10s} {'same' if same_top1 else 'DIFF':>5s} {dp:10.2e} {draw:10.2e}  {'ok' if good else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", type=Path, default=FIXTURES)
    ap.add_argument("--out", type=Path, help="write this machine's outputs here")
    ap.add_argument("--compare", type=Path, help="reference JSON (x86-64) to compare with")
    ap.add_argument("--pillow-only", action="store_true", help="decode JPEGs with Pillow alone (how the reference is made)")
    args = ap.parse_args(argv)
    if args.pillow_only:
        from edgetune.runtime import image

        image._simplejpeg = None
    ours = run_all(args.fixtures)
    ours.update(jpeg_decoder=jpeg_decoder(), pixels=pixel_digests(args.fixtures))
    if args.out:
        args.out.write_text(json.dumps(ours, indent=1) + "\n")
    if args.compare:
        ref = json.loads(args.compare.read_text())
        print(f"{ours['machine']} (Python {ours['python']}) vs {ref['machine']} (Python {ref['python']})")
        return 0 if compare(ours, ref) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
