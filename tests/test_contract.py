"""The deployment contract refuses what the runtime cannot honour, and reads only well-typed metadata."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from edgetune.contract import ContractError, ModelMetadata, read_metadata

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "models" / "tiny3_int8.json"
GOOD = json.loads(FIXTURE.read_text())


def _with(path: str, value, remove: bool = False) -> dict:
    d = copy.deepcopy(GOOD)
    *parents, key = path.split(".")
    node = d
    for k in parents:
        node = node[k]
    if remove:
        del node[key]
    else:
        node[key] = value
    return d


def test_the_fixture_is_valid():
    meta = ModelMetadata.from_dict(copy.deepcopy(GOOD))
    assert meta.preprocessing.size == (32, 32) and meta.output_kind == "softmax_logits"


BAD = {
    "reversed range": ("preprocessing.input_range", [255.0, 0.0], "reversed"),
    "range of strings": ("preprocessing.input_range", ["0", "255"], "input_range"),
    "range with inf": ("preprocessing.input_range", [0, float("inf")], "input_range"),
    "antialias": ("preprocessing.antialias", True, "antialias"),
    "other IDCT": ("preprocessing.jpeg_dct", "INTEGER_FAST", "jpeg_dct"),
    "normalization outside the model": ("preprocessing.normalization", "mean_std", "normalization"),
    "nearest resize": ("preprocessing.resize", "nearest", "resize"),
    "BGR": ("preprocessing.channels", "BGR", "channels"),
    "size as a string": ("preprocessing.size", "160", "size"),
    "size of floats": ("preprocessing.size", [160.5, 160], "size"),
    "size of three": ("preprocessing.size", [160, 160, 3], "size"),
    "zero size": ("preprocessing.size", [0, 160], "size"),
    "exif as a string": ("preprocessing.exif_orientation", "yes", "exif_orientation"),
    "unknown field": ("preprocessing.mean", [0.5, 0.5, 0.5], "does not know"),
    "preprocessing a string": ("preprocessing", "bilinear", "preprocessing must be a JSON object"),
    "input null": ("input", None, "input must be a JSON object"),
    "shape of strings": ("input.shape", ["1", "32"], "shape"),
    "scale a string": ("input.scale", "0.5", "scale"),
    "output kind unknown": ("output_kind", "logits", "output_kind"),
    "source a list": ("source", [], "source must be a JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_refused(case):
    path, value, message = BAD[case]
    with pytest.raises(ContractError, match=message):
        ModelMetadata.from_dict(_with(path, value))


@pytest.mark.parametrize("path,message", [("preprocessing.size", "size is missing"), ("output_kind", "output_kind is missing"),
                                          ("preprocessing", "preprocessing is missing")])
def test_required_fields_are_not_defaulted(path, message):
    with pytest.raises(ContractError, match=message):
        ModelMetadata.from_dict(_with(path, None, remove=True))


def test_unreadable_files(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_bytes(b"\xff\xfe{")
    with pytest.raises(ContractError, match="not readable"):
        read_metadata(bad)
    bad.write_text("[" * 100000)
    with pytest.raises(ContractError, match="not readable"):
        read_metadata(bad)
    with pytest.raises(ContractError, match="no metadata file"):
        read_metadata(tmp_path / "model.tflite")
