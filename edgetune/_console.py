"""A console a person can read: TensorFlow's native log lines kept off stderr unless `edgetune --verbose`.

TensorFlow and its converters log from C++ straight to file descriptor 2 (`I0000 ...`, `W0000 ...`, a CUDA
`cuInit` error on machines without a GPU, oneDNN and CPU-instruction notices), some of it before any
log level can be set. So the quiet console does two things before TensorFlow is imported: it sets the
log-level environment variables, and it puts a filter between file descriptor 2 and the terminal that
drops lines shaped like native log records and passes everything else through. Python's own stderr
(progress bars, edgetune's messages) keeps writing to the terminal directly.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading

NATIVE_LOG = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+\s+\S+:\d+\]"  # absl / glog records: I0000 00:00:17.123 4242 file.cc:31]
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions:"
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate"
    rb"|fully_quantize: \d, inference_type:"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\]"  # older TF: 2024-01-01 00:00:00.0: I tensorflow/...
    rb")"
)
ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "3"}


class QuietConsole:
    """Filters native log lines from file descriptor 2 until `restore()`."""

    def __init__(self) -> None:
        self.saved_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._old_stderr = None
        self.dropped = 0

    def start(self) -> QuietConsole:
        for k, v in ENV.items():
            os.environ.setdefault(k, v)
        for name in ("tensorflow", "absl", "h5py", "tf2onnx"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # Under a test runner or a redirect that replaced sys.stderr, leave the descriptors alone.
        if sys.stderr is not sys.__stderr__ or sys.__stderr__ is None:
            return self
        try:
            sys.stderr.flush()
            self.saved_fd = os.dup(2)
            read_fd, write_fd = os.pipe()
            os.dup2(write_fd, 2)
            os.close(write_fd)
        except OSError:
            return self
        self._old_stderr = sys.stderr
        sys.stderr = open(self.saved_fd, "w", buffering=1, closefd=False, errors="backslashreplace")  # noqa: SIM115
        self._thread = threading.Thread(target=self._pump, args=(read_fd,), daemon=True, name="edgetune-stderr")
        self._thread.start()
        return self

    def _pump(self, read_fd: int) -> None:
        pending = b""
        with os.fdopen(read_fd, "rb", buffering=0) as src:
            while chunk := src.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._forward(line + b"\n")
                if pending and not NATIVE_LOG.match(pending) and len(pending) > 200:
                    self._forward(pending)  # a long unterminated write (progress): pass it on now
                    pending = b""
        if pending:
            self._forward(pending)

    def _forward(self, data: bytes) -> None:
        if NATIVE_LOG.match(data):
            self.dropped += 1
            return
        try:
            os.write(self.saved_fd, data)
        except OSError:
            pass

    def restore(self) -> None:
        """Put file descriptor 2 and sys.stderr back and let the filter drain."""
        if self.saved_fd is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.saved_fd, 2)  # closes the pipe's write end held on fd 2: the pump sees end of file
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._old_stderr is not None:
            sys.stderr = self._old_stderr
        os.close(self.saved_fd)
        self.saved_fd = None


def edgetune_warnings(command: str, verbose: bool) -> None:
    """edgetune's own warnings as one clean line each; other libraries' warnings only with --verbose.

    Warnings raised by edgetune's code (skipped files, leakage between splits, ...) are messages for
    the user, not for a developer: no source line, no category, no file name.
    """
    import warnings

    roots = tuple(str(p) + os.sep for p in _package_dirs())
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(roots):
            print(f"edgetune {command}: warning: {message}", file=sys.stderr)
        elif verbose:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _package_dirs() -> list:
    import importlib
    from pathlib import Path

    names = ("edgetune", "edgetune.train", "edgetune.convert", "edgetune.runtime", "edgetune.benchmarks")
    return [Path(importlib.import_module(n).__file__).resolve().parent for n in names]
