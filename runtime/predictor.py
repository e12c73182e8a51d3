"""`Predictor`: one small protocol over LiteRT (.tflite) and ONNX Runtime (.onnx) models.

    p = Predictor.from_path("export/tflite_int8.tflite")  # metadata read from export/tflite_int8.json
    probs = p.predict(batch)                             # float32 (N, H, W, 3) in 0..255 -> (N, classes)
    probs = p.predict_files(["cat.jpg"])                 # decode + preprocess per the contract
    for path, probs in p.classify_files(paths, interpreters=2): ...  # a folder, 2 interpreters side by side

Everything about the model's input and output comes from two places, never from constants: the
metadata JSON beside the model (labels, size, input range, output kind) and the interpreter's
own tensor details (dtype, quantization scale and zero point).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgetune import UserError
from edgetune.contract import ModelMetadata, Preprocessing, TensorSpec, metadata_path_for, read_metadata
from edgetune.runtime._backends import TensorDetails, open_backend
from edgetune.runtime._parallel import default_decode_workers, map_ordered, map_ordered_pooled
from edgetune.runtime.image import decode_for_contract, load_for_contract
from edgetune.runtime.postprocess import probabilities

def parse_input_range(spec: str | Sequence[float]) -> tuple[float, float] | str:
    """'0,255' | '-1,1' | '0,1' | 'raw' | 'LO,HI' (or a pair of numbers) -> (lo, hi), or 'raw'."""
    if isinstance(spec, str):
        s = spec.replace(" ", "")
        if s == "raw":
            return "raw"
        parts = s.split(",")
        try:
            lo, hi = (float(v) for v in parts)
        except ValueError:
            raise UserError(f"--input-range {spec!r}: expected raw, 0,255, -1,1, 0,1 or LO,HI") from None
    else:
        lo, hi = (float(v) for v in spec)
    if not hi > lo:
        raise UserError(f"input range {lo},{hi}: the upper bound must exceed the lower one")
    return lo, hi


def read_labels(path: str | os.PathLike) -> list[str]:
    """A labels file: one name per line (blank lines at the end ignored)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"labels file {p} is not readable ({exc})") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    labels = [line.strip() for line in lines]
    if len(labels) < 2 or not all(labels):
        raise UserError(f"labels file {p}: need at least two non-empty lines (one label per line)")
    return labels


class Predictor:
    """A loaded model plus everything needed to feed it images and read probabilities.

    Attributes:
        labels: Class names, index-aligned with the probabilities.
        metadata: The model's contract (read beside the model, or built from explicit flags).
        input_details: The interpreter's input (shape, dtype, scale, zero_point).
        output_details: The interpreter's output, same fields.
    """

    def __init__(self, backend: Any, metadata: ModelMetadata, path: Path | None = None, input_range: Any = None):
        self.backend = backend
        self.metadata = metadata
        self.path = path
        self.labels: list[str] = list(metadata.labels)
        self.input_details: TensorDetails = backend.inputs[0]
        self.output_details: TensorDetails = backend.outputs[0]
        self.size: tuple[int, int] = tuple(metadata.preprocessing.size)
        # What `replica` needs to build the same predictor again (the range before it is resolved below).
        self._input_range_arg = input_range
        self._replicas: list[Predictor] = []
        self._check_shapes()
        self._prepare_input(input_range if input_range is not None else metadata.preprocessing.input_range)
        self._prepare_output()

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_path(
        cls,
        model_path: str | os.PathLike,
        labels: str | os.PathLike | Sequence[str] | None = None,
        size: int | Sequence[int] | None = None,
        preprocessing: Preprocessing | None = None,
        threads: int | None = None,
        device: str = "cpu",
        *,
        input_range: str | Sequence[float] | None = None,
        output_kind: str | None = None,
    ) -> Predictor:
        """Load a .tflite or .onnx model and its contract: the JSON beside it (`model.json` beside `model.tflite`),
        else the one embedded in the file by `edgetune convert` (`edgetune.runtime.embedded`).

        A model without metadata (e.g. a third-party ImageNet .tflite) needs `labels`; its size
        defaults to the model's input shape, its input range to 'raw' for integer inputs (pixel values
        fed as they are) and 0..255 for float inputs, its output kind to 'probabilities' for quantized
        outputs covering [0, 1] and to logits otherwise.

        Args:
            model_path: The .tflite or .onnx file.
            labels: A labels file or a list of names; overrides the metadata's labels.
            size: Input size N or (height, width); must agree with the model and the metadata.
            preprocessing: Overrides the metadata's preprocessing block.
            threads: Interpreter threads (default: all cores available).
            device: 'cpu', or 'gpu' (ONNX Runtime's CUDA execution provider; a clear error without one).
            input_range: 'raw', '0,255', '-1,1', '0,1' or (lo, hi): the value range the model expects.
            output_kind: binary_logit | softmax_logits | probabilities; overrides the metadata.

        Returns:
            A ready Predictor.

        Raises:
            UserError: Unknown suffix, unloadable model, missing metadata without labels, a label
                count or size that does not match the model.
            ContractError: A metadata file that exists but is invalid.
        """
        path = Path(model_path)
        backend = open_backend(path, threads=threads, device=device)
        label_list = None
        if labels is not None:
            label_list = read_labels(labels) if isinstance(labels, (str, os.PathLike)) else list(labels)
        meta, described = _find_metadata(path, backend, label_list, size)
        if preprocessing is not None:
            meta.preprocessing = preprocessing
        if size is not None:
            hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(v) for v in size)
            if described and hw != tuple(meta.preprocessing.size):
                raise UserError(f"--size {hw[0]}x{hw[1]} contradicts {described} (size {list(meta.preprocessing.size)})")
            meta.preprocessing.size = hw
        if output_kind is not None:
            meta.output_kind = output_kind
        rng = parse_input_range(input_range) if input_range is not None else None
        if rng is None and not described and backend.inputs[0].quantized:
            rng = "raw"
        return cls(backend, meta, path=path, input_range=rng)

    def _check_shapes(self) -> None:
        shape = self.input_details.shape
        if len(shape) != 4 or shape[3] not in (3, -1):
            raise UserError(f"{self._name}: expected an NHWC image input (N, H, W, 3), the model has {list(shape)}")
        model_hw = shape[1:3]
        if -1 not in model_hw and tuple(model_hw) != tuple(self.size):
            raise UserError(f"{self._name}: input size {self.size[0]}x{self.size[1]} does not match the model's "
                            f"input {model_hw[0]}x{model_hw[1]}")
        n_out = self.output_details.shape[-1]
        kind = self.metadata.output_kind
        if kind not in ("binary_logit", "softmax_logits", "probabilities"):
            raise UserError(f"output kind {kind!r} is not binary_logit, softmax_logits or probabilities")
        expected = 1 if kind == "binary_logit" else len(self.labels)
        if kind == "binary_logit" and len(self.labels) != 2:
            raise UserError(f"{self._name}: a binary_logit model needs exactly 2 labels, got {len(self.labels)}")
        if n_out != expected:
            raise UserError(f"{self._name}: {len(self.labels)} labels do not match the model's {n_out} outputs "
                            f"(output kind {kind})")

    @property
    def _name(self) -> str:
        return self.path.name if self.path else "model"

    def _prepare_input(self, input_range: Any) -> None:
        """Fold range mapping and quantization into one affine map, computed once per model.

        Integer inputs are quantized like TFLite's Quantize op, q = round(x / scale) + zero_point,
        computed as q = floor(pixel * a + b) with a, b precomputed (the 0.5 of rounding and the
        integer zero point folded into b): one multiply-add, one floor, one clip, one cast. That is
        round half up; TFLite rounds half away from zero, which differs only on exact negative ties,
        where float32 noise decides anyway (a sign-aware path cost 4x the time for nothing).
        """
        d = self.input_details
        h, w = self.size
        self._batch_cap = max(1, self.backend.max_batch)
        self._in_shape = (1, h, w, 3)
        self._in_dtype = d.dtype
        self._integer_input = np.issubdtype(d.dtype, np.integer)
        if isinstance(input_range, str):
            input_range = parse_input_range(input_range)
        scale = d.scale if d.quantized else 1.0
        zero = d.zero_point if d.quantized else 0
        if input_range == "raw":
            if not self._integer_input:
                raise UserError(f"{self._name}: --input-range raw is for integer (uint8/int8) inputs; this one is {d.dtype}")
            qmin = int(np.iinfo(d.dtype).min)
            # raw: pixel p becomes the integer round(p) + qmin; the contract records the real range it means.
            lo = (qmin - zero) * scale
            input_range = (lo, lo + 255 * scale)
            a, b = 1.0, qmin + 0.5
        else:
            lo, hi = (float(v) for v in input_range)
            a, b = (hi - lo) / 255.0, lo
            if self._integer_input:
                a, b = a / scale, b / scale + 0.5 + zero
        lo, hi = (float(v) for v in input_range)
        self.metadata.preprocessing.input_range = (lo, hi)
        if self._integer_input:
            info = np.iinfo(d.dtype)
            self._clip = (float(info.min), float(info.max))
        self._scale_one = abs(a - 1.0) < 1e-12
        self._identity = self._scale_one and abs(b) < 1e-12 and not self._integer_input
        self._a, self._b = np.float32(a), np.float32(b)
        # Preallocated float buffer for the one-image hot path (page faults on a fresh 600 KB array
        # cost more than the arithmetic).
        self._tmp = np.empty(self._in_shape, np.float32)

    def _prepare_output(self) -> None:
        d = self.output_details
        self._out_scale = np.float32(d.scale) if d.quantized else None
        self._out_zero = np.float32(d.zero_point or 0)
        self._kind = self.metadata.output_kind

    # ---------------------------------------------------------------- inference
    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float32 0..255 images -> the model's input tensor (dtype and quantization of its input).

        For float inputs the returned array may be a reused buffer (valid until the next call).
        """
        if self._identity:
            return x if x.dtype == np.float32 and x.flags.c_contiguous else np.ascontiguousarray(x, np.float32)
        tmp = self._tmp if x.shape == self._in_shape else np.empty(x.shape, np.float32)
        if self._scale_one:
            np.add(x, self._b, out=tmp, casting="unsafe")
        else:
            np.multiply(x, self._a, out=tmp, casting="unsafe")
            np.add(tmp, self._b, out=tmp)
        if not self._integer_input:
            return tmp if self._in_dtype == np.float32 else tmp.astype(self._in_dtype)  # float16 ONNX input
        if self._clip[0] < 0:  # signed (int8): negative values truncate toward zero, so floor explicitly;
            np.floor(tmp, out=tmp)  # for unsigned inputs, clipping to >= 0 first makes the cast's truncation a floor
        np.clip(tmp, *self._clip, out=tmp)
        # astype, not copyto(casting="unsafe"): numpy's float->int copyto path is ~15x slower.
        return tmp.astype(self._in_dtype)

    def postprocess(self, raw: np.ndarray) -> np.ndarray:
        """Raw model outputs (N, K) -> probabilities (N, classes): dequantize, then sigmoid or softmax."""
        z = raw.astype(np.float32, copy=False)
        if self._out_scale is not None:
            z = (z - self._out_zero) * self._out_scale
        return probabilities(z, self._kind)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of preprocessed images.

        Args:
            batch: float32 (N, H, W, 3) or (H, W, 3), values 0..255 (the output of `preprocess`).

        Returns:
            float32 (N, num_classes) probabilities, index-aligned with `labels`.
        """
        x = np.asarray(batch)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != self._in_shape[1:]:
            raise ValueError(f"predict expects (N, {self.size[0]}, {self.size[1]}, 3) images, got shape {x.shape}")
        invoke, n, cap = self.backend.invoke, x.shape[0], self._batch_cap
        if n == 1:
            return self.postprocess(invoke(self.quantize(x)))
        if cap == 1:
            raws = [invoke(self.quantize(x[i:i + 1])) for i in range(n)]
        else:
            raws = [invoke(self.quantize(x[i:i + cap])) for i in range(0, n, cap)]
        return self.postprocess(np.concatenate(raws))

    def decode(self, path: str | os.PathLike) -> np.ndarray:
        """One image file -> uint8 RGB (H, W, 3) as the contract decodes it (EXIF orientation, and the JPEG
        draft scale when the model was trained with it), before the resize."""
        return decode_for_contract(path, self.metadata.preprocessing)

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """One image file -> the float32 (H, W, 3) 0..255 model input, exactly as training decoded it."""
        return load_for_contract(path, self.metadata.preprocessing)

    def predict_files(self, paths: Sequence[str | os.PathLike], batch_size: int = 32,
                      decode_workers: int | None = None, interpreters: int = 1) -> np.ndarray:
        """Decode, preprocess (per the contract) and classify image files.

        Args:
            paths: Image files.
            batch_size: Images per `predict` call (one interpreter).
            decode_workers: Threads decoding the next images while the model runs (0: none, in
                this thread); None = `default_decode_workers()`. One interpreter only.
            interpreters: Interpreters classifying images side by side (`classify_files`); > 1
                replaces the decode threads (each interpreter's thread decodes its own image).

        Raises:
            ImageError: A file is missing or not a readable image (use `predict` per file to go on).
        """
        if interpreters > 1:
            rows = [probs for _, probs in self.classify_files(paths, interpreters=interpreters)]
            return np.stack(rows) if rows else np.zeros((0, len(self.labels)), np.float32)
        workers = default_decode_workers() if decode_workers is None else decode_workers
        out, batch = [], []
        for _, x in map_ordered(self.load, paths, workers):
            batch.append(x)
            if len(batch) >= batch_size:
                out.append(self.predict(np.stack(batch)))
                batch.clear()
        if batch:
            out.append(self.predict(np.stack(batch)))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def classify_files(self, paths: Sequence[str | os.PathLike], interpreters: int = 1,
                       decode_workers: int | None = None,
                       catch: type[BaseException] | tuple[type[BaseException], ...] = ()
                       ) -> Iterator[tuple[str | os.PathLike, np.ndarray | BaseException]]:
        """Yield `(path, probabilities)` for image files in input order, computed ahead in threads.

        With `interpreters` = 1 the next images are decoded in `decode_workers` threads while this
        predictor's interpreter runs. With N > 1, N replicas of the model (`replica`, each with this
        predictor's threads / N interpreter threads, at least 1) each decode and classify one image at
        a time, side by side; the probabilities are the same as one interpreter's.

        Args:
            catch: Exception types (e.g. `ImageError`) yielded in place of the probabilities instead
                of ending the iteration.
        """
        if interpreters < 1:
            raise ValueError(f"interpreters must be >= 1, got {interpreters}")
        if interpreters == 1:
            workers = default_decode_workers() if decode_workers is None else decode_workers
            for path, x in map_ordered(self.load, paths, workers, catch=catch):
                yield path, x if isinstance(x, BaseException) else self.predict(x[None])[0]
            return

        def classify(p: Predictor, path: str | os.PathLike) -> np.ndarray:
            return p.predict(p.load(path)[None])[0]

        yield from map_ordered_pooled(classify, paths, self.replicas(interpreters), catch=catch)

    def replicas(self, n: int) -> list[Predictor]:
        """`n` predictors on this model, each with its own interpreter of this one's threads / n threads (at
        least 1); made once and kept, since interpreters are not thread-safe and loading one costs time."""
        if len(self._replicas) != n:
            threads = max(1, int(self.backend.threads) // n)
            self._replicas = [self.replica(threads) for _ in range(n)]
        return self._replicas

    def replica(self, threads: int | None = None) -> Predictor:
        """A predictor on the same file and contract with its own interpreter of `threads` threads.

        Raises:
            ValueError: This predictor was not loaded from a file.
        """
        if self.path is None:
            raise ValueError("only a predictor loaded from a model file can be replicated")
        device = self.backend.info().get("device", "cpu")
        backend = open_backend(self.path, threads=threads, device=device)
        return Predictor(backend, copy.deepcopy(self.metadata), path=self.path, input_range=self._input_range_arg)

    def invoke_raw(self, x: np.ndarray) -> np.ndarray:
        """One raw interpreter call on an already typed (quantized) input of the model's shape.

        Used by latency benchmarks to compare the wrapper (`predict`) with the bare interpreter.
        """
        return self.backend.invoke(x)

    def backend_info(self) -> dict[str, Any]:
        """Backend name, package version, threads and the delegate/execution provider actually used."""
        info = dict(self.backend.info())
        info["model"] = str(self.path) if self.path else None
        return info

    def __repr__(self) -> str:
        d = self.input_details
        return (f"Predictor({self._name}, {self.backend_info()['backend']}, input {list(d.shape)} {d.dtype}, "
                f"{len(self.labels)} labels, {self.metadata.output_kind})")


def _find_metadata(path: Path, backend: Any, labels: list[str] | None, size: Any) -> tuple[ModelMetadata, str | None]:
    """The model's contract and where it came from: sidecar JSON, else embedded, else built from flags (None).

    A sidecar that contradicts the metadata inside the model is refused (`embedded.check_consistent`).
    """
    from edgetune.runtime.embedded import check_consistent, read_embedded

    meta_file = metadata_path_for(path)
    embedded = read_embedded(path, backend)
    if meta_file.is_file():
        meta, described = read_metadata(meta_file), meta_file.name
        check_consistent(meta, embedded, meta_file.name)
    elif embedded is not None and embedded.contract is not None:
        meta, described = embedded.metadata(), embedded.where
    else:
        labels = labels if labels is not None else (embedded.labels if embedded else None)
        if labels is None:
            raise UserError(f"{path} has no metadata file ({meta_file.name} beside it) and none inside it: pass "
                            "--labels FILE (and --size N / --input-range if the defaults do not fit) to run it")
        if size is None and -1 in backend.inputs[0].shape[1:3]:
            raise UserError(f"{path} has a dynamic input size and no metadata: pass --size N")
        meta = _metadata_from_model(backend, labels)
        rng = embedded.input_range() if embedded is not None and not backend.inputs[0].quantized else None
        if rng is not None:  # a third-party model with standard TFLite metadata: its normalization
            meta.preprocessing.input_range = rng
        return meta, None
    actual = str(backend.inputs[0].dtype)
    if meta.input.dtype and meta.input.dtype != actual:
        # A JSON copied beside the wrong export (e.g. tflite_int8.json next to tflite_fp32.tflite) must not pass.
        raise UserError(f"{described} describes a {meta.input.dtype} input but {path.name} takes {actual}: "
                        "is the metadata from another export?")
    if labels is not None:
        meta.labels = labels
    return meta, described


def _metadata_from_model(backend: Any, labels: list[str]) -> ModelMetadata:
    """Contract for a model that came without one: what the interpreter says, plus sensible defaults."""
    d_in, d_out = backend.inputs[0], backend.outputs[0]
    hw = tuple(d_in.shape[1:3]) if len(d_in.shape) == 4 and -1 not in d_in.shape[1:3] else None
    n_out = d_out.shape[-1]
    if d_out.quantized:
        # Quantized [0, 1] outputs (scale ~1/256 over the integer range) are softmax probabilities.
        info = np.iinfo(d_out.dtype)
        lo, hi = (info.min - d_out.zero_point) * d_out.scale, (info.max - d_out.zero_point) * d_out.scale
        kind = "probabilities" if abs(lo) < 1e-6 and 0.99 <= hi <= 1.01 else "softmax_logits"
    else:
        kind = "softmax_logits"
    if n_out == 1 and len(labels) == 2:
        kind = "binary_logit"
    return ModelMetadata(
        labels=labels,
        preprocessing=Preprocessing(size=hw or (224, 224)),
        input=TensorSpec(shape=list(d_in.shape), dtype=str(d_in.dtype), scale=d_in.scale, zero_point=d_in.zero_point),
        output=TensorSpec(shape=list(d_out.shape), dtype=str(d_out.dtype), scale=d_out.scale, zero_point=d_out.zero_point),
        output_kind=kind,
        preset="external",
        source={"note": "no metadata file: built from the model's tensor details and command-line flags"},
    )
