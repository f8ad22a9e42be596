"""Packuments (package documents) assembled from stored version rows.

The registry keeps one row per version and one per dist-tag; the packument a client reads is built
from them on demand, so two publishes of different versions never overwrite each other. Two forms
(npm registry docs, "Package Metadata"; ``pacote/lib/registry.js``):

- the full packument (``application/json``): ``_id``, ``_rev``, ``time``, readme and every field
  of each version's manifest;
- the abbreviated packument (``application/vnd.npm.install-v1+json``, what ``npm install`` asks
  for): ``name``, ``dist-tags``, ``modified`` and per version only the fields installation needs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from depot.npm.versions import choose_latest, sort_versions

ABBREVIATED_MEDIA_TYPE = "application/vnd.npm.install-v1+json"

#: The per-version fields the abbreviated form keeps (npm/registry "responses/package-metadata").
ABBREVIATED_FIELDS = (
    "name",
    "version",
    "deprecated",
    "dependencies",
    "optionalDependencies",
    "devDependencies",
    "bundleDependencies",
    "bundledDependencies",
    "peerDependencies",
    "peerDependenciesMeta",
    "acceptDependencies",
    "bin",
    "directories",
    "dist",
    "engines",
    "os",
    "cpu",
    "libc",
    "_hasShrinkwrap",
    "hasInstallScript",
    "funding",
    "license",
)
_INSTALL_SCRIPTS = ("preinstall", "install", "postinstall")
#: Manifest fields that belong to the transport, never to a stored version document.
_TRANSPORT_FIELDS = ("_attachments", "_rev", "_revisions")
#: Package-level fields kept from the newest publish for the full packument. npm 11 sends only
#: ``description`` at the top of a publish; the rest comes from the version's manifest (its
#: package.json, with ``readme``/``readmeFilename`` read from the README file), and the public
#: registry lifts them to the top level, as :func:`publish_fields` does.
PACKAGE_FIELDS = (
    "description",
    "readme",
    "readmeFilename",
    "homepage",
    "keywords",
    "repository",
    "author",
    "bugs",
    "license",
    "maintainers",
    "contributors",
)
#: Top-level fields that fall back to the latest version's manifest when the package row has none
#: (rows written before depot kept the readme at the top level).
_FROM_LATEST = ("description", "readme", "readmeFilename")


@dataclass(frozen=True)
class VersionRecord:
    """One published version as stored: its manifest and the verified tarball facts."""

    version: str
    manifest: Mapping[str, Any]
    filename: str
    integrity: str
    shasum: str
    created: str
    deprecated: str | None = None


@dataclass(frozen=True)
class PackageReadme:
    """What a person reads about a package: its description and readme from the latest publish.

    ``readme`` is the README file's text as npm sent it (markdown, untrusted: sanitise it before
    showing it as HTML); ``readme_filename`` says which file it was (``README.md``).
    """

    name: str
    description: str | None
    readme: str | None
    readme_filename: str | None


@dataclass(frozen=True)
class PackageRecord:
    """What the registry knows about one package name beyond its versions."""

    name: str
    created: str
    modified: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    dist_tags: Mapping[str, str] = field(default_factory=dict)


def stored_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A version manifest as kept in a row: transport fields dropped, ``hasInstallScript`` set.

    The readme goes to the package's top level instead (as on the public registry; ``npm view``
    reads it from there), so a package with many versions does not carry it once per version.
    ``dist`` is rebuilt at read time from the verified digests and the request's URL.
    """
    kept = {k: v for k, v in manifest.items() if k not in _TRANSPORT_FIELDS and k != "readme"}
    scripts = kept.get("scripts")
    if isinstance(scripts, dict) and any(s in scripts for s in _INSTALL_SCRIPTS):
        kept.setdefault("hasInstallScript", True)
    return kept


def version_document(
    record: VersionRecord, tarball_url: str, abbreviated: bool = False
) -> dict[str, Any]:
    """The manifest of one version as served, with ``dist`` pointing at this registry."""
    document = dict(record.manifest)
    dist = dict(document.get("dist") or {})
    dist.update(integrity=record.integrity, shasum=record.shasum, tarball=tarball_url)
    document["dist"] = dist
    if record.deprecated:
        document["deprecated"] = record.deprecated
    else:
        document.pop("deprecated", None)
    if abbreviated:
        return {k: document[k] for k in ABBREVIATED_FIELDS if k in document}
    document.setdefault("_id", f"{document.get('name')}@{record.version}")
    return document


def dist_tags(stored: Mapping[str, str], versions: Sequence[str]) -> dict[str, str]:
    """Stored tags that point at existing versions, with ``latest`` by semver precedence.

    A stored ``latest`` is an explicit ``npm dist-tag add`` and wins while its version exists.
    """
    present = set(versions)
    tags = {tag: version for tag, version in stored.items() if version in present}
    if "latest" not in tags:
        latest = choose_latest(versions)
        if latest is not None:
            tags["latest"] = latest
    return dict(sorted(tags.items()))


def build_packument(
    package: PackageRecord,
    versions: Sequence[VersionRecord],
    tarball_url: Callable[[VersionRecord], str],
    abbreviated: bool = False,
) -> dict[str, Any]:
    """The full or abbreviated packument of ``package``; versions in semver order."""
    by_version = {record.version: record for record in versions}
    ordered = sort_versions(by_version)
    documents = {
        v: version_document(by_version[v], tarball_url(by_version[v]), abbreviated) for v in ordered
    }
    tags = dist_tags(package.dist_tags, ordered)
    if abbreviated:
        return {
            "name": package.name,
            "dist-tags": tags,
            "versions": documents,
            "modified": package.modified,
        }
    time = {"created": package.created, "modified": package.modified}
    time.update({v: by_version[v].created for v in ordered})
    packument: dict[str, Any] = {
        "_id": package.name,
        "_rev": "",
        "name": package.name,
        "dist-tags": tags,
        "versions": documents,
        "time": time,
    }
    for key in PACKAGE_FIELDS:
        if key in package.fields:
            packument[key] = package.fields[key]
    packument.update(_latest_fallbacks(packument, by_version.get(tags.get("latest", ""))))
    return packument


def readme_of(package: PackageRecord, versions: Sequence[VersionRecord]) -> PackageReadme:
    """The description and readme of ``package``, falling back to its latest version's manifest."""
    numbers = [record.version for record in versions]
    latest = dist_tags(package.dist_tags, numbers).get("latest")
    record = next((r for r in versions if r.version == latest), None)
    fields = {**_latest_fallbacks(package.fields, record), **package.fields}
    texts = [fields.get(k) for k in _FROM_LATEST]
    return PackageReadme(package.name, *(t if isinstance(t, str) else None for t in texts))


def _latest_fallbacks(have: Mapping[str, Any], latest: VersionRecord | None) -> dict[str, Any]:
    if latest is None:
        return {}
    found = {k: latest.manifest.get(k) for k in _FROM_LATEST if k not in have}
    return {k: v for k, v in found.items() if v}


def package_fields(document: Mapping[str, Any]) -> dict[str, Any]:
    """The package-level fields of a published packument or manifest worth keeping."""
    return {k: document[k] for k in PACKAGE_FIELDS if k in document and document[k] is not None}


def publish_fields(document: Mapping[str, Any], manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The package's top-level fields after publishing ``manifest`` in ``document``.

    Everything comes from this publish (the registry keeps the latest publish's readme): the
    manifest's fields, overridden by what the document sent at its top level.
    """
    return {**package_fields(manifest), **package_fields(document)}


def encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def revision(serial: int, full_body: bytes) -> str:
    """A CouchDB-style ``_rev`` (``<n>-<hash>``) that changes with every change of the package."""
    return f"{serial}-{hashlib.sha256(full_body).hexdigest()[:32]}"


def wants_abbreviated(accept: str | None) -> bool:
    """True when the Accept header prefers the abbreviated form (npm install sends q=1.0 for it)."""
    if not accept:
        return False
    best_full = best_abbrev = 0.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media == ABBREVIATED_MEDIA_TYPE:
            best_abbrev = max(best_abbrev, q)
        elif media in ("application/json", "application/*", "*/*"):
            best_full = max(best_full, q)
    return best_abbrev > 0 and best_abbrev >= best_full
