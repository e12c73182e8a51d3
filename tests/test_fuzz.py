"""Property-based fuzzing of what reads users' files: only the documented error types may escape.

- the image loader (`edgetune.runtime.load_image`): random bytes and mutated real images -> an array or ImageError;
- the metadata reader (`edgetune.contract.read_metadata`): random JSON and mutated contracts -> metadata or ContractError;
- the results reader (`edgetune.benchmarks.read_results`): random JSON and mutated results -> a document or
  ContractError, and a document that validates renders (tables, recommendation) without crashing.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgetune.contract import ContractError, read_metadata
from edgetune.runtime import ImageError, load_image

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


def _image_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 31, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


SEEDS = {fmt: _image_bytes(fmt) for fmt in ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM")}


def _mutate(data: bytes, positions: list[int], values: list[int], cut: int | None) -> bytes:
    b = bytearray(data)
    for p, v in zip(positions, values):
        b[p % len(b)] = v
    return bytes(b[:cut] if cut else b)


def _check_loaded(arr: np.ndarray) -> None:
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3


@SETTINGS
@given(data=st.binary(max_size=2048))
def test_image_loader_random_bytes(tmp_path: Path, data: bytes):
    f = tmp_path / "x.jpg"
    f.write_bytes(data)
    try:
        _check_loaded(load_image(f))
    except ImageError:
        pass


@SETTINGS
@given(fmt=st.sampled_from(sorted(SEEDS)), positions=st.lists(st.integers(0, 10**6), max_size=8),
       values=st.lists(st.integers(0, 255), max_size=8), cut=st.none() | st.integers(1, 4000))
def test_image_loader_mutated_images(tmp_path: Path, fmt: str, positions, values, cut):
    f = tmp_path / f"x.{fmt.lower()}"
    f.write_bytes(_mutate(SEEDS[fmt], positions, values, cut))
    try:
        _check_loaded(load_image(f))
    except ImageError:
        pass


GOOD_META = json.loads((FIXTURES / "models" / "tiny3_int8.json").read_text())


def _paths(d, prefix=()):
    """Every key path in a JSON document."""
    if isinstance(d, dict):
        for k, v in d.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


META_PATHS = list(_paths(GOOD_META))


def _replace(doc, path, value):
    doc = copy.deepcopy(doc)
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return doc


@SETTINGS
@given(doc=json_values)
def test_metadata_reader_random_json(tmp_path: Path, doc):
    f = tmp_path / "m.json"
    f.write_text(json.dumps(doc))
    try:
        read_metadata(f)
    except ContractError:
        pass


@SETTINGS
@given(path=st.sampled_from(META_PATHS), value=json_values)
def test_metadata_reader_mutated_contract(tmp_path: Path, path, value):
    f = tmp_path / "m.json"
    f.write_text(json.dumps(_replace(GOOD_META, path, value)))
    try:
        meta = read_metadata(f)
    except ContractError:
        return
    # What the reader accepts, the runtime can use: a size, an ordered range, a known output kind.
    assert len(meta.preprocessing.size) == 2 and min(meta.preprocessing.size) >= 1
    assert meta.preprocessing.input_range[1] > meta.preprocessing.input_range[0]


def _good_results() -> dict:
    from edgetune.benchmarks.results import make_results

    models = [{"name": "a.tflite", "format": "tflite", "preset": "tflite_int8", "size_bytes": 100, "input_dtype": "int8"},
              {"name": "b.tflite", "format": "tflite", "preset": "tflite_fp32", "size_bytes": 400}]
    parity = [{"name": "a.tflite", "n": 10, "accuracy": 0.9, "agreement": 0.9, "drop_points": 1.0, "within_budget": False,
               "verdict": "inconclusive", "agreement_ci95": [0.6, 0.98], "drop_ci95": [-2.0, 3.0]},
              {"name": "b.tflite", "n": 10, "accuracy": 1.0, "agreement": 1.0, "drop_points": 0.0, "within_budget": True}]
    latency = [{"name": n, "mode": "predictor", "threads": t, "status": "ok", "p50_ms": 1.0 + t, "p99_ms": 2.0 + t,
                "extra": {"predictor_over_raw_p50": 1.01}} for n in ("a.tflite", "b.tflite") for t in (1, 2)]
    return json.loads(json.dumps(make_results({"name": "box", "cpu": {}}, {}, models, parity, latency, run="r")))


GOOD_RESULTS = _good_results()
RESULT_PATHS = list(_paths(GOOD_RESULTS))


def _read_and_render(tmp_path: Path, doc) -> None:
    from edgetune.benchmarks.compare import merge_rows
    from edgetune.benchmarks.results import markdown_report, read_results, recommend

    f = tmp_path / "r.json"
    f.write_text(json.dumps(doc))
    try:
        res = read_results(f)
    except ContractError:
        return
    recommend(res)
    markdown_report(res)
    merge_rows([res])


@SETTINGS
@given(doc=json_values)
def test_results_reader_random_json(tmp_path: Path, doc):
    _read_and_render(tmp_path, doc)


@SETTINGS
@given(path=st.sampled_from(RESULT_PATHS), value=json_values)
def test_results_reader_mutated_results(tmp_path: Path, path, value):
    _read_and_render(tmp_path, _replace(GOOD_RESULTS, path, value))


def test_fuzz_seeds_are_valid(tmp_path: Path):
    """The mutation seeds themselves load: the fuzzing starts from real inputs."""
    for fmt, data in SEEDS.items():
        f = tmp_path / f"seed.{fmt.lower()}"
        f.write_bytes(data)
        _check_loaded(load_image(f))
    f = tmp_path / "r.json"
    f.write_text(json.dumps(GOOD_RESULTS))
    _read_and_render(tmp_path, GOOD_RESULTS)
    with pytest.raises(ContractError):
        _read_and_render(tmp_path, {"kind": "edgetune-bench"}) or read_metadata(tmp_path / "r.json")


def test_results_without_a_recorded_budget_render_with_the_default(tmp_path: Path):
    """Found by the mutation fuzzer: `"max_drop": null` passed the schema and crashed the recommendation line."""
    from edgetune.benchmarks.results import recommend

    for doc in (_replace(GOOD_RESULTS, ("max_drop",), None), {k: v for k, v in GOOD_RESULTS.items() if k != "max_drop"}):
        _read_and_render(tmp_path, doc)
        assert "within the 0.5-point accuracy budget" in recommend(doc)["line"]
