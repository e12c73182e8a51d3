"""The fast image path: the gather-based resize equals the plain float one bit for bit, JPEG draft decoding
follows the contract, and threaded folder decoding keeps input order and per-file errors."""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetune.cli import main
from edgetune.contract import ContractError, Preprocessing, read_metadata, write_metadata
from edgetune.runtime import ImageError, Predictor, load_image, resize_bilinear
from edgetune.runtime._parallel import default_interpreters, map_ordered, map_ordered_pooled
from edgetune.runtime.image import EXIF_ORIENTATION_TAG, _axis_weights, jpeg_draft

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "fixtures" / "models" / "tiny3_int8.tflite"


def reference_resize(image: np.ndarray, size) -> np.ndarray:
    """The straightforward float32 version (convert rows, then gather), in TF's operation order."""
    out_h, out_w = size
    y0, y1, wy = _axis_weights(image.shape[0], out_h)
    x0, x1, wx = _axis_weights(image.shape[1], out_w)
    top, bottom = image[y0].astype(np.float32), image[y1].astype(np.float32)
    wx = wx[None, :, None]
    top = top[:, x0] + (top[:, x1] - top[:, x0]) * wx
    bottom = bottom[:, x0] + (bottom[:, x1] - bottom[:, x0]) * wx
    return top + (bottom - top) * wy[:, None, None]


@pytest.mark.parametrize("shape", [(375, 500, 3), (32, 32, 3), (1, 1, 3), (5, 700, 3), (33, 47, 4), (33, 47, 1)])
@pytest.mark.parametrize("size", [(160, 160), (224, 96), (1, 1), (600, 700)])
def test_fast_resize_equals_the_plain_float_resize(shape, size):
    rng = np.random.default_rng(sum(shape) + sum(size))
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    variants = [image, image[:, ::-1], np.asfortranarray(image), image.astype(np.float32)]
    if shape[2] == 4:
        variants.append(image[..., :3])  # a camera's XRGB frame without its padding byte: not contiguous
    for img in variants:
        ours, ref = resize_bilinear(img, size), reference_resize(img, size)
        assert ours.dtype == np.float32 and ours.shape == (*size, img.shape[2])
        assert np.array_equal(ours, ref)  # bit for bit, not within a tolerance


def jpeg(path: Path, w: int, h: int, orientation: int | None = None, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(w * h)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 / w, yy * 255 / h, 128 + 100 * np.sin(xx / 9.0)], -1) + rng.normal(0, 10, (h, w, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert(mode)
    kw = {"quality": 90}
    if orientation:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = orientation
        kw["exif"] = exif
    img.save(path, **kw)
    return path


def test_jpeg_draft_scales_but_always_covers_the_model_input(tmp_path):
    big = jpeg(tmp_path / "big.jpg", 500, 375)
    assert load_image(big).shape == (375, 500, 3)
    assert load_image(big, draft=(160, 160)).shape == (188, 250, 3)  # 1/2: 375 // 160 = 2
    assert load_image(big, draft=(90, 90)).shape == (94, 125, 3)  # 1/4
    assert load_image(big, draft=(40, 40)).shape == (47, 63, 3)  # 1/8
    assert load_image(big, draft=(224, 224)).shape == (375, 500, 3)  # 375 // 224 = 1: full size
    gray = jpeg(tmp_path / "gray.jpg", 500, 375, mode="L")
    assert load_image(gray, draft=(160, 160)).shape == (188, 250, 3)
    png = tmp_path / "big.png"
    Image.open(big).save(png)
    assert load_image(png, draft=(40, 40)).shape == (375, 500, 3)  # only JPEGs are drafted


def test_a_truncated_jpeg_fails_in_draft_mode_as_in_full(tmp_path):
    # `data check` decodes at full scale; a --jpeg-draft run must fail on exactly the files it flags.
    data = jpeg(tmp_path / "whole.jpg", 500, 375).read_bytes()
    for keep in (len(data) // 2, len(data) - 10):
        cut = tmp_path / f"cut{keep}.jpg"
        cut.write_bytes(data[:keep])
        for draft in (None, (160, 160), (40, 40)):
            with pytest.raises(ImageError, match="truncated"):
                load_image(cut, draft=draft)


def test_jpeg_draft_respects_exif_rotation(tmp_path):
    # Stored 100 wide x 400 tall with orientation 6: shown 400 wide x 100 tall. A tall 100x25 (h x w)
    # model input needs all 100 shown rows: no scaling. Ignoring the turn would pick 1/4 and leave 25 rows.
    rotated = jpeg(tmp_path / "rot.jpg", 100, 400, orientation=6)
    assert load_image(rotated, draft=(100, 25)).shape == (100, 400, 3)
    assert load_image(rotated, draft=(50, 25)).shape == (50, 200, 3)  # 1/2 still covers 50 rows
    with Image.open(rotated) as im:
        jpeg_draft(im, (100, 25), exif_orientation=False)
        im.load()
        assert im.size == (25, 100)  # what a draft that ignored the turn would decode


def _both_decoders(monkeypatch, path, **kw):
    """load_image through libjpeg-turbo's direct path (counting its calls) and through Pillow only."""
    import simplejpeg as turbo

    import edgetune.runtime.image as image_module
    calls = []

    class Counting:
        @staticmethod
        def decode_jpeg(*a, **k):
            calls.append(1)
            return turbo.decode_jpeg(*a, **k)

    def run(decoder):
        monkeypatch.setattr(image_module, "_simplejpeg", decoder)
        try:
            return load_image(path, **kw)
        except ImageError as exc:
            return f"ImageError: {exc}"

    fast = run(Counting)
    return fast, run(None), len(calls)


@pytest.mark.parametrize("variant", ["4:2:0", "4:2:2", "4:4:4", "progressive", "restart markers", "odd size",
                                     "grayscale", "CMYK"])
def test_the_direct_jpeg_path_gives_pillows_pixels(tmp_path, monkeypatch, variant):
    pytest.importorskip("simplejpeg")
    w, h = (161, 97) if variant == "odd size" else (320, 240)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 / w, yy * 255 / h, 128 + 100 * np.sin(xx / 5.0)], -1) + rng.normal(0, 20, (h, w, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    kw = {"quality": 85, "subsampling": {"4:2:2": 1, "4:4:4": 0}.get(variant, 2)}
    if variant == "progressive":
        kw["progressive"] = True
    if variant == "restart markers":
        kw["restart_marker_rows"] = 1
    if variant in ("grayscale", "CMYK"):
        img = img.convert("L" if variant == "grayscale" else "CMYK")
    path = tmp_path / "x.jpg"
    img.save(path, **kw)
    fast, pillow, calls = _both_decoders(monkeypatch, path)
    assert fast.dtype == np.uint8 and fast.shape == pillow.shape == (h, w, 3)
    assert np.array_equal(fast, pillow)  # bit for bit
    # Colour JPEGs take the direct path (so this test would notice it silently never running); the rest Pillow.
    assert calls == (0 if variant in ("grayscale", "CMYK") else 1)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_direct_jpeg_path_turns_by_exif_as_pillow_does(tmp_path, monkeypatch, orientation):
    pytest.importorskip("simplejpeg")
    path = jpeg(tmp_path / "o.jpg", 120, 50, orientation=orientation)
    fast, pillow, calls = _both_decoders(monkeypatch, path)
    assert calls == 1 and fast.flags.c_contiguous
    assert fast.shape == pillow.shape == ((120, 50, 3) if orientation >= 5 else (50, 120, 3))
    assert np.array_equal(fast, pillow)
    unturned, unturned_pillow, _ = _both_decoders(monkeypatch, path, exif_orientation=False)
    assert unturned.shape == (50, 120, 3) and np.array_equal(unturned, unturned_pillow)


def test_a_damaged_jpeg_is_judged_by_pillow_on_the_direct_path(tmp_path, monkeypatch):
    # libjpeg warns on truncated or corrupt data; the direct path hands every such file to Pillow, so the
    # answer (an error, or Pillow's pixels) is the same whichever path is installed.
    pytest.importorskip("simplejpeg")
    data = jpeg(tmp_path / "whole.jpg", 300, 200).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    fast, pillow, _ = _both_decoders(monkeypatch, cut)
    assert fast == pillow and "truncated" in fast
    sos = data.index(b"\xff\xda")  # junk bytes before the scan: libjpeg's "extraneous bytes" warning
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(data[:sos] + b"\x00\x11\x22" + data[sos:])
    fast, pillow, _ = _both_decoders(monkeypatch, junk)
    assert type(fast) is type(pillow)
    assert (fast == pillow) if isinstance(fast, str) else np.array_equal(fast, pillow)


def test_damaged_jpegs_give_the_same_answer_on_both_paths(tmp_path, monkeypatch):
    # 200 seeded corruptions (bytes changed, cut, inserted) of a baseline and a progressive JPEG: each file
    # gives the same pixels or the same error whichever path decodes it (measured: 1,500 of 1,500 alike).
    pytest.importorskip("simplejpeg")
    rng = random.Random(0)
    noise = np.clip(np.random.default_rng(1).normal(128, 60, (120, 160, 3)), 0, 255).astype(np.uint8)
    sources = []
    for progressive in (False, True):
        src = tmp_path / f"src{int(progressive)}.jpg"
        Image.fromarray(noise).save(src, quality=85, progressive=progressive)
        sources.append(src.read_bytes())
    outcomes = set()
    for i in range(200):
        data = bytearray(rng.choice(sources))
        kind = ("change", "cut", "insert")[i % 3]
        if kind == "change":
            for _ in range(rng.randint(1, 5)):
                data[rng.randrange(2, len(data))] = rng.randrange(256)
        elif kind == "cut":
            data = data[: rng.randrange(2, len(data))]
        else:
            at = rng.randrange(2, len(data))
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        path = tmp_path / f"damaged{i}.jpg"
        path.write_bytes(bytes(data))
        fast, pillow, _ = _both_decoders(monkeypatch, path)
        assert type(fast) is type(pillow), (kind, fast if isinstance(fast, str) else pillow)
        assert (fast == pillow) if isinstance(fast, str) else np.array_equal(fast, pillow), kind
        outcomes.add(type(fast))
    assert outcomes == {str, np.ndarray}  # both kinds of answer occurred, so both were compared


def test_fixture_pixels_match_the_committed_reference_on_both_paths(monkeypatch):
    # The reference (tests/fixtures/reference_x86_64.json, made by Pillow alone) is what the emulated Pi is
    # held to: a Pillow or libjpeg-turbo upgrade that changed decoded pixels would split training from the Pi.
    import hashlib

    import edgetune.runtime.image as image_module

    fixtures = ROOT / "tests" / "fixtures"
    reference = json.loads((fixtures / "reference_x86_64.json").read_text())["pixels"]
    assert len(reference) >= 20 and any(k.endswith(".jpg") for k in reference)
    for decoder in {image_module._simplejpeg, None}:
        monkeypatch.setattr(image_module, "_simplejpeg", decoder)
        for name, digest in reference.items():
            a = load_image(fixtures / name)
            assert hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest() == digest, (name, decoder)


def test_contract_field_defaults_off_and_is_typed():
    assert Preprocessing.from_dict({"size": [160, 160]}).jpeg_draft is False  # metadata older than the field
    assert Preprocessing.from_dict({"size": [160, 160], "jpeg_draft": True}).jpeg_draft is True
    with pytest.raises(ContractError, match="jpeg_draft must be true or false"):
        Preprocessing.from_dict({"size": [160, 160], "jpeg_draft": "yes"})


def test_predictor_decodes_as_the_contract_says(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(MODEL.parent, models)
    model = models / MODEL.name
    photo = jpeg(tmp_path / "photo.jpg", 300, 260)
    exact = Predictor.from_path(model)
    assert exact.decode(photo).shape == (260, 300, 3)
    meta = read_metadata(model.with_suffix(".json"))
    meta.preprocessing.jpeg_draft = True
    write_metadata(model.with_suffix(".json"), meta)
    drafted = Predictor.from_path(model)
    assert drafted.decode(photo).shape == (33, 38, 3)  # 1/8 still covers 32x32
    assert np.array_equal(drafted.load(photo), resize_bilinear(load_image(photo, draft=(32, 32)), (32, 32)))
    assert not np.array_equal(drafted.load(photo), exact.load(photo))


def test_map_ordered_keeps_order_and_turns_errors_into_results():
    def slow_square(i: int) -> int:
        time.sleep(random.random() * 0.01)
        if i == 7:
            raise ImageError("seven is unreadable")
        return i * i

    for workers in (0, 1, 3):
        out = list(map_ordered(slow_square, range(20), workers, catch=ImageError))
        assert [i for i, _ in out] == list(range(20))
        assert isinstance(out[7][1], ImageError)
        assert [r for i, r in out if i != 7] == [i * i for i in range(20) if i != 7]
    with pytest.raises(ValueError):
        list(map_ordered(lambda i: int("x"), range(3), 2, catch=ImageError))  # other errors still raise


def _folder_with_a_broken_jpeg(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    """n JPEGs of different sizes, 05.jpg replaced by junk; returns the folder and the readable files, sorted."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n):
        jpeg(folder / f"{i:02d}.jpg", 40 + 7 * i, 50 + 3 * i)
    (folder / "05.jpg").write_bytes(b"not a jpeg")
    return folder, sorted(str(f) for f in folder.glob("*.jpg") if f.name != "05.jpg")


def _predict_json(capsys, *args: str) -> dict:
    """`edgetune predict ... --json` on a folder with one unreadable image (exit code 1), its JSON document."""
    assert main(["predict", *args, "--json"]) == 1
    return json.loads(capsys.readouterr().out)


def test_predict_with_decode_threads_matches_one_thread(tmp_path, capsys):
    folder, files = _folder_with_a_broken_jpeg(tmp_path, 12)
    docs = [_predict_json(capsys, str(MODEL), str(folder), "--decode-workers", workers, "--batch-size", "4")
            for workers in ("0", "3")]
    assert docs[0]["predictions"] == docs[1]["predictions"] and len(docs[0]["predictions"]) == 11
    assert [e["path"] for e in docs[1]["errors"]] == [str(folder / "05.jpg")]
    p = Predictor.from_path(MODEL)
    assert np.array_equal(p.predict_files(files, decode_workers=2), p.predict_files(files, decode_workers=0))


def test_map_ordered_pooled_never_lends_a_resource_to_two_threads_at_once():
    lock = threading.Lock()
    busy: set[int] = set()
    clashes: list[int] = []

    def work(resource: int, i: int) -> tuple[int, int]:
        with lock:
            if resource in busy:
                clashes.append(resource)
            busy.add(resource)
        time.sleep(random.random() * 0.005)
        with lock:
            busy.discard(resource)
        if i == 4:
            raise ImageError("four is unreadable")
        return i, resource

    out = list(map_ordered_pooled(work, range(30), [0, 1, 2], catch=ImageError))
    assert [i for i, _ in out] == list(range(30)) and isinstance(out[4][1], ImageError)
    assert not clashes and {r for i, (j, r) in ((i, v) for i, v in out if i != 4)} <= {0, 1, 2}
    with pytest.raises(ValueError):
        list(map_ordered_pooled(work, range(3), []))


def test_default_interpreters_one_per_core_of_the_budget_for_folders_only(monkeypatch):
    monkeypatch.setattr("edgetune.runtime._parallel.available_cores", lambda: 4)
    assert default_interpreters(None, 100) == 4
    assert default_interpreters(2, 100) == 2  # --threads 2 is the whole budget
    assert default_interpreters(1, 100) == 1
    assert default_interpreters(16, 100) == 4  # never more than the cores (and 4)
    assert default_interpreters(None, 15) == 1  # a few images: extra interpreters do not pay for their load
    assert default_interpreters(None, 100, device="gpu") == 1


def test_predict_with_interpreters_side_by_side_matches_one_interpreter(tmp_path, capsys):
    folder, files = _folder_with_a_broken_jpeg(tmp_path, 20)
    docs = [_predict_json(capsys, str(MODEL), str(folder), "--interpreters", n, "--threads", "3") for n in ("1", "3")]
    assert docs[0]["predictions"] == docs[1]["predictions"] and len(docs[0]["predictions"]) == 19
    assert [r["path"] for r in docs[1]["predictions"]] == files
    assert [e["path"] for e in docs[1]["errors"]] == [str(folder / "05.jpg")]
    assert (docs[0]["interpreters"], docs[1]["interpreters"], docs[1]["interpreter_threads"]) == (1, 3, 1)
    p = Predictor.from_path(MODEL, threads=2)
    assert np.array_equal(p.predict_files(files, interpreters=2), p.predict_files(files, decode_workers=0))
    assert [r.backend.threads for r in p.replicas(2)] == [1, 1] and p.replicas(2) is p.replicas(2)
    onnx = Predictor.from_path(MODEL.parent / "tiny3_fp32_onnx.onnx", threads=2)  # ONNX Runtime sessions too
    np.testing.assert_allclose(onnx.predict_files(files, interpreters=2), onnx.predict_files(files, decode_workers=0), atol=1e-6)
    assert main(["predict", str(MODEL), str(folder), "--interpreters", "0"]) == 2
    assert "--interpreters must be >= 1" in capsys.readouterr().err


def test_bench_rows_break_file_to_label_down_and_time_folder_throughput():
    from edgetune.benchmarks.latency import Timing, bench_model
    from edgetune.benchmarks.results import latency_table

    images = sorted(str(p) for p in (ROOT / "tests" / "fixtures" / "images").iterdir())
    rows = bench_model(MODEL, [1], Timing(warmup=1, min_runs=3, min_time_s=0.01), e2e_files=images, decode_workers=2)
    by_mode = {r.mode: r for r in rows}
    e2e, tp = by_mode["e2e"], by_mode["throughput"]
    assert all(e2e.extra[f"{k}_p50_ms"] > 0 for k in ("decode", "resize", "inference")) and e2e.extra["jpeg_draft"] is False
    assert tp.status == "ok" and tp.throughput_ips > 0 and tp.extra["sequential_ips"] > 0
    assert tp.extra["decode_workers"] == 2 and tp.extra["passes"] >= 3 and tp.p50_ms <= tp.p99_ms
    table = latency_table({"latency": [r.to_dict() for r in rows]})
    assert "(folder throughput)" in table and "decoding in 2 threads" in table and "p50 decode" in table
    assert tp.extra["interpreters"] == 1 and tp.extra["parallel_ips"] is None  # 1 thread in all: one interpreter

    assert tp.extra["images"] == e2e.extra["images"] == len(images)  # no throughput_files: the e2e row's

    folder = images * 3  # a longer folder for the throughput row than the e2e row cycles over
    rows = bench_model(MODEL, [2], Timing(warmup=1, min_runs=3, min_time_s=0.01), e2e_files=images[:2],
                       throughput_files=folder, interpreters=2)
    e2e, tp = (next(r for r in rows if r.mode == m) for m in ("e2e", "throughput"))
    assert (e2e.extra["images"], tp.extra["images"]) == (2, len(folder))
    assert tp.extra["interpreters"] == 2 and tp.extra["interpreter_threads"] == 1
    assert tp.extra["parallel_ips"] > 0 and tp.extra["decode_pool_ips"] > 0
    assert tp.throughput_ips == pytest.approx(tp.extra["parallel_ips"])
    assert "2 interpreters of 1 thread(s) side by side" in latency_table({"latency": [r.to_dict() for r in rows]})
