"""The package page of the npm registry: ``/-/browse/npm/<name>`` (scoped names too).

What a person checks before ``npm install``: description, dist-tags, every version with its
publish time and deprecation, the readme (of the latest publish, as on npm's own site), the
dependencies of the selected version (``?version=``, ``latest`` by default) linking to their own
pages when this depot holds them, the tarball's size and integrity, and the install line for this
depot. Read top to bottom: rows, then the page.

Where it came from: a package published here is marked so (every version published or pushed,
never merged with an upstream's, see :mod:`depot.npm.pullthrough`); a package depot holds only
as a ``--npm-upstream`` cache gets its page from the packument it holds, each version marked
cached (the tarball fetched, when) or not fetched yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

import nodesemver
import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.database import json_value
from depot.core.errors import NotFound
from depot.core.markup import Markup, code, escape, join, link, pre, readme, safe_url, table, tag
from depot.core.packagepages import (
    AT_UPSTREAM,
    CACHED,
    PUBLISHED,
    PUSHED,
    PackagePage,
    PageSection,
    Provenance,
    provenance_label,
)
from depot.core.pages import human_size
from depot.npm import store
from depot.npm.names import tarball_filename
from depot.npm.packument import dist_tags
from depot.npm.store import cached_tarballs, packages, tarballs, versions
from markdown_it import MarkdownIt
from starlette.requests import Request

#: Dependency fields of a manifest, in the order the page lists them.
DEPENDENCY_KINDS = (
    ("dependencies", "dependency"),
    ("peerDependencies", "peer"),
    ("optionalDependencies", "optional"),
    ("devDependencies", "dev"),
)
#: Readmes past this many characters are cut before rendering (npm's own site cuts far earlier).
MAX_README = 512 * 1024
_MARKDOWN_SUFFIXES = ("", ".md", ".markdown", ".mdown", ".mkd", ".mkdn")


@dataclass(frozen=True)
class _Shown:
    """What a package page shows, gathered from the registry's rows or from a held upstream
    packument. ``by_version`` rows are (version, created, deprecated, tarball size,
    Provenance)."""

    ordered: Sequence[str]
    by_version: Mapping[str, tuple[Any, ...]]
    tags: Mapping[str, str]
    selected: str
    manifest: Mapping[str, Any]
    filename: str
    integrity: str
    shasum: str
    deprecated: str | None
    created: str | None
    size: int | None
    fields: Mapping[str, Any]
    readme: str | None
    readme_filename: str
    description: str | None
    provenance: Provenance


def _published_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A version row with its provenance column (published, pushed) as a Provenance."""
    return (*row[:4], _LOCAL.get(row[4]) or Provenance(row[4] or PUBLISHED))


_LOCAL = {kind: Provenance(kind) for kind in (PUBLISHED, PUSHED)}


class NpmPages:
    """Builds ``/-/browse/npm/<name>`` from the registry's rows."""

    #: Every write of this ecosystem notifies ctx.changes: the core may keep rendered pages.
    follows_changes = True

    def __init__(self, ctx: EcosystemContext) -> None:
        self.ctx = ctx
        self.ecosystem = ctx.name

    async def page(self, name: str, request: Request) -> PackagePage | None:
        db = self.ctx.db
        package = await db.fetch_one(sa.select(packages).where(packages.c.name == name))
        if package is None:
            # A name with anything published here never shows upstream content (dependency
            # confusion); one that depot holds only as a cache gets its page from the cache.
            return await self._cached_page(name, request)
        query = (
            sa.select(versions.c.version, versions.c.created, versions.c.deprecated,
                      tarballs.c.size, versions.c.provenance)
            .select_from(versions.outerjoin(tarballs, sa.and_(
                tarballs.c.name == versions.c.name, tarballs.c.filename == versions.c.filename)))
            .where(versions.c.name == name)
        )  # fmt: skip
        # Plain tuples: a databases Record looks its column up by name on every access; the
        # provenance column becomes the label the versions table shows.
        rows = [_published_row(tuple(r._mapping)) for r in await db.fetch_all(query)]
        if not rows:
            return None
        by_version = {r[0]: r for r in rows}
        ordered = newest_first(by_version)
        latest = next((v for v in ordered if not _is_prerelease(v)), ordered[0])
        # The computed latest stands in only where no stored ``latest`` tag names a version.
        tags = dist_tags({"latest": latest, **await store.stored_dist_tags(db, name)}, ordered)
        selected = request.query_params.get("version") or tags.get("latest") or ordered[0]
        record = await store.get_version(db, name, selected) if selected in by_version else None
        if record is None:
            raise NotFound(f"{name} has no version {selected!r}")
        tarball = await store.get_tarball(db, name, record.filename)
        # The readme npm sent with the latest publish (kept once per package); a version row
        # written before that (schema 1) still carries its own in its manifest.
        latest_readme = await store.package_readme(db, name)
        kinds = {r[4].kind for r in rows}
        return await self._build(
            name, request, _Shown(
                ordered=ordered, by_version=by_version, tags=tags, selected=selected,
                manifest=record.manifest, filename=record.filename,
                integrity=record.integrity, shasum=record.shasum,
                deprecated=record.deprecated, created=record.created,
                size=tarball["size"] if tarball is not None else None,
                fields=_mapping(json_value(package["fields"])),
                readme=latest_readme.readme if latest_readme else None,
                readme_filename=latest_readme.readme_filename if latest_readme else "",
                description=latest_readme.description if latest_readme else None,
                provenance=Provenance(PUSHED if kinds == {PUSHED} else PUBLISHED),
            ),
        )  # fmt: skip

    async def _cached_page(self, name: str, request: Request) -> PackagePage | None:
        """The page of a package held only as a cache of ``--npm-upstream``: every version of
        the packument depot holds, each marked cached (its tarball fetched, when) or not
        fetched yet."""
        db = self.ctx.db
        held = await self.ctx.held_documents.get(name)
        if held is None:
            return None
        upstream = held.upstream
        document = _mapping(await self.ctx.held_documents.read(held))
        listed = document.get("versions")
        if not isinstance(listed, dict) or not listed:
            return None
        c = cached_tarballs.c
        fetched = {
            r[0]: (r[1], r[2])
            for r in await db.fetch_all(
                sa.select(c.filename, c.size, c.fetched_at).where(c.name == name)
            )
        }
        times = _mapping(document.get("time"))
        by_version: dict[str, tuple[Any, ...]] = {}
        for version, manifest in listed.items():
            if not isinstance(manifest, dict):
                continue
            deprecated = manifest.get("deprecated")
            tarball = fetched.get(tarball_filename(name, version))
            by_version[version] = (
                version,
                _text(times.get(version)),
                deprecated if isinstance(deprecated, str) and deprecated else None,
                tarball[0] if tarball else None,
                Provenance(CACHED, upstream, tarball[1]) if tarball
                else Provenance(AT_UPSTREAM, upstream),
            )  # fmt: skip
        if not by_version:
            return None
        ordered = newest_first(by_version)
        upstream_tags = {
            t: v for t, v in _mapping(document.get("dist-tags")).items()
            if isinstance(v, str) and v in by_version
        }  # fmt: skip
        latest = next((v for v in ordered if not _is_prerelease(v)), ordered[0])
        tags = dist_tags({"latest": latest, **upstream_tags}, ordered)
        selected = request.query_params.get("version") or tags.get("latest") or ordered[0]
        if selected not in by_version:
            raise NotFound(f"{name} has no version {selected!r} at {upstream}")
        manifest = listed[selected]
        dist = _mapping(manifest.get("dist"))
        readme_text = document.get("readme")
        return await self._build(
            name, request, _Shown(
                ordered=ordered, by_version=by_version, tags=tags, selected=selected,
                manifest=manifest, filename=tarball_filename(name, selected),
                integrity=_text(dist.get("integrity")), shasum=_text(dist.get("shasum")),
                deprecated=by_version[selected][2], created=by_version[selected][1],
                size=by_version[selected][3], fields=document,
                readme=readme_text if isinstance(readme_text, str) else None,
                readme_filename=_text(document.get("readmeFilename")),
                description=_text(document.get("description")) or None,
                provenance=Provenance(CACHED, upstream, held.fetched_at),
            ),
        )  # fmt: skip

    async def _build(self, name: str, request: Request, shown: _Shown) -> PackagePage:
        """The page of ``name`` from what was gathered, published or cached alike."""
        manifest, fields, selected = shown.manifest, shown.fields, shown.selected
        dependencies = _dependencies(manifest)
        held = await self._held({dep for _, dep, _ in dependencies})

        page_url = self.ctx.page_url(request, name)
        registry = self.ctx.external_url(request, "/")
        scope = name.split("/", 1)[0] if name.startswith("@") else None
        npmrc = f"{scope}:registry={registry}" if scope else f"registry={registry}"
        tarball_url = self.ctx.external_url(request, f"/{name}/-/{shown.filename}")
        source = shown.by_version[selected][4]

        facts: list[tuple[str, object]] = [
            ("version", _version_fact(selected, shown.deprecated)),
            ("dist-tags", join(
                Markup(f"{escape(dist_tag)}: {link(_version_url(page_url, v), v)}")
                for dist_tag, v in shown.tags.items()
            )),
            ("published", _when(shown.created)),
            ("source", provenance_label(source)),
            ("license", _text(manifest.get("license") or fields.get("license"))),
            ("homepage", _url_link(manifest.get("homepage") or fields.get("homepage"))),
            ("repository", _url_link(_repository(manifest.get("repository")
                                                 or fields.get("repository")))),
            ("tarball", link(tarball_url, shown.filename)),
            ("size", _size(shown.size)),
            ("integrity", code(shown.integrity) if shown.integrity else ""),
            ("shasum", code(shown.shasum) if shown.shasum else ""),
        ]  # fmt: skip
        sections = [
            PageSection("Dependencies of " + selected, self._dependency_table(
                dependencies, held, request), "dependencies"),
            PageSection(f"Versions ({len(shown.ordered)})", _versions_table(
                shown.ordered, shown.by_version, shown.tags, selected, page_url), "versions"),
        ]  # fmt: skip
        text = manifest.get("readme") or shown.readme
        if isinstance(text, str) and text.strip() and text != "ERROR: No README data found!":
            filename = manifest.get("readmeFilename") or shown.readme_filename
            rendered = await asyncio.to_thread(render_readme, text, str(filename or ""))
            sections.insert(0, PageSection("Readme", rendered, "readme"))
        description = manifest.get("description") or shown.description
        return PackagePage(
            title=name,
            summary=description if isinstance(description, str) else "",
            install=(
                ("install", f"npm install --registry {registry} {name}@{selected}"),
                (".npmrc", npmrc),
            ),
            facts=facts,
            sections=sections,
            provenance=shown.provenance,
        )

    async def _held(self, names: set[str]) -> set[str]:
        """Which of ``names`` this registry holds, published or cached (so they have a page)."""
        if not names:
            return set()
        query = sa.select(packages.c.name).where(packages.c.name.in_(sorted(names)))
        published = {r[0] for r in await self.ctx.db.fetch_all(query)}
        return published | await self.ctx.held_documents.among(names - published)

    def _dependency_table(
        self, dependencies: Sequence[tuple[str, str, str]], held: set[str], request: Request
    ) -> Markup:
        if not dependencies:
            return Markup("<p>None.</p>")
        rows = [
            (link(self.ctx.page_url(request, dep) if dep in held else None, dep), code(spec), kind)
            for kind, dep, spec in dependencies
        ]
        return table(("package", "range", "kind"), rows)


def _versions_table(
    ordered: Sequence[str],
    rows: Mapping[str, Any],
    tags: Mapping[str, str],
    selected: str,
    page_url: str,
) -> Markup:
    tagged: dict[str, list[str]] = {}
    for dist_tag, version in tags.items():
        tagged.setdefault(version, []).append(dist_tag)
    body = []
    for version in ordered:
        row = rows[version]
        created, deprecated, size, source = row[1], row[2], row[3], row[4]
        label = link(_version_url(page_url, version), version)
        if version == selected:
            label = tag("strong", label)
        note = tag("span", f"deprecated: {deprecated}", "deprecated") if deprecated else ""
        body.append((label, ", ".join(tagged.get(version, ())), _when(created), _size(size),
                     provenance_label(source), note))  # fmt: skip
    return table(("version", "tags", "published", "size", "source", ""), body)


def newest_first(versions: Iterable[str]) -> list[str]:
    """Versions by descending semver precedence, each parsed once (node-semver, loose as npm
    reads registry versions): a sort by comparisons would parse each one ~20 times."""
    return sorted(versions, key=_precedence, reverse=True)


def _precedence(version: str) -> tuple[Any, ...]:
    """A sort key in semver precedence: a release above its prereleases; prerelease identifiers
    numeric ones below alphanumeric ones, a shorter list below a longer one it begins."""
    try:
        parsed = nodesemver.make_semver(version, True)
    except ValueError:
        return (-1, -1, -1, 0, ((1, version),))
    pre = tuple((0, i, "") if isinstance(i, int) else (1, 0, str(i)) for i in parsed.prerelease)
    return (parsed.major, parsed.minor, parsed.patch, 0 if pre else 1, pre)


def _is_prerelease(version: str) -> bool:
    return _precedence(version)[3] == 0


def _version_url(page_url: str, version: str) -> str:
    return f"{page_url}?{urlencode({'version': version})}"


def _dependencies(manifest: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, name, range) of a manifest's dependency fields, by kind then name."""
    found = []
    for field, kind in DEPENDENCY_KINDS:
        declared = manifest.get(field)
        if isinstance(declared, dict):
            found += [(kind, str(dep), str(spec)) for dep, spec in sorted(declared.items())]
    return found


@lru_cache(maxsize=64)
def render_readme(text: str, filename: str) -> Markup:
    """A readme rendered as npm's site does: markdown (CommonMark with tables, strikethrough and
    raw HTML), sanitised by the core; a readme file that is not markdown is shown as text.
    Cached by text: a long readme takes milliseconds to render, and is the same for every page
    view until the next publish."""
    text = text[:MAX_README]
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix not in _MARKDOWN_SUFFIXES:
        return tag("div", pre(text), "readme")
    return readme(_MARKDOWN.render(text))


_MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _repository(value: Any) -> Any:
    """``repository`` is a URL or ``{type, url}``; ``git+https://...`` is shown as https."""
    url = value.get("url") if isinstance(value, Mapping) else value
    if isinstance(url, str) and url.startswith("git+"):
        url = url[4:]
    if isinstance(url, str) and url.endswith(".git"):
        url = url[:-4]
    return url


def _url_link(value: Any) -> Markup | str:
    url = safe_url(value)
    return link(url, url) if url else _text(value)


def _version_fact(version: str, deprecated: str | None) -> Markup:
    if not deprecated:
        return escape(version)
    return Markup(f"{escape(version)} {tag('span', f'deprecated: {deprecated}', 'deprecated')}")


def _when(stamp: str | None) -> str:
    """``2024-01-02T03:04:05.678Z`` as ``2024-01-02 03:04 UTC``."""
    if not stamp:
        return ""
    return stamp[:10] + " " + stamp[11:16] + " UTC"


def _size(size: int | None) -> str:
    return human_size(size)
