"""Standard TFLite model metadata on a .tflite export, written with MediaPipe's metadata writers.

What MediaPipe Tasks' `ImageClassifier` (Python, Android, iOS, web) and other LiteRT tools read: the
input image's colour space and normalization, the output as per-class scores with the labels as an
associated file (`labels.txt`). edgetune's own contract rides along as a second associated file
(`edgetune.json`, recorded in the model-level metadata), so one .tflite file carries everything
`edgetune predict` needs (`edgetune.runtime.embedded` reads it back with zipfile, without MediaPipe).

MediaPipe is an optional extra (`pip install "edgetune[mediapipe]"`, see pyproject.toml):
without it `embed_contract_only` appends the same `edgetune.json` (and `labels.txt`) as a plain zip,
the layout TFLite associated files use, and the standard metadata is skipped (said in the export's JSON).

mediapipe 1.x wheels ship the writers without `_pywrap_metadata_version`, the C extension that computes
the metadata's minimum parser version (`ModuleNotFoundError: mediapipe.tasks.cc` on import): where it is
missing, `min_parser_version` below (the same rules as MediaPipe's metadata_version.cc) stands in for it.
"""

from __future__ import annotations

import importlib
import io
import json
import sys
import tempfile
import types
import zipfile
from collections.abc import Sequence
from pathlib import Path

CONTRACT_FILE = "edgetune.json"
LABELS_FILE = "labels.txt"
_VERSION_MODULE = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
_DESCRIPTION = "Identify the most prominent object in the image from a known set of categories."
_CONTRACT_DESCRIPTION = "edgetune deployment contract (JSON): labels, preprocessing, output kind, provenance"


def min_parser_version(metadata_buf: bytes) -> str:
    """The lowest metadata parser version that understands every field of a ModelMetadata flatbuffer.

    Members added after schema 1.0.0 raise it: vocabulary files 1.0.1, process units 1.1.0, tensor
    groups 1.2.0, regex tokenizers 1.2.1, audio properties 1.3.0, ScaNN index files 1.4.0, associated
    file versions 1.4.1, custom metadata 1.5.0.
    """
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    md = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(bytes(metadata_buf), 0))
    found = [(1, 0, 0)]

    def files(items):
        for f in items or []:
            found.extend([(1, 0, 1)] if f.type == fb.AssociatedFileType.VOCABULARY else [])
            found.extend([(1, 4, 0)] if f.type == fb.AssociatedFileType.SCANN_INDEX_FILE else [])
            found.extend([(1, 4, 1)] if f.version is not None else [])

    def units(items):
        tokenizers = {fb.ProcessUnitOptions.BertTokenizerOptions: (1, 1, 0),
                      fb.ProcessUnitOptions.SentencePieceTokenizerOptions: (1, 1, 0),
                      fb.ProcessUnitOptions.RegexTokenizerOptions: (1, 2, 1)}
        found.extend(tokenizers[u.optionsType] for u in items or [] if u.optionsType in tokenizers)

    for sub in md.subgraphMetadata or []:
        for tensor in (sub.inputTensorMetadata or []) + (sub.outputTensorMetadata or []):
            files(tensor.associatedFiles)
            units(tensor.processUnits)
            content = tensor.content
            if content is not None and content.contentPropertiesType == fb.ContentProperties.AudioProperties:
                found.append((1, 3, 0))
        files(sub.associatedFiles)
        for field, version in (("inputProcessUnits", (1, 1, 0)), ("outputProcessUnits", (1, 1, 0)),
                               ("inputTensorGroups", (1, 2, 0)), ("outputTensorGroups", (1, 2, 0)),
                               ("customMetadata", (1, 5, 0))):
            if getattr(sub, field) is not None:
                found.append(version)
        units(sub.inputProcessUnits)
        units(sub.outputProcessUnits)
    files(md.associatedFiles)
    return ".".join(str(v) for v in max(found))


def _provide_version_module() -> None:
    """Register `min_parser_version` as MediaPipe's missing C extension (only where the wheel lacks it)."""
    try:
        importlib.import_module(_VERSION_MODULE)
        return
    except ImportError:
        pass
    parts = _VERSION_MODULE.split(".")
    for i in range(3, len(parts)):  # mediapipe.tasks.cc ... .python: empty packages above the module
        name = ".".join(parts[:i])
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = []
            sys.modules[name] = package
    module = types.ModuleType(_VERSION_MODULE)
    module.GetMinimumMetadataParserVersion = min_parser_version
    sys.modules[_VERSION_MODULE] = module
    setattr(sys.modules[".".join(parts[:-1])], parts[-1], module)


def mediapipe_version() -> str | None:
    """The installed mediapipe's version, or None where it is not installed (checked without importing it)."""
    from edgetune.versions import package_version

    return package_version("mediapipe")


def normalization(input_range: Sequence[float]) -> tuple[float, float]:
    """TFLite metadata's (mean, std) for a model fed pixels p in 0..255 as lo + p * (hi - lo) / 255.

    MediaPipe feeds a float input (p - mean) / std: mean = -lo / scale, std = 1 / scale. The 0..255
    input of edgetune's models gives mean 0, std 1 (their normalization is inside the graph).
    """
    lo, hi = (float(v) for v in input_range)
    scale = (hi - lo) / 255.0
    return -lo / scale + 0.0, 1.0 / scale  # + 0.0: no -0.0 in the metadata


def write_metadata(model: bytes, labels: Sequence[str], input_range: Sequence[float], contract: dict) -> bytes:
    """The model with standard image-classifier metadata, labels.txt and edgetune.json populated into it.

    The same metadata MediaPipe's `image_classifier.MetadataWriter` writes (name, descriptions, an RGB image
    input with its normalization, a score output with labels.txt as TENSOR_AXIS_LABELS), composed from the
    writers' own `metadata_info` blocks so that edgetune.json can be recorded as a model-level associated
    file in the same pass (the classifier writer has no call for that, and each populate pass re-packs the
    whole model: seconds for a MobileNetV2).

    Raises:
        ImportError: mediapipe is not installed.
        ValueError: MediaPipe refused the model (e.g. not one image input and one output).
    """
    _provide_version_module()
    import flatbuffers
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb
    from mediapipe.tasks.python.metadata import metadata
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_info as info
    from mediapipe.tasks.python.metadata.metadata_writers import writer_utils

    buf = bytearray(model)
    (in_type,), (out_type,) = writer_utils.get_input_tensor_types(buf), writer_utils.get_output_tensor_types(buf)
    mean, std = normalization(input_range)
    md = info.GeneralMd(name="ImageClassifier", description=_DESCRIPTION).create_metadata()
    md.associatedFiles = [info.AssociatedFileMd(CONTRACT_FILE, _CONTRACT_DESCRIPTION, fb.AssociatedFileType.DESCRIPTIONS)
                          .create_metadata()]
    subgraph = fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [info.InputImageTensorMd(
        name="image", description="Input image to be processed.", norm_mean=[mean], norm_std=[std],
        color_space_type=fb.ColorSpaceType.RGB, tensor_type=in_type).create_metadata()]
    subgraph.outputTensorMetadata = [info.ClassificationTensorMd(
        name="score", description="Score of the labels respectively.", label_files=[info.LabelFileMd(LABELS_FILE)],
        tensor_type=out_type).create_metadata()]
    md.subgraphMetadata = [subgraph]
    builder = flatbuffers.Builder(0)
    builder.Finish(md.Pack(builder), metadata.MetadataPopulator.METADATA_FILE_IDENTIFIER)
    # with_model_file on our own temporary copy: with_model_buffer's copy is removed by a __del__ that can run
    # at interpreter exit and print an "Exception ignored" traceback.
    with tempfile.TemporaryDirectory(prefix="edgetune-metadata-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(buf)
        populator = metadata.MetadataPopulator.with_model_file(str(path))
        populator.load_metadata_buffer(builder.Output())
        populator.load_associated_file_buffers({LABELS_FILE: "\n".join(labels).encode("utf-8"),
                                                CONTRACT_FILE: _contract_bytes(contract)})
        populator.populate()
        return path.read_bytes()


def metadata_json(model_path: str | Path) -> dict:
    """The standard metadata of a .tflite as MediaPipe's `MetadataDisplayer` shows it (needs mediapipe)."""
    _provide_version_module()
    from mediapipe.tasks.python.metadata import metadata

    return json.loads(metadata.MetadataDisplayer.with_model_file(str(model_path)).get_metadata_json())


def embed_contract_only(model: bytes, labels: Sequence[str], contract: dict) -> bytes:
    """The model with labels.txt and edgetune.json appended as a zip (no standard metadata flatbuffer)."""
    buf = io.BytesIO()
    buf.write(model)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(LABELS_FILE, "\n".join(labels))
        zf.writestr(CONTRACT_FILE, _contract_bytes(contract))
    return buf.getvalue()


def _contract_bytes(contract: dict) -> bytes:
    return json.dumps(contract, indent=1, sort_keys=False, default=str).encode("utf-8")
