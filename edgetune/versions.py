"""Installed library versions, read from package metadata (nothing is imported): one helper for every stage."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version


def package_version(dist: str) -> str | None:
    """The installed version of distribution `dist` (e.g. "ai-edge-litert"), or None when it is absent."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def package_versions(dists: Iterable[str]) -> dict[str, str]:
    """{distribution: version} for the installed ones among `dists` (absent ones are left out)."""
    return {d: v for d in dists if (v := package_version(d)) is not None}
