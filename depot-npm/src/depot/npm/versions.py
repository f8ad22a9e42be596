"""Semver precedence and the ``latest`` dist-tag.

Range and precedence semantics come from ``node-semver``, a port of the library npm itself uses, so
``^``, ``~``, ``x``, ``||``, hyphen ranges and the prerelease rule behave as they do in npm.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import nodesemver


@lru_cache(maxsize=65536)
def _parsed(version: str) -> nodesemver.SemVer:
    """A version parsed once: rendering a packument sorts all its versions, and
    ``nodesemver.compare`` parses both strings at every comparison."""
    return nodesemver.make_semver(version, True)


def is_prerelease(version: str) -> bool:
    return bool(_parsed(version).prerelease)


def sort_versions(versions: Iterable[str]) -> list[str]:
    """Versions in ascending semver precedence (build metadata ignored, as semver says)."""
    return sorted(versions, key=precedence)


@lru_cache(maxsize=65536)
def precedence(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """A sort key ordering versions as ``SemVer.compare`` does, computed once per version: a
    packument is rendered anew after every publish, and comparing parsed versions in Python at
    each of the sort's comparisons was a tenth of the serving loop under mixed load.

    A release sorts above its prereleases; prerelease identifiers compare numerically when
    numeric, below alphanumeric ones, which compare as strings; a shorter list of equal prefix
    sorts first (semver 2.0.0, section 11).
    """
    parsed = _parsed(version)
    identifiers = tuple((0, i) if isinstance(i, int) else (1, str(i)) for i in parsed.prerelease)
    return (parsed.major, parsed.minor, parsed.patch, 0 if identifiers else 1, identifiers)


def choose_latest(versions: Iterable[str]) -> str | None:
    """The version ``latest`` points at: the highest release by semver precedence.

    A prerelease is chosen only when every version is a prerelease; ``None`` for no versions.
    This is precedence, not publication order or string order (``1.10.0`` > ``1.9.0``).
    """
    ordered = sort_versions(versions)
    releases = [v for v in ordered if not is_prerelease(v)]
    if releases:
        return releases[-1]
    return ordered[-1] if ordered else None
