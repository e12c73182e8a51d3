"""The run dir's life: refuse unsafe outputs, stage everything in `NAME.partial/`, resume, swap in when complete.

edgetune never deletes or overwrites what it did not create (`edgetune.outputs`): `--out` may not be,
contain or lie inside the data folder, nor be a folder of the user's files; `--force` replaces only an
earlier run. The `.partial` folder carries the run marker in its "partial" state, so a stale one is removed
only when edgetune made it, and a killed run never looks complete. Multi-worker: worker i keeps its
restart state in `NAME.partial/workers/i/` (the chief in NAME.partial itself), a stable place that a
restarted worker finds again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgetune import UserError
from edgetune.outputs import check_output, is_marker_file, mark_output, output_kind, swap_into_place
from edgetune.train.config import TrainConfig, resume_differences

CHECKPOINT = "checkpoint"
KIND = "run"


@dataclass
class RunDirs:
    out: Path  # the final run dir
    partial: Path  # NAME.partial: the run while it is incomplete
    work: Path  # this process's folder: the partial dir (chief) or NAME.partial/workers/i (other workers)
    backup: Path  # this worker's multi-worker restart checkpoints
    state: dict | None  # the checkpoint state to resume from, or None for a fresh run


def prepare(cfg: TrainConfig, data: Path, chief: bool, worker_index: int = 0) -> RunDirs:
    """Check `--out`, then start a fresh partial dir or reopen the interrupted one (--resume).

    Every worker keeps the same restart state (checkpoint/, metrics.partial.json, config.json) in its own
    folder, so that all of them take the same steps when restarted; only the chief's folder becomes the run.

    Raises:
        UserError: an unsafe or occupied --out, nothing to resume, or flags that differ from the interrupted run's.
    """
    out = check_output(cfg.out, KIND, inputs=[data], force=cfg.force)
    partial = out.with_name(out.name + ".partial")
    if chief:  # the partial dir must be ours too: never delete a user's folder that happens to carry that name
        check_output(partial, KIND, inputs=[data], force=True)
    worker = partial / "workers" / str(worker_index)
    work = partial if chief else worker
    state = _resume_state(cfg, partial, work) if cfg.resume else None
    if not cfg.resume:  # a stale, failed attempt of ours is never mixed into a new run
        if chief and partial.exists():
            for p in partial.iterdir():  # other workers' folders are theirs to reset (they may be starting now),
                if p.name != "workers" and not is_marker_file(p.name):  # and they may be marking the folder too
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        shutil.rmtree(worker, ignore_errors=True)
    mark_output(partial, KIND, complete=False)
    work.mkdir(parents=True, exist_ok=True)
    return RunDirs(out, partial, work, worker / "backup", state)


def _resume_state(cfg: TrainConfig, partial: Path, work: Path) -> dict:
    state_file = work / CHECKPOINT / "state.json"
    if output_kind(partial) != KIND or not state_file.is_file():
        raise UserError(f"nothing to resume: {state_file} does not exist (start without --resume)")
    config_file = work / "config.json"
    if config_file.is_file():
        diffs = resume_differences(json.loads(config_file.read_text()), cfg)
        if diffs:
            raise UserError(f"--resume needs the interrupted run's flags; these differ: {'; '.join(diffs)}")
    return json.loads(state_file.read_text())


def finish(dirs: RunDirs) -> Path:
    """Drop restart state and move the complete partial dir into place (the old run, if any, removed last)."""
    shutil.rmtree(dirs.partial / CHECKPOINT, ignore_errors=True)
    shutil.rmtree(dirs.partial / "workers", ignore_errors=True)  # every worker is past its last write (a barrier)
    (dirs.partial / "metrics.partial.json").unlink(missing_ok=True)
    return swap_into_place(dirs.partial, dirs.out, KIND)
