"""Metadata carried inside the model file, so a single .tflite or .onnx can travel without its JSON sidecar.

    .tflite  standard TFLite model metadata (what MediaPipe's writers produce): input normalization and
             the output's labels file, stored in the flatbuffer; the associated files (labels.txt and
             edgetune's contract edgetune.json) are a zip appended to the flatbuffer.
    .onnx    `metadata_props`: `edgetune.contract` (the contract JSON) and `labels` (a JSON list), read
             with onnxruntime's `get_modelmeta().custom_metadata_map`.

Lean on purpose (standard library + what the backend already loaded): the flatbuffer is read with a
few struct reads along one path (Model.metadata -> buffer -> ModelMetadata -> subgraph -> tensors), no
generated schema code, no MediaPipe, no TensorFlow. A JSON sidecar, when present, wins; a contradiction
between the two is an error (`check_consistent`).
"""

from __future__ import annotations

import json
import mmap
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune import UserError
from edgetune.contract import ContractError, ModelMetadata

CONTRACT_FILE = "edgetune.json"
LABELS_FILE = "labels.txt"
ONNX_CONTRACT_KEY = "edgetune.contract"
ONNX_LABELS_KEY = "labels"
ONNX_INPUT_KEY = "edgetune.input"
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union member


@dataclass
class Embedded:
    """What a model file says about itself (any part may be missing)."""

    where: str
    """Human-readable origin for messages, e.g. 'edgetune.json inside model.tflite'."""
    contract: dict[str, Any] | None = None
    """edgetune's contract (the sidecar JSON's content at export time)."""
    labels: list[str] | None = None
    """Labels of the output, from the standard metadata's labels file or ONNX `labels`."""
    normalization: tuple[list[float], list[float]] | None = None
    """TFLite metadata's input (mean, std): the model is fed (pixel - mean) / std."""

    def metadata(self) -> ModelMetadata:
        """The embedded contract as a validated ModelMetadata.

        Raises:
            ContractError: No contract is embedded, or it is invalid.
        """
        if self.contract is None:
            raise ContractError(f"{self.where}: no edgetune contract embedded")
        return ModelMetadata.from_dict(self.contract, origin=self.where)

    def input_range(self) -> tuple[float, float] | None:
        """The 0..255 pixel range as the model sees it under the metadata's normalization (one value per channel)."""
        if self.normalization is None:
            return None
        mean, std = self.normalization
        if len(set(mean)) != 1 or len(set(std)) != 1 or std[0] == 0:
            return None  # per-channel normalization: the runtime maps one range for all channels
        return (0.0 - mean[0]) / std[0], (255.0 - mean[0]) / std[0]


def read_embedded(path: str | Path, backend: Any = None) -> Embedded | None:
    """The metadata embedded in a .tflite or .onnx file, or None when it carries none.

    Args:
        path: The model file.
        backend: The loaded backend (for .onnx its onnxruntime session is asked for the metadata props).

    Raises:
        ContractError: Embedded metadata that exists but cannot be read.
    """
    p = Path(path)
    if p.suffix.lower() == ".tflite":
        return _read_tflite(p)
    if p.suffix.lower() == ".onnx":
        session = getattr(backend, "session", None)
        return _read_onnx(p, session) if session is not None else None
    return None


def check_consistent(meta: ModelMetadata, embedded: Embedded | None, json_name: str) -> None:
    """Refuse a sidecar JSON that contradicts what the model file itself says.

    Compared: labels, output kind, preprocessing (contract), labels and input normalization (standard
    TFLite metadata). Provenance, parity and timings may differ (the sidecar is written after the check).

    Raises:
        UserError: The sidecar and the embedded metadata disagree.
    """
    if embedded is None:
        return
    problems = []
    if embedded.contract is not None:
        inner = embedded.metadata()
        if inner.labels != meta.labels:
            problems.append(f"labels {meta.labels} vs {inner.labels}")
        if inner.output_kind != meta.output_kind:
            problems.append(f"output_kind {meta.output_kind} vs {inner.output_kind}")
        if inner.preprocessing.to_dict() != meta.preprocessing.to_dict():
            problems.append(f"preprocessing {meta.preprocessing.to_dict()} vs {inner.preprocessing.to_dict()}")
    if embedded.labels is not None and embedded.labels != meta.labels and not any(p.startswith("labels") for p in problems):
        problems.append(f"labels {meta.labels} vs {embedded.labels}")
    rng = embedded.input_range()
    if rng is not None and any(abs(a - b) > 1e-3 * max(1.0, abs(b)) for a, b in zip(rng, meta.preprocessing.input_range)):
        problems.append(f"input range {list(meta.preprocessing.input_range)} vs {[round(v, 4) for v in rng]} "
                        "(from the metadata's normalization)")
    if problems:
        raise UserError(f"{json_name} contradicts the metadata inside the model ({embedded.where}): "
                        f"{'; '.join(problems)}. Is the JSON from another export? Delete it to use the embedded "
                        "metadata, or put the right one beside the model")


# ---------------------------------------------------------------- .onnx
def _read_onnx(path: Path, session: Any) -> Embedded | None:
    props = dict(session.get_modelmeta().custom_metadata_map or {})
    if ONNX_CONTRACT_KEY not in props and ONNX_LABELS_KEY not in props:
        return None
    found = Embedded(where=f"metadata_props of {path.name}")
    try:
        if ONNX_CONTRACT_KEY in props:
            found.contract = json.loads(props[ONNX_CONTRACT_KEY])
        if ONNX_LABELS_KEY in props:
            labels = json.loads(props[ONNX_LABELS_KEY])
            if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
                raise ValueError("labels must be a JSON list of strings")
            found.labels = labels
    except (ValueError, RecursionError) as exc:
        raise ContractError(f"{found.where}: not readable JSON ({exc})") from exc
    return found


# ---------------------------------------------------------------- .tflite
def _read_tflite(path: Path) -> Embedded | None:
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            found = _standard_metadata(buf, path.name)
    except ContractError:
        raise
    except (OSError, ValueError):  # unreadable or empty: the interpreter has already said what is wrong with it
        return None
    files = _associated_files(path)
    if found is None and not files:
        return None
    found = found or _Found(where=path.name)
    if CONTRACT_FILE in files:
        found.where = f"{CONTRACT_FILE} inside {path.name}"
        try:
            found.contract = json.loads(files[CONTRACT_FILE].decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ContractError(f"{found.where}: not readable JSON ({exc})") from exc
    label_file = found.labels_file or (LABELS_FILE if LABELS_FILE in files else None)
    if label_file in files:
        lines = files[label_file].decode("utf-8", errors="replace").splitlines()
        found.labels = [line.strip() for line in lines if line.strip()]
    return found


@dataclass
class _Found(Embedded):
    labels_file: str | None = None
    """The output's labels file named by the standard metadata."""


def _associated_files(path: Path) -> dict[str, bytes]:
    """The zip of associated files appended to the flatbuffer, {name: content} ({} when there is none)."""
    if not zipfile.is_zipfile(path):
        return {}
    try:
        with zipfile.ZipFile(path) as zf:
            return {name: zf.read(name) for name in zf.namelist() if name in (CONTRACT_FILE,) or name.endswith(".txt")}
    except (zipfile.BadZipFile, OSError, KeyError):
        return {}


class _Table:
    """One flatbuffer table: fields by index (vtable slot), read with struct from the whole buffer."""

    def __init__(self, buf, pos: int):
        self.buf, self.pos = buf, pos
        vtable = pos - _i32(buf, pos)
        self.vsize = _u16(buf, vtable)
        self.vtable = vtable

    def _field(self, i: int) -> int | None:
        slot = 4 + 2 * i
        if slot >= self.vsize:
            return None
        off = _u16(self.buf, self.vtable + slot)
        return self.pos + off if off else None

    def scalar(self, i: int, fmt: str, default=0):
        at = self._field(i)
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def _target(self, i: int) -> int | None:
        at = self._field(i)
        return None if at is None else at + _u32(self.buf, at)

    def table(self, i: int) -> _Table | None:
        at = self._target(i)
        return None if at is None else _Table(self.buf, at)

    def string(self, i: int) -> str | None:
        at = self._target(i)
        return None if at is None else bytes(self.buf[at + 4:at + 4 + _u32(self.buf, at)]).decode("utf-8", "replace")

    def tables(self, i: int) -> list[_Table]:
        at = self._target(i)
        if at is None:
            return []
        n = _u32(self.buf, at)
        return [_Table(self.buf, e + _u32(self.buf, e)) for e in (at + 4 + 4 * k for k in range(n))]

    def vector(self, i: int) -> tuple[int, int] | None:
        """(start, count) of a vector of scalars; None when absent."""
        at = self._target(i)
        return None if at is None else (at + 4, _u32(self.buf, at))

    def floats(self, i: int) -> list[float]:
        v = self.vector(i)
        return [] if v is None else list(struct.unpack_from(f"<{v[1]}f", self.buf, v[0]))


def _u16(buf, at: int) -> int:
    return struct.unpack_from("<H", buf, at)[0]


def _u32(buf, at: int) -> int:
    return struct.unpack_from("<I", buf, at)[0]


def _i32(buf, at: int) -> int:
    return struct.unpack_from("<i", buf, at)[0]


def _standard_metadata(buf, name: str) -> _Found | None:
    """TFLite metadata ("TFLITE_METADATA" in Model.metadata): input normalization, the output's labels file name."""
    if len(buf) < 8 or bytes(buf[4:8]) != b"TFL3":
        return None
    try:
        model = _Table(buf, _u32(buf, 0))
        entries = {m.string(0): m.scalar(1, "I") for m in model.tables(6)}  # Model.metadata: name -> buffer index
        if "TFLITE_METADATA" not in entries:
            return None
        buffers = model.tables(4)
        meta_buf = _buffer_bytes(buffers[entries["TFLITE_METADATA"]], buf)
        if meta_buf is None or bytes(meta_buf[4:8]) != b"M001":
            raise ValueError("the TFLITE_METADATA buffer is not a ModelMetadata flatbuffer")
        return _model_metadata(meta_buf, name)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ContractError(f"{name}: its TFLite metadata is malformed ({exc})") from exc


def _buffer_bytes(buffer: _Table, buf) -> bytes | None:
    data = buffer.vector(0)
    if data is not None:
        return bytes(buf[data[0]:data[0] + data[1]])
    offset, size = buffer.scalar(1, "Q"), buffer.scalar(2, "Q")  # models over 2 GB keep buffers after the flatbuffer
    return bytes(buf[offset:offset + size]) if offset > 1 else None


def _model_metadata(md_buf: bytes, name: str) -> _Found:
    md = _Table(md_buf, _u32(md_buf, 0))
    found = _Found(where=f"TFLite metadata of {name}")
    subgraphs = md.tables(3)
    if not subgraphs:
        return found
    sub = subgraphs[0]
    inputs, outputs = sub.tables(2), sub.tables(3)
    if inputs:
        for unit in inputs[0].tables(4):  # TensorMetadata.process_units
            if unit.scalar(0, "B") == _NORMALIZATION_OPTIONS:
                options = unit.table(1)
                found.normalization = (options.floats(0), options.floats(1))
    if outputs:
        for f in outputs[0].tables(6):  # TensorMetadata.associated_files
            if f.scalar(2, "b") == _TENSOR_AXIS_LABELS and f.string(3) in (None, "", "en"):
                found.labels_file = f.string(0)
                break
    return found
