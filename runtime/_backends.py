"""The two interpreters behind `Predictor`: LiteRT for .tflite, ONNX Runtime for .onnx.

A backend only feeds typed tensors and returns raw outputs; quantization, preprocessing and the
output kind live in `Predictor`, once, for both. Interpreter packages are imported here, inside the
constructors, so `import edgetune.runtime` costs numpy + Pillow only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetune import UserError
from edgetune.versions import package_version

DEVICES = ("cpu", "gpu")
ONNX_MAX_BATCH = 32
"""Most images per ONNX Runtime call when the model's batch dimension is dynamic (bounds its activation memory)."""


@dataclass(frozen=True)
class TensorDetails:
    """One model input or output as the interpreter reports it (scale/zero_point None when float)."""

    name: str
    index: Any
    shape: tuple[int, ...]
    """Shape with -1 for a dynamic dimension (e.g. the batch of an ONNX export)."""
    dtype: np.dtype
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return np.issubdtype(self.dtype, np.integer) and self.scale is not None and self.scale > 0


def default_threads() -> int:
    """All cores this process may use (a Raspberry Pi 4/5 has 4)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


class LiteRTBackend:
    """A .tflite model in LiteRT (`ai-edge-litert`), or the legacy `tflite-runtime` where only that exists."""

    suffix = ".tflite"

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu", xnnpack: bool = True):
        if device != "cpu":
            raise UserError(
                f"--device {device}: .tflite models run on the CPU in Python (LiteRT's GPU delegate is not part "
                "of the pip wheel); use the .onnx export with onnxruntime-gpu for --device gpu"
            )
        try:
            from ai_edge_litert import interpreter as tfl

            self.package = "ai-edge-litert"
        except ImportError:
            try:
                from tflite_runtime import interpreter as tfl  # legacy fallback (needs numpy<2)

                self.package = "tflite-runtime"
            except ImportError as exc:
                raise UserError("running .tflite models needs ai-edge-litert: pip install ai-edge-litert") from exc
        self.version = package_version(self.package) or "unknown"
        self.threads = threads or default_threads()
        kw: dict[str, Any] = {}
        if not xnnpack:
            kw["experimental_op_resolver_type"] = tfl.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.delegate = "XNNPACK" if xnnpack else "none"
        try:
            self.interpreter = tfl.Interpreter(model_path=str(path), num_threads=self.threads, **kw)
            self.interpreter.allocate_tensors()
        except Exception as exc:  # the interpreter raises ValueError/RuntimeError for foreign or truncated files
            raise UserError(f"{path}: not a loadable TFLite model ({_first_line(exc)})") from exc
        self.inputs = [self._details(d) for d in self.interpreter.get_input_details()]
        self.outputs = [self._details(d) for d in self.interpreter.get_output_details()]
        # Bound methods looked up once: the hot path does no attribute or detail lookups.
        self._set, self._invoke, self._get = self.interpreter.set_tensor, self.interpreter.invoke, self.interpreter.get_tensor
        self._in_index, self._out_index = self.inputs[0].index, self.outputs[0].index

    @staticmethod
    def _details(d: dict[str, Any]) -> TensorDetails:
        scale, zero_point = d.get("quantization", (0.0, 0))
        sig = d.get("shape_signature", d["shape"])
        return TensorDetails(
            name=d["name"], index=d["index"], shape=tuple(int(v) for v in sig), dtype=np.dtype(d["dtype"]),
            scale=float(scale) if scale else None, zero_point=int(zero_point) if scale else None,
        )

    @property
    def max_batch(self) -> int:
        # Resizing a LiteRT input re-plans the whole graph; the per-image loop is what a Pi does anyway.
        return 1

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One interpreter call on an input of the model's exact shape and dtype; the raw output (copied)."""
        self._set(self._in_index, x)
        self._invoke()
        return self._get(self._out_index)

    def info(self) -> dict[str, Any]:
        return {"backend": "litert", "package": self.package, "version": self.version, "threads": self.threads,
                "device": "cpu", "delegate": self.delegate}


class OnnxBackend:
    """An .onnx model in ONNX Runtime: CPU execution provider, or CUDA with `device="gpu"`."""

    suffix = ".onnx"

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu"):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise UserError("running .onnx models needs onnxruntime: pip install 'edgetune[onnx]'") from exc
        self.version = ort.__version__
        self.threads = threads or default_threads()
        available = ort.get_available_providers()
        if device == "gpu":
            if "CUDAExecutionProvider" not in available:
                raise UserError(
                    "--device gpu needs onnxruntime's CUDAExecutionProvider, which this onnxruntime does not have "
                    f"(available: {', '.join(available)}); install onnxruntime-gpu on a machine with an NVIDIA GPU, "
                    "or use --device cpu"
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise UserError(f"--device {device!r} is not one of {DEVICES}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # keep predict's output clean: errors only
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # InvalidProtobuf, Fail, ... are pybind types without a common public base
            raise UserError(f"{path}: not a loadable ONNX model ({_first_line(exc)})") from exc
        self.providers = self.session.get_providers()
        if device == "gpu" and self.providers[0] != "CUDAExecutionProvider":
            # onnxruntime falls back to the CPU silently when the CUDA/cuDNN libraries fail to load.
            raise UserError(f"--device gpu: the CUDA execution provider did not load (session uses {self.providers}); "
                            "check the CUDA and cuDNN libraries onnxruntime-gpu needs")
        self.device = device
        self.inputs = [self._details(t) for t in self.session.get_inputs()]
        self.outputs = [self._details(t) for t in self.session.get_outputs()]
        self._run = self.session.run
        self._out_names = [self.outputs[0].name]
        self._in_name = self.inputs[0].name

    @staticmethod
    def _details(t: Any) -> TensorDetails:
        dtypes = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
                  "tensor(float16)": np.float16}
        if t.type not in dtypes:
            raise UserError(f"ONNX tensor {t.name!r} has type {t.type}; edgetune handles float, float16, uint8 and int8")
        shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in t.shape)
        # ONNX graph inputs carry no quantization parameters (QDQ models keep float I/O).
        return TensorDetails(name=t.name, index=t.name, shape=shape, dtype=np.dtype(dtypes[t.type]))

    @property
    def max_batch(self) -> int:
        # A dynamic batch still gets chunks: ONNX Runtime plans every activation for the whole batch at once,
        # and bench's parity over 1,000 held-out 160 px images in one run took the process from 4.7 to over
        # 20 GB (out of memory beside a test run); 32 images at a time keep it near the model's own size.
        first = self.inputs[0].shape[0]
        return ONNX_MAX_BATCH if first == -1 else first

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One session run; the raw first output."""
        return self._run(self._out_names, {self._in_name: x})[0]

    def info(self) -> dict[str, Any]:
        return {"backend": "onnxruntime", "package": "onnxruntime", "version": self.version, "threads": self.threads,
                "device": self.device, "provider": self.providers[0], "providers": list(self.providers)}


BACKENDS = {".tflite": LiteRTBackend, ".onnx": OnnxBackend}


def open_backend(path: Path, threads: int | None = None, device: str = "cpu") -> LiteRTBackend | OnnxBackend:
    """Pick the backend from the file suffix and load the model into it."""
    if device not in DEVICES:
        raise UserError(f"--device {device!r} is not one of {DEVICES}")
    cls = BACKENDS.get(path.suffix.lower())
    if cls is None:
        raise UserError(f"{path}: unknown model type {path.suffix!r}; edgetune runs {' and '.join(BACKENDS)} files")
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    backend = cls(path, threads=threads, device=device)
    if len(backend.inputs) != 1 or len(backend.outputs) != 1:
        raise UserError(f"{path}: expected one image input and one output, found {len(backend.inputs)} inputs "
                        f"and {len(backend.outputs)} outputs")
    return backend


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
