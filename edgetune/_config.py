"""Map a stage's config dataclass onto argparse flags, so the dataclass is the one source of truth.

A field declares its help text with `opt("help", ...)`; the flag is `--field-name`. The resolved
config is written beside what a stage produced (`config_to_dict`).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import MISSING, field
from pathlib import Path
from typing import Any


def opt(help: str, default: Any = MISSING, *, choices: Any = None, cli: bool = True, **kw: Any) -> Any:
    """A dataclass field carrying its CLI help (and optional choices)."""
    meta = {"help": help, "choices": choices, "cli": cli}
    if "default_factory" in kw:
        return field(default_factory=kw.pop("default_factory"), metadata=meta)
    return field(default=default, metadata=meta)


def _base_type(tp: Any) -> Any:
    """Unwrap Optional[X] / X | None to X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1 else tp


def add_config_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one `--flag` per field of a config dataclass (fields with cli=False or in skip are left out)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else None)
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse %-formats help strings
        if "default" not in help_text:  # some fields explain their default themselves
            help_text = f"{help_text} (default: {default})"
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
            continue
        conv = {int: int, float: float, Path: Path}.get(tp, str)
        parser.add_argument(flag, dest=f.name, type=conv, default=default, choices=f.metadata.get("choices"),
                            help=help_text, metavar=None if f.metadata.get("choices") else f.name.upper())


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build the config dataclass from parsed flags (fields absent from args keep their default)."""
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    kw.update(overrides)
    return cls(**kw)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass."""
    out = {}
    for k, v in dataclasses.asdict(cfg).items():
        out[k] = str(v) if isinstance(v, Path) else v
    return out
