"""Semver precedence and the ``latest`` dist-tag.

Range and precedence semantics come from ``node-semver``, a port of the library npm itself uses, so
``^``, ``~``, ``x``, ``||``, hyphen ranges and the prerelease rule behave as they do in npm.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cmp_to_key, lru_cache

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
    return sorted(versions, key=lambda v: _by_precedence(_parsed(v)))


_by_precedence = cmp_to_key(lambda a, b: a.compare(b))


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
