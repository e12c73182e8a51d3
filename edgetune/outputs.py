"""Where edgetune writes, and what it refuses to touch: it never deletes or overwrites what it did not create.

Every folder edgetune makes (a run dir, a split tree, an export folder, a compare folder, a bundle) carries a
small marker file naming its kind. `--force` replaces only an edgetune output of the same kind; everything
else is refused with one line (exit 2), whatever the flags:

* `/`, the home folder, the current folder, or any folder that contains one of them;
* an output that is, contains or lies inside an input (the data folder, the run being converted, ...);
* an existing file where a folder is to be written;
* a non-empty folder without the marker (the user's files), or an edgetune output of another kind.

Replacing is atomic: the new tree is completed under a temporary sibling name, then swapped in, and the
old one is removed last (`staged_output`, `swap_into_place`). A temporary tree killed half-way keeps a
"partial" marker, so it never looks complete, and the next run of the same command removes it.

Standard library only: a Raspberry Pi imports this with the lean runtime.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

MARKER = ".edgetune-output.json"
KINDS = ("run", "split", "export", "results", "compare", "bundle", "quick-data", "stream-stats")


def _user_error(message: str) -> Exception:
    from edgetune import UserError  # imported late: edgetune/__init__ is lean but imports contract first

    return UserError(message)


def mark_output(folder: str | os.PathLike, kind: str, *, complete: bool = True) -> Path:
    """Write (or rewrite) the marker that makes `folder` an edgetune output of `kind`."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}; known: {KINDS}")
    from edgetune import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    data = {"kind": kind, "state": "complete" if complete else "partial", "edgetune": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    tmp = marker.with_name(f".{MARKER}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, marker)
    return marker


def is_marker_file(name: str) -> bool:
    """Whether `name` is the marker or one of its write-then-rename temporaries (another process may be
    marking the same folder right now: a multi-worker run's workers all mark `RUN.partial`)."""
    return name == MARKER or (name.startswith(f".{MARKER}.") and name.endswith(".tmp"))


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of an edgetune output folder, or None (not a folder, no marker, unreadable marker)."""
    marker = Path(folder) / MARKER
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("kind") in KINDS else None


def output_kind(folder: str | os.PathLike) -> str | None:
    """The kind of edgetune output `folder` is ("run", "split", ...), or None when edgetune did not make it."""
    data = read_marker(folder)
    return data["kind"] if data else None


def is_complete(folder: str | os.PathLike, kind: str | None = None) -> bool:
    """Whether `folder` is a finished edgetune output (of `kind`, when given)."""
    data = read_marker(folder)
    return bool(data) and data.get("state") == "complete" and (kind is None or data["kind"] == kind)


def _protected(path: Path) -> str | None:
    """Why `path` may never be an output folder, or None."""
    if path == Path(path.anchor):
        return "the root folder"
    for name, special in (("your home folder", Path.home()), ("the current folder", Path.cwd())):
        try:
            special = special.resolve()
        except OSError:
            continue
        if path == special:
            return name
        if path in special.parents:
            return f"a folder that contains {name}"
    return None


def check_inputs(out: Path, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse an output that is, contains or lies inside one of `inputs` (all paths resolved)."""
    for inp in inputs:
        if inp is None:
            continue
        src = Path(inp).expanduser().resolve()
        if out == src:
            raise _user_error(f"the output {out} is the input {src} itself; choose another output folder")
        if src in out.parents:
            raise _user_error(f"the output {out} lies inside the input {src}; choose an output folder outside it")
        if out in src.parents:
            raise _user_error(f"the output {out} contains the input {src}; choose an output folder that does not")


def check_output(out: str | os.PathLike, kind: str, *, inputs: Iterable[str | os.PathLike | None] = (),
                 force: bool = False) -> Path:
    """Check that `out` may be (re)written as an edgetune output folder of `kind`; return it resolved.

    Args:
        out: The output folder.
        kind: One of KINDS.
        inputs: Folders or files the command reads (the output may not be, contain or lie inside one).
        force: Allow replacing an existing edgetune output of the same kind.

    Raises:
        UserError: The folder is refused; the message says why and what to do.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}; known: {KINDS}")
    path = Path(out).expanduser().resolve()
    why = _protected(path)
    if why:
        raise _user_error(f"refusing to write into {path}: it is {why}; choose a new folder for the output")
    check_inputs(path, inputs)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise _user_error(f"{out} is an existing file, not a folder; choose a folder name that does not exist yet")
    if path.is_dir():
        existing = output_kind(path)
        if existing is None:
            if any(not is_marker_file(p.name) for p in path.iterdir()):
                raise _user_error(f"{out} is a non-empty folder that edgetune did not create; edgetune never deletes "
                                  "what it did not create: choose a new or empty folder")
        elif existing != kind:
            raise _user_error(f"{out} holds an edgetune {existing} output, not a {kind}; choose another folder")
        elif not force:
            raise _user_error(f"{out} already holds an edgetune {kind}; pass --force to replace it or choose another folder")
    return path


def check_output_file(out: str | os.PathLike, document_kind: str, *, inputs: Iterable[str | os.PathLike | None] = (),
                      force: bool = True) -> Path:
    """Check that the JSON file `out` may be written: absent, or an edgetune document of `document_kind`.

    A results or stats file is recognised by its top-level `"kind"` field (e.g. "edgetune-bench").

    Raises:
        UserError: `out` is a folder, a file edgetune did not write, or (without `force`) an existing document.
    """
    path = Path(out).expanduser().resolve()
    check_inputs(path, inputs)
    if path.is_dir():
        raise _user_error(f"{out} is a folder; give a file name for the output (e.g. {Path(out) / 'results.json'})")
    if path.exists():
        try:
            kind = json.loads(path.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind != document_kind:
            raise _user_error(f"{out} exists and is not an edgetune {document_kind} file; edgetune never overwrites "
                              "what it did not create: choose another file name")
        if not force:
            raise _user_error(f"{out} exists; pass --force to replace it")
    return path


def swap_into_place(tmp: str | os.PathLike, out: str | os.PathLike, kind: str) -> Path:
    """Move the complete folder `tmp` to `out`, replacing an edgetune output of the same kind atomically.

    The old output is renamed aside first, the new one renamed in, and the old one removed last, so at
    every moment `out` is either the old complete output or the new one.
    """
    tmp, out = Path(tmp), Path(out)
    mark_output(tmp, kind)
    if out.is_dir() and any(out.iterdir()):
        if output_kind(out) != kind:  # checked before the work started; checked again before anything moves
            raise _user_error(f"{out} changed while edgetune worked and is no longer an edgetune {kind}; "
                              f"the new output is kept in {tmp}")
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)  # absent, or an empty folder: rename replaces it atomically
    return out


def remove_stale_partials(out: Path, kind: str) -> list[Path]:
    """Remove temporary siblings of `out` left by a killed run of the same command (ours, marked partial)."""
    removed = []
    parent = out.parent
    if not parent.is_dir():
        return removed
    for p in parent.glob(f".{out.name}.*"):
        data = read_marker(p)
        if p.is_dir() and data and data["kind"] == kind and data.get("state") == "partial":
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def staged_output(out: str | os.PathLike, kind: str, *, inputs: Iterable[str | os.PathLike | None] = (),
                  force: bool = False) -> Iterator[Path]:
    """Write an output folder atomically: yields a temporary sibling folder, swapped into `out` on success.

    On an exception the temporary folder is removed and `out` is untouched. Checks `out` first
    (`check_output`); a file system that refuses the write (read-only, full) becomes a UserError.
    """
    final = check_output(out, kind, inputs=inputs, force=force)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(final, kind)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
        mark_output(tmp, kind, complete=False)
    except OSError as exc:
        raise _user_error(f"cannot write into {final.parent}: {exc.strerror or exc}") from exc
    try:
        yield tmp
        swap_into_place(tmp, final, kind)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in (30, 28, 13, 122):  # EROFS, ENOSPC, EACCES, EDQUOT: the environment, not a bug
            raise _user_error(f"cannot write {final}: {exc.strerror} ({exc.filename or final.parent})") from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
