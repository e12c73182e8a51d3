"""edgetune pipeline --quick on tiny generated data: train -> convert -> reference -> bench -> report.md."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_image_tree, pretrained_weights_or_none
from edgetune.benchmarks.pipeline import quick_subset
from edgetune.cli import main


def test_quick_subset_keeps_layout(tmp_path: Path):
    make_image_tree(tmp_path / "data" / "train", per_class=5)
    make_image_tree(tmp_path / "data" / "validation", per_class=4, seed=3)
    sub = quick_subset(tmp_path / "data", tmp_path / "sub", per_class=3)
    for split in ("train", "validation"):
        for cls in ("cats", "dogs"):
            files = sorted(p.name for p in (sub / split / cls).iterdir())
            assert files == sorted(p.name for p in (tmp_path / "data" / split / cls).iterdir())[:3]
    assert not (tmp_path / "sub.tmp").exists()


def test_pipeline_quick_smoke(tmp_path: Path, capsys):
    data = tmp_path / "data"
    make_image_tree(data / "train", per_class=16, seed=1)
    make_image_tree(data / "validation", per_class=10, seed=2)
    out = tmp_path / "run"
    rc = main(["pipeline", "--data", str(data), "--out", str(out), "--quick", "--quick-images", "12", "--image-size", "48",
               "--weights", pretrained_weights_or_none(), "--threads", "1", "--min-runs", "5", "--min-time", "0"])
    assert rc == 0, capsys.readouterr().err[-3000:]
    report = (out / "report.md").read_text()
    assert "Parity" in report and "Latency" in report and "Recommendation" in report
    assert "95% interval" in report and "95% CI" in report  # what the test split can resolve, bench and training
    assert "keras predict" in report and "keras compiled" in report  # TensorFlow is installed here
    results = json.loads(next((out / "results").glob("*.json")).read_text())
    names = {r["name"] for r in results["parity"]}
    exports = {p.name for p in (out / "export").iterdir() if p.suffix in (".tflite", ".onnx")}
    assert exports and names == exports | {"keras"}
    assert (out / "reference" / "test_probs.npy").is_file()
    for png in ("latency.png", "accuracy_latency_size.png"):
        assert (out / "results" / png).is_file() and f"results/{png}" in report
    keras = next(r for r in results["parity"] if r["name"] == "keras")
    assert keras["agreement"] == 1.0
    assert exports <= {"tflite_fp32.tflite", "tflite_int8.tflite", "onnx_fp32.onnx"}  # the --quick subset
    parity = {r["name"]: r for r in results["parity"]}
    assert parity["tflite_fp32.tflite"]["agreement"] == 1.0 and parity["tflite_fp32.tflite"]["max_abs_dprob"] < 1e-3
