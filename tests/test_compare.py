"""edgetune compare: two devices' results merged into one table, speed-ups per device, plots, recommendations."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from edgetune.benchmarks import BenchConfig, merge_rows, recommend, run_bench
from edgetune.cli import main

MODELS = Path(__file__).resolve().parent / "fixtures" / "models"


@pytest.fixture(scope="module")
def device_results(tmp_path_factory) -> tuple[Path, Path]:
    """Results of one real short bench, plus a copy posing as a 3x slower device (a Pi) with its own name."""
    tmp = tmp_path_factory.mktemp("cmp")
    a = tmp / "box-cpu.json"
    run_bench(BenchConfig(targets=[MODELS / "tiny3_fp32.tflite", MODELS / "tiny3_int8.tflite"], threads="1,2", name="box-cpu",
                          warmup=1, min_runs=5, min_time=0.0, isolate=False, out=a))
    res = json.loads(a.read_text())
    pi = copy.deepcopy(res)
    pi["device"].update(name="pi5-pi", kind="pi")
    for r in pi["latency"]:
        for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms"):
            r[k] *= 3.0
        if r["name"] == "tiny3_int8.tflite" and r["mode"] == "predictor":
            r["p50_ms"] = 1000.0  # make int8 slower than fp32 on the "Pi"
    b = tmp / "pi5-pi.json"
    b.write_text(json.dumps(pi))
    return a, b


def test_merge_two_devices(device_results):
    a, b = (json.loads(p.read_text()) for p in device_results)
    rows = merge_rows([a, b], baseline="tiny3_fp32.tflite", threads=1)
    assert {r["device"] for r in rows} == {"box-cpu", "pi5-pi"}
    by = {(r["device"], r["label"]): r for r in rows}
    for dev, res in (("box-cpu", a), ("pi5-pi", b)):
        assert by[(dev, "tiny3_fp32.tflite")]["speedup"] == pytest.approx(1.0)
        lat = {(r["name"], r["mode"]): r for r in res["latency"] if r["threads"] == 1}
        expected = lat[("tiny3_fp32.tflite", "predictor")]["p50_ms"] / lat[("tiny3_int8.tflite", "predictor")]["p50_ms"]
        assert by[(dev, "tiny3_int8.tflite")]["speedup"] == pytest.approx(expected)  # own device's baseline
    with pytest.raises(Exception, match="same device name"):
        merge_rows([a, a])


def test_int8_slower_warning(device_results):
    pi = json.loads(device_results[1].read_text())
    rec = recommend(pi)
    assert any("tiny3_int8.tflite (int8) is slower than tiny3_fp32.tflite" in w for w in rec["warnings"])
    assert rec["fastest"] == "tiny3_fp32.tflite"
    assert rec["smallest"] == "tiny3_int8.tflite"


def test_compare_cli_writes_table_and_plots(device_results, tmp_path: Path, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare", *map(str, device_results), "--baseline", "tiny3_fp32.tflite", "--out", str(out)])
    assert rc == 0
    text = (out / "compare.md").read_text()
    assert "box-cpu" in text and "pi5-pi" in text and "× vs tiny3_fp32.tflite" in text
    assert text.split("## Plots")[0].count("within the 0.5-point accuracy budget") == 2  # one recommendation line per device
    assert "warning: tiny3_int8.tflite (int8) is slower" in text
    for png in ("latency.png", "accuracy_latency_size.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "pi5-pi" in capsys.readouterr().out


def test_compare_rejects_bad_files(tmp_path: Path, device_results):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "something-else"}))
    assert main(["compare", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert main(["compare", str(device_results[0]), str(device_results[0]), "--out", str(tmp_path / "o")]) == 2
