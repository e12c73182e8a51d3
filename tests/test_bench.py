"""edgetune bench: results JSON schema, parity and budget logic, a short bench on the tiny fixture models.

Timings are recorded, never asserted: only their internal consistency (min <= p50 <= p99) is checked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import synth_color_image
from PIL import Image

from edgetune import UserError
from edgetune.benchmarks import BenchConfig, parity_row, read_results, run_bench, save_reference, within_budget
from edgetune.benchmarks.config import parse_threads
from edgetune.benchmarks.results import validate_results
from edgetune.cli import main
from edgetune.contract import ContractError, ModelMetadata, Preprocessing, write_metadata, write_split

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
FAST = dict(warmup=1, min_runs=5, min_time=0.0)


def tiny_models(*names: str) -> list[Path]:
    return [MODELS / n for n in names]


synth = synth_color_image


@pytest.fixture
def fixture_run(tmp_path: Path) -> Path:
    """A run dir around the committed tiny3 models: labelled test images, exports, no model.keras."""
    labels = ["red", "green", "blue"]
    data = tmp_path / "data"
    split = []
    for k, name in enumerate(labels):
        (data / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(synth(k, 10 * k + i)).save(data / name / f"{i}.png")
            split.append((f"{name}/{i}.png", name))
    run = tmp_path / "run"
    write_split(run / "splits" / "test.txt", split)
    write_metadata(run / "metadata.json", ModelMetadata(labels=labels, preprocessing=Preprocessing(size=(32, 32)),
                                                        output_kind="softmax_logits", source={"data_root": str(data)}))
    (run / "export").mkdir()
    for stem in ("tiny3_fp32", "tiny3_int8", "tiny3_fp32_onnx"):
        for f in MODELS.glob(stem + ".*"):
            shutil.copy(f, run / "export" / f.name)
    return run


def test_parse_threads():
    assert parse_threads("1,2,all", cores=4) == [1, 2, 4]
    assert parse_threads("2,all", cores=2) == [2]
    for bad in ("0", "x", ""):
        with pytest.raises(UserError):
            parse_threads(bad, cores=2)


def test_budget_logic():
    assert within_budget(0.5, 0.5) is True  # one image of 200 is exactly the default budget
    assert within_budget(0.51, 0.5) is False
    assert within_budget(-1.0, 0.5) is True  # better than Keras
    assert within_budget(None, 0.5) is None
    y = np.array([0, 0, 1, 1])
    ref = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])  # Keras: 4/4
    model = np.array([[0.7, 0.3], [0.4, 0.6], [0.3, 0.7], [0.45, 0.55]])  # one flip: 3/4
    row = parity_row("int8.tflite", model, y, ["cats", "dogs"], ref, max_drop=0.5)
    assert row.accuracy == 0.75 and row.keras_accuracy == 1.0
    assert row.drop_points == pytest.approx(25.0) and row.lost == 1 and row.gained == 0
    assert row.agreement == 0.75 and row.flips == 1 and row.flip_indices == [1]
    assert row.max_abs_dprob == pytest.approx(0.4) and row.mean_abs_dprob == pytest.approx(0.1625)
    assert row.per_class_accuracy == {"cats": 0.5, "dogs": 1.0}
    assert row.within_budget is False
    assert row.accuracy_ci95[0] < 0.75 < row.accuracy_ci95[1] and row.accuracy_ci95[0] > 0.2  # 3 of 4: wide
    # One flip in four images already puts agreement below 97% with 95% confidence (Wilson high end 95.4%).
    assert row.verdict == "fail" and row.agreement_ci95[1] < 0.97
    assert parity_row("x", model, y, ["cats", "dogs"], ref, max_drop=30.0).within_budget is True
    alone = parity_row("x", model, y, ["cats", "dogs"])
    assert alone.within_budget is None and alone.agreement is None and alone.verdict is None


def _flipped(n: int, flips: int, seed: int = 0, gained: int = 0):
    """Two-class reference and model probabilities over n images where `flips` top-1 answers differ."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    ref = np.eye(2)[y] * 0.8 + 0.1  # Keras right everywhere...
    wrong = rng.choice(n, gained, replace=False)
    ref[wrong] = ref[wrong][:, ::-1]  # ...except on `gained` images, where the model will be right
    model = ref.copy()
    flip = np.concatenate([wrong, rng.choice(np.setdiff1d(np.arange(n), wrong), flips - gained, replace=False)])
    model[flip] = model[flip][:, ::-1]
    return model, y, ref


def test_gate_three_outcomes():
    """The gate on constructed predictions: a clear fail, a clear pass, and too few images to tell."""
    model, y, ref = _flipped(1000, 60)  # 94% agreement, 6 points lost
    fail = parity_row("bad", model, y, ["a", "b"], ref, floor=0.97, max_drop=0.5)
    assert fail.verdict == "fail" and "95% confidence" in fail.reason and fail.agreement_ci95[1] < 0.97
    model, y, ref = _flipped(2000, 10, gained=5)  # 99.5% agreement, 5 lost and 5 gained: no drop
    ok = parity_row("good", model, y, ["a", "b"], ref, floor=0.97, max_drop=0.5)
    assert ok.verdict == "pass" and ok.agreement_ci95[0] >= 0.97 and ok.drop_points == 0.0
    model, y, ref = _flipped(20, 2)  # 90% of 20: a broken export or noise? 20 images cannot tell
    few = parity_row("short", model, y, ["a", "b"], ref, floor=0.97, max_drop=0.5)
    assert few.verdict == "inconclusive" and few.images_to_decide and few.images_to_decide > 20
    assert few.agreement_ci95[0] < 0.97 <= few.agreement_ci95[1]
    exact = parity_row("fp32", ref, y, ["a", "b"], ref, floor=0.98)
    assert exact.verdict == "pass" and "within 0.001" in exact.reason  # identical outputs need no sample size


def test_bench_model_files_schema(tmp_path: Path):
    """Isolated workers per model: every thread count x mode has a row, stats are consistent, JSON validates."""
    out = tmp_path / "res.json"
    res = run_bench(BenchConfig(targets=tiny_models("tiny3_fp32.tflite", "tiny3_int8.tflite", "tiny3_fp32_onnx.onnx"),
                                threads="1,2", name="box-a", out=out, **FAST))
    on_disk = read_results(out)
    assert on_disk["kind"] == "edgetune-bench" and on_disk["schema"] == 1
    dev = on_disk["device"]
    assert dev["name"] == "box-a" and dev["kind"] in ("cpu", "gpu", "pi")
    for key in ("cpu", "os", "python", "libraries", "thermal"):
        assert key in dev
    assert dev["cpu"]["cores"] >= 1 and isinstance(dev["cpu"]["simd"], list)
    assert "numpy" in dev["libraries"]
    rows = {(r["name"], r["mode"], r["threads"]): r for r in on_disk["latency"]}
    for name in ("tiny3_fp32.tflite", "tiny3_int8.tflite", "tiny3_fp32_onnx.onnx"):
        for t in (1, 2):
            for mode in ("predictor", "raw_invoke"):
                r = rows[(name, mode, t)]
                assert r["status"] == "ok", r
                assert r["runs"] >= 5 and r["warmup"] == 1 and r["batch"] == 1
                assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
                assert r["throughput_ips"] > 0 and r["peak_rss_mb"] > 0 and r["load_s"] > 0 and r["first_ms"] > 0
            assert rows[(name, "predictor", t)]["extra"]["predictor_over_raw_p50"] > 0
    assert rows[("tiny3_fp32.tflite", "predictor", 1)]["accelerator"] == "XNNPACK"
    assert rows[("tiny3_fp32.tflite", "predictor", 1)]["accelerator_confirmed"] is True  # LiteRT's own log
    assert rows[("tiny3_fp32_onnx.onnx", "predictor", 1)]["accelerator"] == "CPUExecutionProvider"
    models = {m["name"]: m for m in on_disk["models"]}
    assert models["tiny3_int8.tflite"]["input_dtype"] == "int8"
    assert models["tiny3_int8.tflite"]["size_bytes"] == (MODELS / "tiny3_int8.tflite").stat().st_size
    assert on_disk["parity"] == []  # no run dir, no labelled images: latency only
    assert res["recommendation"]["smallest"] == "tiny3_int8.tflite"
    assert out.with_suffix(".md").read_text().count("tiny3_fp32.tflite") >= 2


def test_validate_results_rejects(tmp_path: Path):
    good = {"kind": "edgetune-bench", "schema": 1, "created": "x", "device": {"name": "a"}, "config": {},
            "models": [], "parity": [], "latency": []}
    validate_results(good)
    for broken, msg in [({**good, "kind": "other"}, "not an edgetune"), ({**good, "schema": 99}, "schema 99"),
                        ({k: v for k, v in good.items() if k != "latency"}, "missing"),
                        ({**good, "latency": [{"name": "m"}]}, "lacks")]:
        with pytest.raises(ContractError, match=msg):
            validate_results(broken)
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ContractError):
        read_results(p)


def test_bench_run_dir_parity_and_e2e_without_tensorflow(fixture_run: Path, tmp_path: Path):
    """A Pi's view: TensorFlow blocked, the stored reference is read, parity and file->label rows are produced."""
    save_reference(fixture_run, _independent_reference(fixture_run))
    out = tmp_path / "pi.json"
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from edgetune.cli import main
        rc = main(["bench", {str(fixture_run)!r}, "--threads", "1", "--min-runs", "5", "--min-time", "0", "--warmup", "1",
                   "--no-isolate", "--name", "pi-like", "--out", {str(out)!r}])
        assert "tensorflow" not in sys.modules
        sys.exit(rc)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Recommendation" in proc.stdout
    res = read_results(out)
    parity = {r["name"]: r for r in res["parity"]}
    assert set(parity) == {"keras", "tiny3_fp32.tflite", "tiny3_int8.tflite", "tiny3_fp32_onnx.onnx"}
    fp32 = parity["tiny3_fp32.tflite"]
    assert fp32["n"] == 15 and fp32["agreement"] == 1.0 and fp32["drop_points"] == 0.0 and fp32["max_abs_dprob"] < 1e-6
    assert fp32["accuracy"] > 0.6  # the fixture nets do classify these images (outputs differ across inputs)
    onnx = parity["tiny3_fp32_onnx.onnx"]
    assert onnx["agreement"] == 1.0 and onnx["max_abs_dprob"] < 1e-4
    int8 = parity["tiny3_int8.tflite"]
    assert 0 < int8["max_abs_dprob"] < 0.5 and set(int8["per_class_accuracy"]) == {"red", "green", "blue"}
    modes = {(r["name"], r["mode"]) for r in res["latency"]}
    assert ("tiny3_int8.tflite", "e2e") in modes
    assert not any(r["mode"].startswith("keras") for r in res["latency"])
    e2e = next(r for r in res["latency"] if r["mode"] == "e2e")
    assert e2e["extra"]["decode_resize_p50_ms"] > 0 and e2e["extra"]["images"] == 15


def test_throughput_row_runs_over_more_images_than_the_e2e_row(fixture_run: Path, tmp_path: Path, monkeypatch):
    """The folder-throughput row gets its own, longer image list, also through the isolated worker process."""
    from edgetune.benchmarks import bench

    monkeypatch.setattr(bench, "E2E_IMAGES", 4)
    save_reference(fixture_run, _independent_reference(fixture_run))
    res = run_bench(BenchConfig(targets=[fixture_run], threads="1", keras="off", raw=False, isolate=True,
                                out=tmp_path / "r.json", **FAST))
    rows = {r["mode"]: r for r in res["latency"] if r["name"] == "tiny3_int8.tflite"}
    assert rows["e2e"]["extra"]["images"] == 4
    assert rows["throughput"]["extra"]["images"] == 15  # every held-out image: fewer than THROUGHPUT_IMAGES
    assert bench.THROUGHPUT_IMAGES > 20


def _independent_reference(run: Path) -> np.ndarray:
    """The Keras stand-in: the same network through another engine (ONNX Runtime on the tf2onnx export),
    so no model is compared with a reference computed by itself."""
    from edgetune.contract import read_split
    from edgetune.runtime import Predictor

    files = [p for p, _ in read_split(run, "heldout")]
    return Predictor.from_path(MODELS / "tiny3_fp32_onnx.onnx").predict_files(files)


def test_budget_flags_a_lossy_model(fixture_run: Path, tmp_path: Path):
    """A reference the int8 model disagrees with: the budget flag trips and the recommendation excludes it."""
    save_reference(fixture_run, _independent_reference(fixture_run))
    res = run_bench(BenchConfig(targets=[fixture_run], threads="1", keras="off", e2e=False, raw=False, isolate=False,
                                max_drop=0.0, out=tmp_path / "r.json", **FAST))
    parity = {r["name"]: r for r in res["parity"]}
    rec = res["recommendation"]
    for name, row in parity.items():
        if name != "keras":
            assert row["within_budget"] == (row["drop_points"] <= 1e-9)
            if row["within_budget"] is False:
                assert rec["smallest"] != name and rec["fastest"] != name
    assert rec["smallest"] in parity and rec["fastest"] in parity


def test_stale_reference_is_refused(fixture_run: Path, tmp_path: Path):
    save_reference(fixture_run, np.full((15, 3), 1 / 3, np.float32))
    split = fixture_run / "splits" / "test.txt"
    split.write_text("".join(split.read_text().splitlines(keepends=True)[:-1]))  # one file fewer
    rc = main(["bench", str(fixture_run), "--threads", "1", "--keras", "off", "--no-isolate", "--out", str(tmp_path / "x.json")])
    assert rc == 2


def test_gpu_rows_say_unavailable_without_gpu(tmp_path: Path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    res = run_bench(BenchConfig(targets=tiny_models("tiny3_fp32_onnx.onnx", "tiny3_fp32.tflite"), threads="1",
                                device="gpu", isolate=False, out=tmp_path / "gpu.json", **FAST))
    assert {r["status"] for r in res["latency"]} == {"unavailable"}
    assert all(r["note"] for r in res["latency"])


def test_cli_bad_input(tmp_path: Path, capsys):
    assert main(["bench", str(tmp_path / "missing.tflite")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", str(MODELS / "tiny3_fp32.tflite"), "--threads", "0"]) == 2
    (tmp_path / "notes.txt").write_text("x")
    assert main(["bench", str(tmp_path / "notes.txt")]) == 2


def test_bench_is_lean():
    """Importing the bench code (what a Pi runs) loads neither TensorFlow nor matplotlib."""
    code = ("import sys, edgetune.cli, edgetune.benchmarks.bench, edgetune.benchmarks.latency, edgetune.benchmarks._worker;"
            "bad=[m for m in ('tensorflow','keras','matplotlib') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_bench_third_party_tflite(shared_assets: Path, tmp_path: Path):
    """The real third-party ImageNet models: explicit --labels/--size, accuracy on two labelled images."""
    src = shared_assets / "mobilenet_v2" / "source"
    listing = tmp_path / "images.txt"
    listing.write_text(f"{src / 'cat.bmp'}\tEgyptian cat\n{src / 'grace_hopper.bmp'}\tmilitary uniform\n")
    out = tmp_path / "third.json"
    rc = main(["bench", str(src / "tf2_mobilenet_v2_1.0_224_ptq.tflite"), str(src / "mobilenet_v2_1.0_224_quant.tflite"),
               "--labels", str(src / "imagenet_labels.txt"), "--size", "224", "--threads", "1,2", "--images", str(listing),
               "--min-runs", "10", "--min-time", "0.2", "--out", str(out)])
    assert rc == 0
    res = read_results(out)
    assert all(r["status"] == "ok" for r in res["latency"])
    acc = {r["name"]: r["accuracy"] for r in res["parity"]}
    assert acc["tf2_mobilenet_v2_1.0_224_ptq.tflite"] >= 0.5
    assert json.loads(out.read_text())["recommendation"]["fastest"] in acc


def _lat_row(name, mode, threads, p50, fmt="tflite", ratio=None):
    r = {"name": name, "mode": mode, "threads": threads, "status": "ok", "p50_ms": p50, "p99_ms": p50 * 1.5,
         "format": fmt, "extra": {}}
    if ratio:
        r["extra"]["predictor_over_raw_p50"] = ratio
    return r


def test_recommendation_and_key_ratios_from_rows():
    from edgetune.benchmarks.results import key_ratios, make_results

    models = [{"name": "keras", "format": "keras", "preset": "keras", "size_bytes": 17_000_000},
              {"name": "fp32.tflite", "format": "tflite", "preset": "fp32", "size_bytes": 9_000_000},
              {"name": "int8.tflite", "format": "tflite", "preset": "int8", "size_bytes": 2_700_000, "input_dtype": "int8"},
              {"name": "dynamic.tflite", "format": "tflite", "preset": "dynamic", "size_bytes": 2_500_000}]
    parity = [{"name": "keras", "within_budget": True}, {"name": "fp32.tflite", "within_budget": True},
              {"name": "int8.tflite", "within_budget": True}, {"name": "dynamic.tflite", "within_budget": False}]
    latency = [_lat_row("keras", "keras_predict", 2, 100.0, "keras"), _lat_row("keras", "keras_function", 2, 10.0, "keras"),
               _lat_row("fp32.tflite", "predictor", 2, 3.0, ratio=1.02),
               _lat_row("int8.tflite", "predictor", 2, 2.0, ratio=1.10), _lat_row("dynamic.tflite", "predictor", 2, 1.0)]
    res = make_results({"name": "dev"}, {}, models, parity, latency)
    rec = res["recommendation"]
    assert rec["smallest"] == "int8.tflite"  # dynamic is smaller but outside the budget; keras is not a format
    assert rec["fastest"] == "int8.tflite" and rec["warnings"] == []
    ratios = key_ratios(res)
    assert ratios[0] == "keras predict / int8.tflite: 50.0× @2t"
    assert ratios[1] == "fastest keras / int8.tflite: 5.0× @2t (keras tf.function)"  # the honest speed-up
    assert "worst 1.100 (int8.tflite @2t), above the 1.05 target" in ratios[2]
    assert rec["fastest_integer"] == "int8.tflite"
    latency[3]["p50_ms"] = 4.0  # int8 now slower than fp32: warned, and no longer the fastest
    rec = make_results({"name": "dev"}, {}, models, parity, latency)["recommendation"]
    assert rec["fastest"] == "fp32.tflite" and len(rec["warnings"]) == 1


def test_recommendation_says_when_no_integer_model_is_within_budget():
    from edgetune.benchmarks.results import make_results

    models = [{"name": "tflite_fp32.tflite", "format": "tflite", "preset": "tflite_fp32", "size_bytes": 9},
              {"name": "tflite_int8.tflite", "format": "tflite", "preset": "tflite_int8", "size_bytes": 3}]
    parity = [{"name": "tflite_fp32.tflite", "within_budget": True, "verdict": "pass"},
              {"name": "tflite_int8.tflite", "within_budget": False, "verdict": "fail"}]
    latency = [_lat_row("tflite_fp32.tflite", "predictor", 2, 3.0), _lat_row("tflite_int8.tflite", "predictor", 2, 1.0)]
    rec = make_results({"name": "dev"}, {}, models, parity, latency, max_drop=0.5)["recommendation"]
    assert rec["fastest"] == "tflite_fp32.tflite" and rec["fastest_integer"] is None
    assert "no integer model within the 0.5-point budget" in rec["line"]
    parity[1].update(within_budget=True, verdict="inconclusive")
    rec = make_results({"name": "dev"}, {}, models, parity, latency, max_drop=0.5)["recommendation"]
    assert rec["fastest_integer"] == "tflite_int8.tflite" and "inconclusive" in rec["line"]


def test_unknown_baseline_lists_the_rows():
    from edgetune.benchmarks.results import check_baseline

    res = {"latency": [_lat_row("keras", "keras_predict", 1, 50.0, "keras"), _lat_row("a.tflite", "predictor", 1, 1.0)]}
    check_baseline(res, "keras predict")
    with pytest.raises(UserError, match="rows: keras predict, a.tflite"):
        check_baseline(res, "int8.tflite")
