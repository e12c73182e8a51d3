"""The edgetune wheel of a bundle: built from the installed source with pip, checked, and its pinned requirements.

edgetune is pure Python, so one `py3-none-any` wheel serves the workstation (x86-64) and the Pi
(aarch64); only its dependencies (numpy, Pillow, LiteRT) have per-platform wheels, which pip on the
Pi picks itself. Standard library only.
"""

from __future__ import annotations

import email.parser
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from edgetune import UserError

WORKSTATION_EXTRAS = ("train", "dev")
"""Extras that belong on the training machine (TensorFlow, the converters): never written for the Pi."""
SOURCE_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in")
BUILD_TIMEOUT_S = 600
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==\s*['"]([^'"]+)['"]""")


def source_tree() -> Path | None:
    """The source checkout the running edgetune is imported from (an editable install), or None.

    None means edgetune was installed from a wheel into site-packages: there is no source to build from.
    """
    import edgetune

    root = Path(edgetune.__file__).resolve().parent.parent
    project = root / "pyproject.toml"
    try:
        text = project.read_text(encoding="utf-8")
    except OSError:
        return None
    return root if re.search(r'(?m)^name\s*=\s*"edgetune"', text) else None


def _copy_source(root: Path, dest: Path) -> None:
    """Copy what the build needs (project files and the package folders), never runs/, .venv/, tests or caches.

    Building from a clean copy also keeps pip's `build/` and `*.egg-info` out of the user's checkout, and
    stale files of an earlier `build/lib` out of the wheel.
    """
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    for item in sorted(root.iterdir()):
        if item.is_file() and (item.name in SOURCE_FILES or item.name.upper().startswith(("README", "LICENSE", "NOTICE"))):
            shutil.copy2(item, dest / item.name)
        elif (item.is_dir() and not item.name.startswith(".") and item.name not in ("tests", "build", "dist")
              and (item / "__init__.py").is_file()):
            shutil.copytree(item, dest / item.name, ignore=skip)


def build_wheel(dest: Path, source: Path | None = None) -> Path:
    """Build the edgetune wheel from the installed source with `pip wheel` into `dest`.

    Offline when this environment has setuptools and wheel (`--no-build-isolation --no-index`); otherwise
    pip's isolated build fetches setuptools from the package index.

    Args:
        dest: Folder for the .whl file.
        source: The source tree; default `source_tree()`.

    Returns:
        The wheel's path.

    Raises:
        UserError: No source tree (edgetune installed from a wheel), no pip, or a failed build.
    """
    source = source or source_tree()
    if source is None:
        raise UserError("this edgetune is installed from a wheel, not from a source checkout, so there is no source "
                        "to build the bundle's wheel from: pass --wheel PATH (the edgetune-*.whl you installed)")
    if importlib.util.find_spec("pip") is None:
        raise UserError(f"pip is not installed in {sys.prefix}: `{sys.executable} -m ensurepip`, or pass --wheel PATH")
    offline = all(importlib.util.find_spec(m) is not None for m in ("setuptools", "wheel"))
    with tempfile.TemporaryDirectory(prefix="edgetune-wheel-") as tmp:
        src = Path(tmp) / "edgetune-src"
        src.mkdir()
        _copy_source(source, src)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest)]
        cmd += ["--no-build-isolation", "--no-index"] if offline else []
        # An absolute path: a bare folder name would be looked up on the package index as a project name.
        cmd.append(str(src.resolve()))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise UserError(f"building the edgetune wheel took over {BUILD_TIMEOUT_S} s; pass --wheel PATH") from None
    wheels = sorted(dest.glob("edgetune-*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        hint = "" if offline else " (without setuptools and wheel installed here pip needs the package index: pip install setuptools wheel)"
        raise UserError(f"`pip wheel {source}` failed{hint}: {tail[:600]}")
    return wheels[0]


def check_wheel(path: Path) -> list[str]:
    """The file names inside an edgetune wheel, after checking it is pure Python and holds edgetune only.

    Raises:
        UserError: Not a readable wheel, not `py3-none-any`, no runtime, or files outside the package.
    """
    path = Path(path)
    if not re.fullmatch(r"edgetune-[^-]+-py3-none-any\.whl", path.name):
        raise UserError(f"{path.name} is not a pure-Python edgetune wheel (expected edgetune-VERSION-py3-none-any.whl)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            wheel_meta = next((zf.read(n).decode() for n in names if n.endswith(".dist-info/WHEEL")), "")
    except (OSError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path} is not a readable wheel ({exc})") from None
    version = path.name.split("-")[1]
    outside = [n for n in names if not (n.startswith("edgetune/") or n.startswith(f"edgetune-{version}.dist-info/"))]
    junk = [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".so")) or "/tests/" in n]
    if outside or junk:
        raise UserError(f"{path.name} holds files that are not edgetune's: {(outside + junk)[:5]}")
    for needed in ("edgetune/__init__.py", "edgetune/bundle.py", "edgetune/runtime/__init__.py"):
        if needed not in names:
            raise UserError(f"{path.name} lacks {needed}: build it from a complete edgetune source")
    if "Root-Is-Purelib: true" not in wheel_meta:
        raise UserError(f"{path.name} is not marked pure Python (Root-Is-Purelib)")
    return names


def wheel_requirements(path: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(path) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(zf.read(meta).decode("utf-8"))
    return msg.get_all("Requires-Dist") or []


def _pin(requirement: str, versions: dict[str, str]) -> str:
    """`numpy>=1.23` -> `numpy==2.4.6` (the version installed here); an exact pin or an absent package stays."""
    spec, _, marker = requirement.partition(";")
    name = _NAME.match(spec).group(1)
    marker = _EXTRA.sub("", marker).strip()
    marker = re.sub(r"^\s*and\s+|\s+and\s*$", "", marker).strip()
    installed = versions.get(name)
    if "==" in spec or installed is None:
        line = spec.strip() + ("" if installed else "  # not installed on the machine that built the bundle")
    else:
        line = f"{name}=={installed}"
    return f"{line}; {marker}" if marker else line


def pinned_requirements(path: Path) -> dict[str, list[str]]:
    """{"": base requirements, extra: its requirements} of a wheel, pinned to the versions installed here.

    The base is what `edgetune predict`/`bench` need on a Pi; extras for the workstation (train, dev)
    are left out. Pinned to this machine's versions: the ones the model was converted and benchmarked with.
    """
    from edgetune.versions import package_version

    reqs: dict[str, list[str]] = {"": []}
    lines = wheel_requirements(path)
    names = {_NAME.match(r).group(1) for r in lines}
    versions = {n: v for n in names if (v := package_version(n)) is not None}
    for r in lines:
        m = _EXTRA.search(r.partition(";")[2])
        extra = m.group(1) if m else ""
        if extra in WORKSTATION_EXTRAS:
            continue
        reqs.setdefault(extra, []).append(_pin(r, versions))
    return reqs
