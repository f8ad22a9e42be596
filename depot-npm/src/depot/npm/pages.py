"""The package page of the npm registry: ``/-/browse/npm/<name>`` (scoped names too).

What a person checks before ``npm install``: description, dist-tags, every version with its
publish time and deprecation, the readme (of the latest publish, as on npm's own site), the
dependencies of the selected version (``?version=``, ``latest`` by default) linking to their own
pages when this depot holds them, the tarball's size and integrity, and the install line for this
depot. Read top to bottom: rows, then the page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

import nodesemver
import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.database import json_value
from depot.core.errors import NotFound
from depot.core.markup import Markup, code, escape, join, link, pre, readme, safe_url, table, tag
from depot.core.packagepages import PackagePage, PageSection
from depot.core.pages import human_size
from depot.npm import store
from depot.npm.packument import dist_tags
from depot.npm.store import packages, tarballs, versions
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


class NpmPages:
    """Builds ``/-/browse/npm/<name>`` from the registry's rows."""

    def __init__(self, ctx: EcosystemContext) -> None:
        self.ctx = ctx
        self.ecosystem = ctx.name

    async def validator(self, name: str) -> tuple[object, ...] | None:
        """The package's change serial (every publish, tag, deprecation bumps it), and how many
        packages the registry holds and when any last changed (a dependency published or removed
        later changes whether it is a link)."""
        others = sa.select(sa.func.count(), sa.func.max(packages.c.modified)).subquery()
        row = await self.ctx.db.fetch_one(
            sa.select(packages.c.serial, *others.c).where(packages.c.name == name)
        )
        return None if row is None else tuple(row._mapping)

    async def page(self, name: str, request: Request) -> PackagePage | None:
        db = self.ctx.db
        package = await db.fetch_one(sa.select(packages).where(packages.c.name == name))
        if package is None:
            return None
        query = (
            sa.select(versions.c.version, versions.c.created, versions.c.deprecated,
                      tarballs.c.size)
            .select_from(versions.outerjoin(tarballs, sa.and_(
                tarballs.c.name == versions.c.name, tarballs.c.filename == versions.c.filename)))
            .where(versions.c.name == name)
        )  # fmt: skip
        # Plain tuples: a databases Record looks its column up by name on every access.
        rows = [tuple(r._mapping) for r in await db.fetch_all(query)]
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
        manifest = record.manifest
        fields = _mapping(json_value(package["fields"]))
        dependencies = _dependencies(manifest)
        held = await self._held({dep for _, dep, _ in dependencies})

        page_url = self.ctx.page_url(request, name)
        registry = self.ctx.external_url(request, "/")
        scope = name.split("/", 1)[0] if name.startswith("@") else None
        npmrc = f"{scope}:registry={registry}" if scope else f"registry={registry}"
        tarball_url = self.ctx.external_url(request, f"/{name}/-/{record.filename}")

        facts: list[tuple[str, object]] = [
            ("version", _version_fact(selected, record.deprecated)),
            ("dist-tags", join(
                Markup(f"{escape(dist_tag)}: {link(_version_url(page_url, v), v)}")
                for dist_tag, v in tags.items()
            )),
            ("published", _when(record.created)),
            ("license", _text(manifest.get("license") or fields.get("license"))),
            ("homepage", _url_link(manifest.get("homepage") or fields.get("homepage"))),
            ("repository", _url_link(_repository(manifest.get("repository")
                                                 or fields.get("repository")))),
            ("tarball", link(tarball_url, record.filename)),
            ("size", _size(tarball["size"]) if tarball is not None else ""),
            ("integrity", code(record.integrity)),
            ("shasum", code(record.shasum)),
        ]  # fmt: skip
        sections = [
            PageSection("Dependencies of " + selected, self._dependency_table(
                dependencies, held, request), "dependencies"),
            PageSection(f"Versions ({len(ordered)})", _versions_table(
                ordered, by_version, tags, selected, page_url), "versions"),
        ]  # fmt: skip
        # The readme npm sent with the latest publish (kept once per package); a version row
        # written before that (schema 1) still carries its own in its manifest.
        latest = await store.package_readme(db, name)
        text = manifest.get("readme") or (latest.readme if latest else None)
        if isinstance(text, str) and text.strip() and text != "ERROR: No README data found!":
            filename = manifest.get("readmeFilename") or (latest.readme_filename if latest else "")
            rendered = await asyncio.to_thread(render_readme, text, str(filename or ""))
            sections.insert(0, PageSection("Readme", rendered, "readme"))
        description = manifest.get("description") or (latest.description if latest else None)
        return PackagePage(
            title=name,
            summary=description if isinstance(description, str) else "",
            install=(
                ("install", f"npm install --registry {registry} {name}@{selected}"),
                (".npmrc", npmrc),
            ),
            facts=facts,
            sections=sections,
        )

    async def _held(self, names: set[str]) -> set[str]:
        """Which of ``names`` this registry holds (one query)."""
        if not names:
            return set()
        rows = await self.ctx.db.fetch_all(
            sa.select(packages.c.name).where(packages.c.name.in_(sorted(names)))
        )
        return {r[0] for r in rows}

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
        created, deprecated, size = row[1], row[2], row[3]
        label = link(_version_url(page_url, version), version)
        if version == selected:
            label = tag("strong", label)
        note = tag("span", f"deprecated: {deprecated}", "deprecated") if deprecated else ""
        body.append((label, ", ".join(tagged.get(version, ())), _when(created), _size(size), note))
    return table(("version", "tags", "published", "size", ""), body)


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
