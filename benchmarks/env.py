"""Environment fingerprint: what a latency number was measured on (lean: standard library only).

Every results JSON carries one, so results from a workstation, a GPU box and a Raspberry Pi can be
merged later without guessing: CPU model and SIMD flags, cores, OS, Python, library versions, device
kind, and on a Pi the temperature and the firmware's throttling state (a hot Pi runs slower, and a
benchmark taken while throttled should say so).
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from edgetune.versions import package_versions

LIBRARIES = ("edgetune", "numpy", "pillow", "simplejpeg", "ai-edge-litert", "tflite-runtime", "onnxruntime",
             "onnxruntime-gpu", "tensorflow", "keras")
"""Distributions whose versions are recorded (read from package metadata: nothing is imported)."""

SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "neon", "asimd",
              "asimddp", "sve", "i8mm")


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return None


def cpu_info() -> dict[str, Any]:
    """CPU model name and the SIMD flags that decide which kernels XNNPACK / ONNX Runtime use."""
    text = _read("/proc/cpuinfo") or ""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value
        elif key in ("flags", "features"):  # x86 "flags", ARM "Features"
            flags.update(value.split())
    if not model:
        model = platform.processor() or platform.machine()
    simd = sorted(f for f in SIMD_FLAGS if f in flags)
    if platform.machine().lower() in ("aarch64", "arm64") and "asimd" in flags:
        simd = sorted(set(simd) | {"neon"})  # AArch64 reports NEON as asimd
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {"model": model, "arch": platform.machine(), "simd": simd, "cores": os.cpu_count() or 1,
            "cores_usable": usable}


def pi_model() -> str | None:
    """'Raspberry Pi 5 Model B Rev 1.0' on a Pi (from the device tree), else None."""
    model = _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    model = model.replace("\x00", "").strip() if model else None
    return model if model and "raspberry pi" in model.lower() else None


def thermal_state() -> dict[str, Any]:
    """Temperatures (deg C) of the thermal zones and, on a Pi, `vcgencmd get_throttled`, when readable."""
    out: dict[str, Any] = {}
    temps = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        raw = _read(zone / "temp")
        if raw and raw.lstrip("-").isdigit():
            temps[_read(zone / "type") or zone.name] = int(raw) / 1000.0
    if temps:
        out["temperature_c"] = temps
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    if freq and freq.isdigit():
        out["cpu0_mhz"] = int(freq) / 1000.0
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if governor:
        out["governor"] = governor
    if shutil.which("vcgencmd"):
        try:
            res = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5)
            value = res.stdout.strip().partition("=")[2]
            if value:
                bits = int(value, 16)
                # Bits 0-3: now (under-voltage, freq capped, throttled, soft temp limit); 16-19: since boot.
                out["throttled"] = {"raw": value, "now": bool(bits & 0xF), "since_boot": bool(bits & 0xF0000)}
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return out


def gpu_info() -> dict[str, Any] | None:
    """Name and driver of the first NVIDIA GPU via nvidia-smi, or None where there is none."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        res = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    line = res.stdout.strip().splitlines()[0] if res.returncode == 0 and res.stdout.strip() else ""
    if not line:
        return None
    name, driver, memory = ([p.strip() for p in line.split(",")] + ["", "", ""])[:3]
    return {"name": name, "driver": driver, "memory": memory}


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that change results (absent ones left out)."""
    return {"python": platform.python_version(), **package_versions(LIBRARIES)}


def device_kind(requested: str = "cpu") -> str:
    """'pi' on a Raspberry Pi, 'gpu' when a GPU run was requested and nvidia-smi sees one, else 'cpu'."""
    if pi_model():
        return "pi"
    if requested == "gpu" and gpu_info():
        return "gpu"
    return "cpu"


def default_device_name(requested: str = "cpu") -> str:
    """A short name for result files and table columns: hostname plus device kind (e.g. 'pi5-pi')."""
    host = socket.gethostname().split(".")[0] or "host"
    return f"{host}-{device_kind(requested)}"


def fingerprint(requested_device: str = "cpu", name: str | None = None) -> dict[str, Any]:
    """The full environment record written into every results JSON."""
    os_name = None
    release = _read("/etc/os-release")
    if release:
        for line in release.splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.partition("=")[2].strip('"')
    mem = None
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem = round(int(line.split()[1]) / 1024 / 1024, 2)
    return {
        "name": name or default_device_name(requested_device),
        "kind": device_kind(requested_device),
        "requested_device": requested_device,
        "hostname": socket.gethostname(),
        "cpu": cpu_info(),
        "memory_gib": mem,
        "os": {"system": platform.system(), "release": platform.release(), "distribution": os_name,
               "platform": platform.platform()},
        "python": platform.python_version(),
        "libraries": library_versions(),
        "pi_model": pi_model(),
        "gpu": gpu_info(),
        "thermal": thermal_state(),
    }
