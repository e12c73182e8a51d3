"""The deployment contract: the metadata JSON that travels beside every model file.

Train writes it, convert extends it, the runtime and the benchmarks read it. Nothing downstream
hard-codes an input size, a label or a preprocessing constant: the most common bug class in edge
deployment is a preprocessing mismatch between training and inference, and this file is what
makes it impossible to ship one silently.

This module is lean (standard library only) so that a Raspberry Pi can import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
OUTPUT_KINDS = ("binary_logit", "softmax_logits", "probabilities")
RESIZE_METHODS = ("bilinear",)
SPLITS = ("train", "val", "test")
HELDOUT = "heldout"
"""Pseudo-split: validation + test, the images parity is measured on (agreement needs no labels)."""


class ContractError(ValueError):
    """A metadata file is missing, unreadable or inconsistent with its model."""


@dataclass
class Preprocessing:
    """How an image file becomes the model's input tensor (identical in training and deployment)."""

    size: tuple[int, int] = (160, 160)
    """Model input (height, width) in pixels."""
    resize: str = "bilinear"
    """Resize method; bilinear with half-pixel centers and no antialias, like tf.image.resize."""
    antialias: bool = False
    """Whether resizing low-pass filters first (tf.image.resize's default is False)."""
    channels: str = "RGB"
    """Channel order of the input tensor."""
    input_range: tuple[float, float] = (0.0, 255.0)
    """Range of the values fed to the model; normalization to [-1, 1] lives inside the model."""
    exif_orientation: bool = True
    """Whether the EXIF orientation tag is applied before resizing."""
    jpeg_dct: str = "INTEGER_ACCURATE"
    """JPEG IDCT method used in training (matches Pillow/libjpeg's default ISLOW)."""
    normalization: str = "inside_model"
    """Where mean/scale normalization happens: inside_model, or a formula applied by the runtime."""
    jpeg_draft: bool = False
    """Decode JPEGs at 1/2, 1/4 or 1/8 scale when that still covers `size` (libjpeg's DCT scaling, Pillow
    `Image.draft`), several times faster; the pixels differ, so only for models trained that way.
    Absent (older metadata): False."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["size"] = list(self.size)
        d["input_range"] = list(self.input_range)
        return d

    @classmethod
    def from_dict(cls, d: Any, origin: str = "metadata") -> Preprocessing:
        """Validate a preprocessing block: every value must be one the runtime implements exactly.

        A contract the runtime cannot honour (antialiased resizing, another JPEG IDCT, a normalization
        outside the model, a reversed input range) is refused, never silently ignored: the runtime would
        otherwise feed other pixels than training did and report confident wrong labels.
        """
        where = f"{origin}: preprocessing"
        if not isinstance(d, dict):
            raise ContractError(f"{where} must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ContractError(f"{where} has fields this edgetune does not know: {unknown} (a newer edgetune wrote it?)")
        if "size" not in d:
            raise ContractError(f"{where}.size is missing: the model's input [height, width] must be stated")
        size = d["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v >= 1 for v in size)):
            raise ContractError(f"{where}.size must be [height, width] in pixels, got {size!r}")
        rng = d.get("input_range", [0.0, 255.0])
        if not (isinstance(rng, list) and len(rng) == 2 and all(_is_number(v) for v in rng)):
            raise ContractError(f"{where}.input_range must be [low, high], got {rng!r}")
        if not rng[1] > rng[0]:
            raise ContractError(f"{where}.input_range {rng} is reversed or empty: the high end must exceed the low end")
        p = cls(size=(int(size[0]), int(size[1])), input_range=(float(rng[0]), float(rng[1])),
                **{k: v for k, v in d.items() if k not in ("size", "input_range")})
        supported = {"resize": RESIZE_METHODS, "channels": ("RGB",), "antialias": (False,),
                     "jpeg_dct": ("INTEGER_ACCURATE",), "normalization": ("inside_model",)}
        for name, allowed in supported.items():
            value = getattr(p, name)
            if type(value) is not type(allowed[0]) or value not in allowed:
                raise ContractError(f"{where}.{name} = {value!r} is not supported by this runtime "
                                    f"(it implements {', '.join(repr(a) for a in allowed)})")
        for name in ("exif_orientation", "jpeg_draft"):
            if not isinstance(getattr(p, name), bool):
                raise ContractError(f"{where}.{name} must be true or false, got {getattr(p, name)!r}")
        return p


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


@dataclass
class TensorSpec:
    """dtype, shape and (for quantized tensors) scale and zero point of a model input or output."""

    shape: list[int] = field(default_factory=lambda: [1, 160, 160, 3])
    dtype: str = "float32"
    scale: float | None = None
    zero_point: int | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str = "tensor") -> TensorSpec:
        if not isinstance(d, dict):
            raise ContractError(f"{where} must be a JSON object, got {type(d).__name__}")
        shape, dtype = d.get("shape", []), d.get("dtype", "float32")
        if not (isinstance(shape, list) and all(_is_int(v) for v in shape)):
            raise ContractError(f"{where}.shape must be a list of integers, got {shape!r}")
        if not isinstance(dtype, str):
            raise ContractError(f"{where}.dtype must be a string, got {dtype!r}")
        scale, zero = d.get("scale"), d.get("zero_point")
        if scale is not None and not _is_number(scale):
            raise ContractError(f"{where}.scale must be a number or null, got {scale!r}")
        if zero is not None and not _is_int(zero):
            raise ContractError(f"{where}.zero_point must be an integer or null, got {zero!r}")
        return cls(shape=list(shape), dtype=dtype, scale=None if scale is None else float(scale), zero_point=zero)


@dataclass
class ModelMetadata:
    """Everything a consumer needs to feed a model file and read its answer."""

    labels: list[str]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    input: TensorSpec = field(default_factory=TensorSpec)
    output: TensorSpec = field(default_factory=lambda: TensorSpec(shape=[1, 1]))
    output_kind: str = "binary_logit"
    """binary_logit (one logit, sigmoid gives P(labels[1])), softmax_logits or probabilities."""
    preset: str = "keras"
    """Quantization/export preset that produced the model file (keras for the trained model)."""
    source: dict[str, Any] = field(default_factory=dict)
    """Provenance: source model file and sha256, weights origin, data root."""
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    """Stage-specific additions (quantization details, parity results, ...)."""
    schema: int = SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "labels": list(self.labels),
            "preprocessing": self.preprocessing.to_dict(),
            "input": dataclasses.asdict(self.input),
            "output": dataclasses.asdict(self.output),
            "output_kind": self.output_kind,
            "preset": self.preset,
            "source": self.source,
            "versions": self.versions,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], origin: str = "metadata") -> ModelMetadata:
        if not isinstance(d, dict):
            raise ContractError(f"{origin}: expected a JSON object")
        schema = d.get("schema")
        if schema != SCHEMA_VERSION:
            raise ContractError(f"{origin}: schema {schema!r} is not supported (this edgetune reads {SCHEMA_VERSION})")
        labels = d.get("labels")
        if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) and x for x in labels):
            raise ContractError(f"{origin}: 'labels' must be a list of at least two non-empty names")
        if len(set(labels)) != len(labels):
            raise ContractError(f"{origin}: duplicate labels {labels}")
        if "output_kind" not in d:
            raise ContractError(f"{origin}: output_kind is missing (one of {OUTPUT_KINDS}): how to read the model's output")
        kind = d["output_kind"]
        if kind not in OUTPUT_KINDS:
            raise ContractError(f"{origin}: output_kind {kind!r} is not one of {OUTPUT_KINDS}")
        if kind == "binary_logit" and len(labels) != 2:
            raise ContractError(f"{origin}: binary_logit output needs exactly 2 labels, got {len(labels)}")
        known = {"schema", "labels", "preprocessing", "input", "output", "output_kind", "preset", "source", "versions"}
        if "preprocessing" not in d:
            raise ContractError(f"{origin}: preprocessing is missing: how images become the model's input must be stated")
        for key in ("source", "versions"):
            if not isinstance(d.get(key, {}), dict):
                raise ContractError(f"{origin}: {key} must be a JSON object, got {type(d[key]).__name__}")
        return cls(
            labels=list(labels),
            preprocessing=Preprocessing.from_dict(d["preprocessing"], origin),
            input=TensorSpec.from_dict(d.get("input", {}), f"{origin}: input"),
            output=TensorSpec.from_dict(d.get("output", {}), f"{origin}: output"),
            output_kind=kind,
            preset=str(d.get("preset", "keras")),
            source=dict(d.get("source", {})),
            versions=dict(d.get("versions", {})),
            extra={k: v for k, v in d.items() if k not in known},
            schema=schema,
        )


def metadata_path_for(model_path: str | os.PathLike) -> Path:
    """Where the metadata of a model file lives.

    `export/tflite_int8.tflite` -> `export/tflite_int8.json`; a run dir or its `model.keras` -> `metadata.json`.
    """
    p = Path(model_path)
    if p.is_dir():
        return p / "metadata.json"
    if p.suffix == ".keras" or p.name == "saved_model":
        return p.parent / "metadata.json"
    return p.with_suffix(".json")


def read_metadata(path: str | os.PathLike) -> ModelMetadata:
    """Read and validate metadata, given the JSON itself or the model file it describes."""
    p = Path(path)
    json_path = p if p.suffix == ".json" and not p.is_dir() else metadata_path_for(p)
    if not json_path.is_file():
        raise ContractError(f"no metadata file {json_path} beside {p}")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ContractError(f"{json_path}: not readable JSON ({exc})") from exc
    return ModelMetadata.from_dict(data, origin=str(json_path))


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON to a temporary file in the same folder, then rename: readers never see half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=_json_default)
            f.write("\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_metadata(path: str | os.PathLike, meta: ModelMetadata) -> Path:
    """Validate (by a round trip) and write metadata atomically."""
    d = meta.to_dict()
    ModelMetadata.from_dict(json.loads(json.dumps(d, default=_json_default)), origin=str(path))
    return write_json_atomic(path, d)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file, or of every file under a folder in sorted order (for SavedModels)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def read_split(run_dir: str | os.PathLike, split: str, data_root: str | os.PathLike | None = None) -> list[tuple[Path, int]]:
    """The image files of one split of a training run, as (path, label index) pairs.

    Split files hold `relative/path<TAB>label` lines, relative to the data root recorded in the
    run's metadata; `data_root` overrides it (e.g. the same images copied to a Raspberry Pi).
    `split` is train, val, test, or heldout (val + test: every image the run did not train on).
    """
    run = Path(run_dir)
    if split == HELDOUT:  # every image the run did not train on: validation, then test (either may be absent)
        present = [s for s in ("val", "test") if (run / "splits" / f"{s}.txt").is_file()]
        if not present:
            raise ContractError(f"{run}/splits has neither val.txt nor test.txt: is {run} an edgetune run dir?")
        return [item for s in present for item in read_split(run, s, data_root)]
    split_file = run / "splits" / f"{split}.txt"
    if not split_file.is_file():
        raise ContractError(f"{split_file} not found: is {run} an edgetune run dir?")
    meta = read_metadata(run / "metadata.json")
    root = Path(data_root) if data_root is not None else Path(meta.source.get("data_root", run))
    return read_split_file(split_file, meta.labels, root)


def read_split_file(split_file: str | os.PathLike, labels: list[str], root: str | os.PathLike) -> list[tuple[Path, int]]:
    """Parse a split file (`relative/path<TAB>label` lines; absolute paths stay absolute) against `labels`.

    Raises:
        ContractError: An unreadable file, a line without a tab, or a label that is not one of `labels`.
    """
    split_file, root = Path(split_file), Path(root)
    index = {name: i for i, name in enumerate(labels)}
    try:
        text = split_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError(f"{split_file} is not readable ({exc})") from exc
    items = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        rel, tab, label = line.partition("\t")
        if not tab:
            raise ContractError(f"{split_file}:{line_no}: expected 'path<TAB>label', got {line[:80]!r}")
        if label not in index:
            raise ContractError(f"{split_file}:{line_no}: label {label!r} is not one of {labels}")
        items.append((root / rel, index[label]))
    return items


def write_split(path: str | os.PathLike, items: list[tuple[str, str]]) -> None:
    """Write (relative path, label name) pairs in the format `read_split` reads."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(f"{rel}\t{label}\n" for rel, label in items))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
