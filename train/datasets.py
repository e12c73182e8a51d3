"""Known data sets: the tutorial's cats_and_dogs_filtered, downloaded once into the edgetune cache.

The real download stays (users have internet); every path also takes a local zip or folder, and the
cache is looked in first, so tests and offline machines seed it from a local copy.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgetune import UserError, edgetune_home


@dataclass(frozen=True)
class KnownDataset:
    name: str
    url: str
    folder: str
    """Folder name inside the zip (and inside the cache)."""
    image_count: int
    content_sha256: str
    """Digest over every image file: sorted lines `relative/path<TAB>sha256(file)`. Checks the content
    itself, so a re-packed zip with the same images passes and a corrupted one does not."""


CATS_VS_DOGS = KnownDataset(
    name="cats-vs-dogs",
    url="https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip",
    folder="cats_and_dogs_filtered",
    image_count=3000,
    content_sha256="2b9b6211fd77314c40146365ed33cc811c254b39fa514aa93200c386c2a34a89",
)
DATASETS = {CATS_VS_DOGS.name: CATS_VS_DOGS}


def content_digest(root: Path, extensions: tuple[str, ...] = (".jpg",)) -> tuple[str, int]:
    """(digest, file count) over the image files under root, as in KnownDataset.content_sha256."""
    from edgetune.runtime.image import warn_not_regular

    h = hashlib.sha256()
    found = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in extensions and not p.is_dir())
    files = [p for p in found if p.is_file()]  # is_file: regular files only (a FIFO would block the read)
    warn_not_regular([p for p in found if not p.is_file()], str(root))
    for p in files:
        h.update(f"{p.relative_to(root).as_posix()}\t{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest(), len(files)


def verify(ds: KnownDataset, root: Path) -> None:
    digest, count = content_digest(root)
    if count != ds.image_count or digest != ds.content_sha256:
        raise UserError(
            f"{root} does not match the {ds.name} data set: {count} images (expected {ds.image_count}), "
            f"content sha256 {digest[:16]}... (expected {ds.content_sha256[:16]}...)"
        )


def fetch(name: str = "cats-vs-dogs", source: str | Path | None = None, cache: Path | None = None, force: bool = False) -> Path:
    """Return the verified, extracted data set folder, downloading it only when the cache lacks it.

    Args:
        name: a key of DATASETS.
        source: a local .zip or an extracted folder to use instead of the download.
        cache: cache root; default $EDGETUNE_HOME/datasets.
        force: re-fetch even when the cache holds a verified copy.
    """
    if name not in DATASETS:
        raise UserError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
    ds = DATASETS[name]
    cache = Path(cache) if cache else edgetune_home() / "datasets"
    target = cache / ds.folder
    if target.is_dir() and not force:
        verify(ds, target)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ds.folder}.", dir=cache))
    try:
        if source is not None and Path(source).is_dir():
            src = Path(source)
            inner = src / ds.folder if (src / ds.folder).is_dir() else src
            shutil.copytree(inner, tmp / ds.folder)
        else:
            zip_path = Path(source) if source is not None else _download(ds.url, tmp / "download.zip")
            if not zip_path.is_file():
                raise UserError(f"{zip_path} does not exist")
            try:
                with zipfile.ZipFile(zip_path) as zf:
                    zf.extractall(tmp)
            except zipfile.BadZipFile as exc:
                raise UserError(f"{zip_path} is not a valid zip file: {exc}") from exc
            if not (tmp / ds.folder).is_dir():
                raise UserError(f"{zip_path} does not contain the folder {ds.folder}/")
        verify(ds, tmp / ds.folder)
        if target.exists():
            shutil.rmtree(target)
        (tmp / ds.folder).rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _download(url: str, dest: Path) -> Path:
    from edgetune._progress import progress_bar

    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            chunks = iter(lambda: resp.read(1 << 20), b"")
            for chunk in progress_bar(chunks, total=total and -(-total // (1 << 20)), desc="download", unit="MB"):
                out.write(chunk)
    except OSError as exc:
        raise UserError(f"could not download {url} ({exc}); pass --from PATH to a local zip or folder") from exc
    return dest
