"""Package specs and version picking with npm's semantics (npm-package-arg, npm-pick-manifest).

A spec names a package and what is wanted of it: ``name`` (the ``latest`` tag), ``name@1.2.3``,
``name@^1.2`` (any range node-semver reads, loosely, as npm does), ``name@beta`` (a dist-tag),
``@scope/name@...``, and ``alias@npm:real@range``. Dependency values (``"^1.0.0"``,
``"npm:real@2"``) are read the same way; git, file, link and URL dependencies are not in any
registry and are reported as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import nodesemver
from depot.npm.names import InvalidName, check_name, is_version

Kind = Literal["version", "range", "tag"]


class SpecError(ValueError):
    """A spec that names no registry package; the message says why."""


@dataclass(frozen=True)
class Spec:
    name: str
    kind: Kind
    value: str

    def __str__(self) -> str:
        return f"{self.name}@{self.value}"


def _name(name: str) -> str:
    if check_name(name).errors:
        raise SpecError(f"{name!r} is not a valid npm package name")
    return name


def parse_spec(text: str) -> Spec:
    """Read a command-line spec such as ``@scope/pkg@^1.2`` or ``alias@npm:pkg@2``."""
    text = text.strip()
    at = text.find("@", 1)
    if at < 0:
        return Spec(_name(text), "tag", "latest")
    name, wanted = text[:at], text[at + 1 :]
    _name(name)
    spec = parse_dependency(name, wanted)
    if spec is None:
        raise SpecError(f"{text!r} does not name a registry package (git, file or URL spec)")
    return spec


def parse_dependency(name: str, wanted: Any) -> Spec | None:
    """The registry spec a ``dependencies`` entry means, or None for git/file/URL/link specs."""
    if not isinstance(wanted, str):
        raise SpecError(f"dependency {name!r} has a non-string spec")
    wanted = wanted.strip()
    if wanted.startswith("npm:"):
        return parse_spec(wanted[4:])
    if is_version(wanted):
        return Spec(name, "version", wanted)
    if wanted in ("", "*", "latest"):
        return Spec(name, "range" if wanted != "latest" else "tag", wanted or "*")
    if (
        ":" in wanted
        or wanted.startswith((".", "/", "~/"))
        or ("/" in wanted and not wanted.startswith("@") and " " not in wanted)
    ):
        return None  # git+https:, file:, link:, http(s):, github:, "user/repo" shorthands
    try:
        if nodesemver.valid_range(wanted, True) is not None:
            return Spec(name, "range", wanted)
    except (ValueError, TypeError):
        pass
    if wanted.replace("-", "").replace(".", "").replace("_", "").isalnum():
        return Spec(name, "tag", wanted)
    raise SpecError(f"{name}@{wanted}: not a version, range or dist-tag")


def pick_version(packument: Mapping[str, Any], spec: Spec) -> str | None:
    """The version npm would install for ``spec`` from an (abbreviated) packument, or None.

    As npm-pick-manifest does: a tag is looked up; for a range, ``latest`` wins when it
    satisfies the range; otherwise the highest satisfying version, avoiding deprecated ones when
    any other satisfies. Prereleases match only ranges that ask for them (node-semver's rule).
    """
    versions: Mapping[str, Any] = packument.get("versions") or {}
    tags: Mapping[str, str] = packument.get("dist-tags") or {}
    if spec.kind == "tag":
        version = tags.get(spec.value)
        return version if version in versions else None
    if spec.kind == "version":
        return spec.value if spec.value in versions else None
    latest = tags.get("latest")
    if latest in versions and (spec.value == "*" or _satisfies(latest, spec.value)):
        return latest
    candidates = [v for v in versions if _satisfies(v, spec.value)]
    if not candidates:
        return None
    usable = [v for v in candidates if not (versions[v] or {}).get("deprecated")] or candidates
    best = nodesemver.max_satisfying(usable, spec.value, True)
    return None if best is None else str(best)


def _satisfies(version: str, wanted: str) -> bool:
    try:
        return bool(nodesemver.satisfies(version, wanted, True))
    except (ValueError, TypeError, InvalidName):
        return False


def dependency_specs(manifest: Mapping[str, Any], peers: bool = True) -> list[tuple[Spec, bool]]:
    """``(spec, optional)`` for each registry dependency an installed package pulls in.

    dependencies and optionalDependencies always, peerDependencies (not those marked optional
    in peerDependenciesMeta) unless ``peers`` is false. Bundled dependencies ship inside the
    tarball and are skipped; devDependencies are never installed from a dependency.
    """
    bundled = manifest.get("bundleDependencies") or manifest.get("bundledDependencies") or []
    bundled = set(bundled) if isinstance(bundled, list) else set()
    found: list[tuple[Spec, bool]] = []
    sections: list[tuple[str, bool]] = [("dependencies", False), ("optionalDependencies", True)]
    if peers:
        sections.append(("peerDependencies", False))
    peer_meta = manifest.get("peerDependenciesMeta") or {}
    for section, optional in sections:
        deps = manifest.get(section) or {}
        if not isinstance(deps, dict):
            continue
        for name, wanted in deps.items():
            if name in bundled:
                continue
            if section == "peerDependencies" and (peer_meta.get(name) or {}).get("optional"):
                continue
            try:
                spec = parse_dependency(name, wanted)
            except SpecError:
                continue
            if spec is not None:
                found.append((spec, optional))
    return found
