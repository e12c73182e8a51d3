"""edgetune.outputs: what edgetune refuses to overwrite, and atomic replacement of its own outputs."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from edgetune import UserError
from edgetune.outputs import (MARKER, check_output, check_output_file, is_complete, mark_output, output_kind,
                              staged_output)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_new_and_empty_folders_are_accepted(tmp_path):
    assert check_output(tmp_path / "new", "run") == (tmp_path / "new").resolve()
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty", "run") == (tmp_path / "empty").resolve()


@pytest.mark.parametrize("where", ["root", "home", "cwd", "parent_of_cwd"])
def test_protected_folders_are_refused_even_with_force(where, tmp_path, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    target = {"root": Path("/"), "home": Path.home(), "cwd": Path("."), "parent_of_cwd": tmp_path / "a"}[where]
    with pytest.raises(UserError, match="refusing to write"):
        check_output(target, "split", force=True)


def test_user_folder_and_files_are_refused(tmp_path):
    user = tmp_path / "photos"
    user.mkdir()
    (user / "a.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="did not create"):
        check_output(user, "run", force=True)
    with pytest.raises(UserError, match="existing file"):
        check_output(user / "a.jpg", "run", force=True)


@pytest.mark.parametrize("relation", ["same", "inside", "contains"])
def test_output_related_to_an_input_is_refused(relation, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    out = {"same": data, "inside": data / "run", "contains": tmp_path}[relation]
    with pytest.raises(UserError, match="input"):
        check_output(out, "run", inputs=[data], force=True)


def test_a_folder_another_process_is_marking_right_now_is_not_a_user_folder(tmp_path):
    """A multi-worker run's workers mark RUN.partial concurrently: a folder holding only the marker's
    write-then-rename temporary (caught between the write and the rename) is ours, not the user's."""
    partial = tmp_path / "run.partial"
    partial.mkdir()
    (partial / f".{MARKER}.1a2b3c4d.tmp").write_text("{}")
    assert check_output(partial, "run", force=True) == partial.resolve()
    (partial / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="did not create"):
        check_output(partial, "run", force=True)


def test_force_replaces_only_same_kind(tmp_path):
    run = tmp_path / "run"
    mark_output(run, "run")
    (run / "model.keras").write_bytes(b"m")
    with pytest.raises(UserError, match="--force"):
        check_output(run, "run")
    assert check_output(run, "run", force=True) == run.resolve()
    with pytest.raises(UserError, match="not a split"):
        check_output(run, "split", force=True)


def test_staged_output_swaps_atomically_and_cleans_up_on_failure(tmp_path):
    out = tmp_path / "split"
    with staged_output(out, "split") as tmp:
        (tmp / "a.txt").write_text("one")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "one" and is_complete(out, "split")
    before = _tree(out)
    with pytest.raises(RuntimeError):
        with staged_output(out, "split", force=True) as tmp:
            (tmp / "a.txt").write_text("two")
            raise RuntimeError("boom")
    assert _tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["split"]  # no temporary left behind
    with staged_output(out, "split", force=True) as tmp:
        (tmp / "b.txt").write_text("three")
    assert sorted(_tree(out)) == [MARKER, "b.txt"]


def test_killed_partial_never_looks_complete_and_is_removed_next_time(tmp_path):
    out = tmp_path / "bundle"
    stale = tmp_path / ".bundle.abc.partial"
    mark_output(stale, "bundle", complete=False)
    assert output_kind(stale) == "bundle" and not is_complete(stale)
    with staged_output(out, "bundle"):
        pass
    assert not stale.exists() and is_complete(out, "bundle")


@pytest.mark.parametrize("errno_", [errno.EROFS, errno.ENOSPC])
def test_read_only_or_full_file_system_gives_a_user_error(errno_, tmp_path, monkeypatch):
    # Simulated: root ignores permissions and a real read-only mount needs privileges tests should not use.
    def refuse(*a, **k):
        raise OSError(errno_, os.strerror(errno_), str(tmp_path))

    monkeypatch.setattr("tempfile.mkdtemp", refuse)
    with pytest.raises(UserError, match="cannot write"):
        with staged_output(tmp_path / "out", "split"):
            pass
    monkeypatch.undo()
    with pytest.raises(UserError, match=os.strerror(errno_)):
        with staged_output(tmp_path / "out", "split") as tmp:
            (tmp / "a").write_text("x")
            raise OSError(errno_, os.strerror(errno_), str(tmp / "b"))
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_result_files(tmp_path):
    mine = tmp_path / "r.json"
    mine.write_text('{"kind": "edgetune-bench"}')
    assert check_output_file(mine, "edgetune-bench") == mine.resolve()
    with pytest.raises(UserError, match="--force"):
        check_output_file(mine, "edgetune-bench", force=False)
    other = tmp_path / "notes.json"
    other.write_text('{"mine": true}')
    with pytest.raises(UserError, match="not an edgetune"):
        check_output_file(other, "edgetune-bench")
    with pytest.raises(UserError, match="is a folder"):
        check_output_file(tmp_path, "edgetune-bench")
