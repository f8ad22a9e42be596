"""package-lock.json (lockfileVersion 1, 2 and 3) read into the list of packages it pins.

v1 nests ``dependencies`` (keyed by the name as installed, aliases as ``npm:real@version``);
v2 and v3 list ``packages`` by install path (``node_modules/a/node_modules/@s/b``), v2 keeping the
v1 section as well. See npm's docs, "package-lock.json".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


class LockfileError(ValueError):
    """Not a package-lock.json this reader understands."""


@dataclass(frozen=True)
class LockedPackage:
    """A registry package pinned by a lock file (the real name, not an alias)."""

    name: str
    version: str
    resolved: str | None = None
    integrity: str | None = None


def read_lockfile(lock: Mapping[str, Any]) -> list[LockedPackage]:
    """Every registry package the lock pins, de-duplicated, in the lock's order.

    Links, workspace members, git/file/remote dependencies and the root project are skipped:
    they are not in any registry.
    """
    if not isinstance(lock, Mapping):
        raise LockfileError("package-lock.json is not a JSON object")
    version = lock.get("lockfileVersion", 1)
    if version not in (1, 2, 3):
        raise LockfileError(f"unsupported lockfileVersion {version!r}")
    entries = (
        _packages(lock["packages"]) if "packages" in lock else _v1(lock.get("dependencies", {}))
    )
    seen: dict[tuple[str, str], LockedPackage] = {}
    for entry in entries:
        seen.setdefault((entry.name, entry.version), entry)
    return list(seen.values())


def _from_registry(resolved: Any) -> bool:
    return resolved is None or (
        isinstance(resolved, str)
        and resolved.startswith(("http://", "https://"))
        and resolved.endswith(".tgz")
    )


def _packages(packages: Mapping[str, Any]) -> Iterator[LockedPackage]:
    for path, entry in packages.items():
        if not isinstance(entry, Mapping) or entry.get("link") or entry.get("inBundle"):
            continue  # links and bundled packages come from elsewhere, not the registry
        if "node_modules/" not in path:
            continue  # the root project or a workspace member's own folder
        version = entry.get("version")
        if not isinstance(version, str) or not _from_registry(entry.get("resolved")):
            continue
        name = entry.get("name") or path.rsplit("node_modules/", 1)[-1]
        yield LockedPackage(name, version, entry.get("resolved"), entry.get("integrity"))


def _v1(dependencies: Mapping[str, Any]) -> Iterator[LockedPackage]:
    for name, entry in dependencies.items():
        if not isinstance(entry, Mapping) or entry.get("bundled"):
            continue
        version = entry.get("version")
        if isinstance(version, str) and _from_registry(entry.get("resolved")):
            if version.startswith("npm:"):
                real, _, version = version[4:].rpartition("@")
                name = real
            if not version.startswith(("file:", "git", "http")):
                yield LockedPackage(name, version, entry.get("resolved"), entry.get("integrity"))
        yield from _v1(entry.get("dependencies") or {})
