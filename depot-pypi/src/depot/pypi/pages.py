"""The project page of the Python index: ``/-/browse/pypi/<project>``.

What a person checks before ``pip install``: every version (yanked ones marked, with the reason),
each version's files with size, sha256 and Requires-Python, the description from the core metadata
rendered as PyPI renders it (readme_renderer: reStructuredText, Markdown or plain text by its
Description-Content-Type), Requires-Dist linking to the projects this index holds, and the pip and
uv lines. ``?version=`` selects the version whose metadata is shown (the newest release by default).

Where it came from: a project with files uploaded here is marked published (and never merged with
an upstream's files, see :mod:`depot.pypi.pullthrough`); a project depot holds only as a
``--pypi-upstream`` cache gets its page from the upstream page it holds, each file marked cached
(fetched when) or not fetched yet.
"""

from __future__ import annotations

import asyncio
import email.message
import email.parser
import email.policy
import io
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.database import json_value
from depot.core.errors import NotFound
from depot.core.markup import Markup, code, escape, link, readme, safe_url, table, tag
from depot.core.packagepages import (
    AT_UPSTREAM,
    CACHED,
    PUBLISHED,
    PackagePage,
    PageSection,
    Provenance,
    provenance_label,
)
from depot.core.pages import human_size
from depot.pypi.names import METADATA_SUFFIX, InvalidFilename, normalize, parse_filename
from depot.pypi.schema import blob_key, cached_files, pypi_files
from depot.pypi.simple import sort_versions
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version
from starlette.requests import Request

#: Core metadata larger than this is not read for the page (PyPI itself caps descriptions lower).
MAX_METADATA = 4 * 1024 * 1024


@dataclass(frozen=True)
class ProjectMetadata:
    """The parts of one version's core metadata the page shows."""

    name: str = ""
    summary: str = ""
    description: str = ""
    description_content_type: str = ""
    requires_dist: Sequence[str] = field(default_factory=tuple)
    urls: Sequence[tuple[str, str]] = field(default_factory=tuple)
    license: str = ""
    author: str = ""


class PypiPages:
    """Builds ``/-/browse/pypi/<project>`` from the file rows and the stored core metadata."""

    #: Every write of this ecosystem notifies ctx.changes: the core may keep rendered pages.
    follows_changes = True

    def __init__(self, ctx: EcosystemContext) -> None:
        self.ctx = ctx
        self.ecosystem = ctx.name

    async def page(self, name: str, request: Request) -> PackagePage | None:
        project = normalize(name)
        f = pypi_files.c
        query = (
            sa.select(f.filename, f.version, f.packagetype, f.sha256, f.size, f.requires_python,
                      f.metadata_sha256, f.upload_time, f.yanked)
            .where(f.project == project)
            .order_by(f.filename)
        )  # fmt: skip
        # Plain tuples: a databases Record looks its column up by name on every access.
        rows = [(*r._mapping, _UPLOADED) for r in await self.ctx.db.fetch_all(query)]
        if not rows:
            # A project with a file uploaded here never shows upstream files (dependency
            # confusion); one that depot holds only as a cache gets its page from the cache.
            return await self._cached_page(project, request)
        files = _by_version(rows)
        ordered = sort_versions(files)[::-1]
        selected = _selected(request, project, ordered, files)
        metadata = await self._metadata(files[selected])
        return await self._build(project, request, ordered, files, selected, metadata, _UPLOADED)

    async def _cached_page(self, project: str, request: Request) -> PackagePage | None:
        """The page of a project held only as a cache of a ``--pypi-upstream``: the files of
        the upstream page depot holds, each marked cached (fetched when) or not fetched yet.
        The summary, description and Requires-Dist come from the core metadata of a cached
        wheel of the selected version, when depot holds one (see :meth:`_cached_metadata`)."""
        held = await self.ctx.held_documents.get(project)
        if held is None:
            return None
        upstream = held.upstream
        document = await self.ctx.held_documents.read(held)
        c = cached_files.c
        fetched = {
            r[0]: (r[1], r[2], r[3])
            for r in await self.ctx.db.fetch_all(
                sa.select(c.filename, c.fetched_at, c.blob_key, c.size).where(c.project == project)
            )
        }
        not_fetched = Provenance(AT_UPSTREAM, upstream)
        rows = []
        for entry in document.get("files") or ():
            try:
                parsed = parse_filename(entry["filename"])
            except (InvalidFilename, KeyError, TypeError):
                continue
            held_file = fetched.get(entry["filename"])
            when = held_file[0] if held_file is not None else None
            rows.append((
                entry["filename"], str(parsed.version), parsed.packagetype, entry["sha256"],
                entry.get("size"), entry.get("requires-python"), None,
                entry.get("upload-time") or "", entry.get("yanked"),
                Provenance(CACHED, upstream, when) if when is not None else not_fetched,
            ))  # fmt: skip
        if not rows:
            return None
        rows.sort(key=lambda r: r[0])
        files = _by_version(rows)
        ordered = sort_versions(files)[::-1]
        selected = _selected(request, project, ordered, files)
        metadata = await self._cached_metadata(files[selected], fetched)
        if not metadata.name:
            metadata = ProjectMetadata(name=str(document.get("name") or project))
        provenance = Provenance(CACHED, upstream, held.fetched_at)
        return await self._build(project, request, ordered, files, selected, metadata, provenance)

    async def _cached_metadata(
        self, version_files: Sequence[Any], fetched: Mapping[str, tuple[Any, ...]]
    ) -> ProjectMetadata:
        """The core metadata of a cached wheel of the version (upstream pages carry none here):
        its ``.metadata`` file when depot cached that (PEP 658, verified against the upstream's
        hash), else the wheel's own METADATA when the store has the wheel as a local file (read
        in a thread; the zip index says where METADATA is, so the wheel is never read whole).
        Empty if neither is held."""
        wheels = [r[0] for r in version_files if r[2] == "bdist_wheel" and r[0] in fetched]
        for filename in wheels:
            held = fetched.get(filename + METADATA_SUFFIX)
            if held is not None:
                raw = await self._read_blob(held[1])
                if raw is not None:
                    return parse_metadata(raw)
        for filename in wheels:
            path = self.ctx.blobs.local_path(fetched[filename][1])
            if path is not None:
                metadata = await asyncio.to_thread(_wheel_metadata, path)
                if metadata is not None:
                    return metadata
        return ProjectMetadata()

    async def _build(
        self,
        project: str,
        request: Request,
        ordered: Sequence[str],
        files: Mapping[str, Sequence[Any]],
        selected: str,
        metadata: ProjectMetadata,
        provenance: Provenance,
    ) -> PackagePage:
        """The page from the file rows by version (``ordered`` newest first), uploaded or
        cached alike."""
        held = await self._held({_requirement_name(r) for r in metadata.requires_dist} - {""})

        page_url = self.ctx.page_url(request, project)
        index = self.ctx.external_url(request, "/simple/")
        files_url = self.ctx.external_url(request, f"/files/{quote(project)}/")
        pin = f"{metadata.name or project}=={selected}"
        yanked = files[selected][0][8]
        description = metadata.description
        sections = []
        if description.strip():
            body = await asyncio.to_thread(
                render_description, description, metadata.description_content_type
            )
            sections.append(PageSection("Description", body, "description"))
        sections.append(
            PageSection(
                f"Requires-Dist of {selected}",
                self._requirements(metadata.requires_dist, held, request)
                if metadata.requires_dist or not provenance.cached
                else Markup("<p>Not known until a wheel of this version is fetched.</p>"),
                "requires-dist",
            )
        )
        sections.append(
            PageSection(
                f"Versions ({len(ordered)})",
                _versions_table(ordered, files, selected, page_url, files_url),
                "versions",
            )
        )
        facts: list[tuple[str, object]] = [
            ("version", _version_fact(selected, yanked)),
            ("uploaded", _when(max(r[7] or "" for r in files[selected]))),
            ("source", _sources(files[selected])),
            ("Requires-Python", _requires_python(files[selected])),
            ("license", metadata.license),
            ("author", metadata.author),
            *((label, _url_link(url)) for label, url in metadata.urls),
        ]
        return PackagePage(
            title=metadata.name or project,
            summary=metadata.summary,
            install=(
                ("pip", f"pip install --index-url {index} '{pin}'"),
                ("uv", f"uv pip install --index-url {index} '{pin}'"),
            ),
            facts=facts,
            sections=sections,
            provenance=provenance,
        )

    async def _metadata(self, version_files: Sequence[Any]) -> ProjectMetadata:
        """The version's core metadata: a wheel's stored METADATA (PEP 658), else the fields
        twine sent with the upload (the same core metadata fields, as form fields)."""
        for row in version_files:
            if row[6]:
                raw = await self._read_blob(blob_key(row[6]))
                if raw is not None:
                    return parse_metadata(raw)
        row = await self.ctx.db.fetch_one(
            sa.select(pypi_files.c.fields)
            .where(pypi_files.c.filename.in_([r[0] for r in version_files]))
            .limit(1)
        )
        return metadata_from_form(json_value(row[0]) if row is not None else None)

    async def _read_blob(self, key: str, limit: int = MAX_METADATA) -> bytes | None:
        stat = await self.ctx.blobs.stat(key)
        if stat is None or stat.size > limit:
            return None
        return b"".join([chunk async for chunk in self.ctx.blobs.read(key)])

    async def _held(self, projects: set[str]) -> set[str]:
        """Which of ``projects`` this index holds, uploaded or cached (so they have a page)."""
        if not projects:
            return set()
        query = sa.select(pypi_files.c.project).where(pypi_files.c.project.in_(sorted(projects)))
        uploaded = {r[0] for r in await self.ctx.db.fetch_all(query)}
        return uploaded | await self.ctx.held_documents.among(projects - uploaded)

    def _requirements(self, requires: Sequence[str], held: set[str], request: Request) -> Markup:
        if not requires:
            return Markup("<p>None.</p>")
        rows = []
        for text in requires:
            name = _requirement_name(text)
            url = self.ctx.page_url(request, name) if name in held else None
            rows.append((link(url, name or text), code(text)))
        return table(("project", "requirement"), rows)


#: Every file in ``pypi_files`` came through the upload API (``twine upload``, ``depot python
#: push``): the provenance of each row of a project that is not a cache.
_UPLOADED = Provenance(PUBLISHED)


def _by_version(rows: Sequence[Any]) -> dict[str, list[Any]]:
    files: dict[str, list[Any]] = {}
    for row in rows:
        files.setdefault(row[1], []).append(row)
    return files


def _selected(
    request: Request, project: str, ordered: Sequence[str], files: Mapping[str, Sequence[Any]]
) -> str:
    """``?version=``, else what PyPI shows first; 404 for a version the project lacks."""
    selected = request.query_params.get("version") or _default_version(ordered, files)
    if selected not in files:
        raise NotFound(f"{project} has no version {selected!r}")
    return selected


def _sources(version_files: Sequence[Any]) -> Markup:
    """The provenance of a version's files, each distinct label once."""
    labels = dict.fromkeys(provenance_label(r[9]) for r in version_files)
    return Markup("<br>").join(labels)


def _default_version(ordered: Sequence[str], files: Mapping[str, Sequence[Any]]) -> str:
    """What PyPI shows first: the newest release that is not yanked, else the newest version."""
    for version in ordered:
        if files[version][0][8] is None and not _is_prerelease(version):
            return version
    for version in ordered:
        if files[version][0][8] is None:
            return version
    return ordered[0]


def _is_prerelease(version: str) -> bool:
    try:
        return Version(version).is_prerelease
    except InvalidVersion:
        return True


def _versions_table(
    ordered: Sequence[str],
    files: Mapping[str, Sequence[Any]],
    selected: str,
    page_url: str,
    files_url: str,
) -> Markup:
    """One heading row per version (yank state and reason), then a row per file.

    Rows are written as f-strings over ``escape`` (a project may have thousands of files).
    """
    rows: list[Markup] = []
    for version in ordered:
        yanked = files[version][0][8]
        label = link(f"{page_url}?{urlencode({'version': version})}", version)
        if version == selected:
            label = tag("strong", label)
        state = (
            tag("span", "yanked" + (f": {yanked}" if yanked else ""), "yanked")
            if yanked is not None
            else ""
        )
        rows.append(Markup(f'<tr class="group"><td colspan="6">{label} {state}</td></tr>'))
        for row in files[version]:
            filename, sha256, size, requires_python, uploaded, source = (
                row[0],
                row[3],
                row[4],
                row[5],
                row[7],
                row[9],
            )
            href = files_url + (filename if _URL_SAFE.fullmatch(filename) else quote(filename))
            rows.append(Markup(
                f'<tr><td><a href="{escape(href)}">{escape(filename)}</a></td>'
                f"<td>{human_size(size)}</td><td><code>{escape(sha256)}</code></td>"
                f"<td>{escape(requires_python or '')}</td><td>{_when(uploaded)}</td>"
                f"<td>{provenance_label(source)}</td></tr>"
            ))  # fmt: skip
    return table(("file", "size", "sha256", "Requires-Python", "uploaded", "source"), rows,
                 "files")  # fmt: skip


#: Distribution file names that need no percent-encoding in a URL path (nearly all of them).
_URL_SAFE = re.compile(r"[A-Za-z0-9._-]+")


def _wheel_metadata(wheel: Path) -> ProjectMetadata | None:
    """The parsed ``*.dist-info/METADATA`` of a wheel file, or None if it has none."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            name = next(
                (n for n in archive.namelist() if n.count("/") == 1
                 and n.endswith(".dist-info/METADATA")),
                None,
            )  # fmt: skip
            if name is None or archive.getinfo(name).file_size > MAX_METADATA:
                return None
            return parse_metadata(archive.read(name))
    except (zipfile.BadZipFile, OSError, ValueError):
        return None


def parse_metadata(raw: bytes) -> ProjectMetadata:
    """The fields the page shows, from an RFC 822 core metadata file (METADATA, PKG-INFO).

    The description is the message body (Metadata 2.1+) or the older ``Description`` header.
    """
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    body = message.get_payload()
    if isinstance(body, str) and body.strip():
        description = body
    else:
        description = _unfold(str(message.get("Description") or ""))
    urls = [_project_url(v) for v in message.get_all("Project-URL") or []]
    if message.get("Home-page"):
        urls.insert(0, ("Home-page", message["Home-page"]))
    return ProjectMetadata(
        name=_header(message, "Name"),
        summary=_header(message, "Summary"),
        description=description,
        description_content_type=_header(message, "Description-Content-Type"),
        requires_dist=tuple(message.get_all("Requires-Dist") or ()),
        urls=tuple(urls),
        license=_header(message, "License-Expression") or _first_line(_header(message, "License")),
        author=_header(message, "Author") or _header(message, "Author-email"),
    )  # fmt: skip


def metadata_from_form(fields: Any) -> ProjectMetadata:
    """The same fields from twine's upload form (kept with the row by the upload route)."""
    fields = fields if isinstance(fields, Mapping) else {}

    def many(key: str) -> tuple[str, ...]:
        value = fields.get(key)
        values = value if isinstance(value, list) else [value]
        return tuple(v for v in values if isinstance(v, str))

    def one(key: str) -> str:
        return next(iter(many(key)), "")

    urls = [_project_url(v) for v in many("project_urls")]
    if one("home_page"):
        urls.insert(0, ("Home-page", one("home_page")))
    return ProjectMetadata(
        name=one("name"),
        summary=one("summary"),
        description=one("description"),
        description_content_type=one("description_content_type"),
        requires_dist=many("requires_dist"),
        urls=tuple(urls),
        license=one("license_expression") or _first_line(one("license")),
        author=one("author") or one("author_email"),
    )  # fmt: skip


@lru_cache(maxsize=64)
def render_description(text: str, content_type: str) -> Markup:
    """The description as PyPI shows it (warehouse picks the renderer by content type: Markdown
    with its variant, plain text, and reStructuredText for anything else, falling back to plain
    text when the reStructuredText does not parse); sanitised by the core. Cached: it is a
    version's metadata, which never changes, and docutils takes a while on long documents."""
    from readme_renderer import markdown, rst, txt

    message = email.message.Message()
    message["Content-Type"] = content_type or "text/x-rst"
    kind = message.get_content_type()
    rendered = None
    if kind == "text/markdown":
        rendered = markdown.render(text, variant=message.get_param("variant") or "GFM")
    elif kind != "text/plain":
        rendered = rst.render(text, stream=io.StringIO())
    if rendered is None:
        rendered = txt.render(text)
    return readme(rendered or "")


def _project_url(value: str) -> tuple[str, str]:
    """``Project-URL: Label, https://...`` as (label, URL)."""
    label, _, url = value.partition(",")
    return label.strip(), url.strip()


def _requirement_name(text: str) -> str:
    try:
        return normalize(Requirement(text).name)
    except InvalidRequirement:
        return ""


def _requires_python(version_files: Sequence[Any]) -> str:
    return ", ".join(sorted({r[5] for r in version_files if r[5]}))


def _version_fact(version: str, yanked: str | None) -> Markup:
    if yanked is None:
        return escape(version)
    reason = f": {yanked}" if yanked else ""
    return Markup('{} <span class="yanked">yanked{}</span>').format(version, reason)


def _url_link(url: str) -> Markup | str:
    safe = safe_url(url)
    return link(safe, safe) if safe else url


def _header(message: email.message.Message, name: str) -> str:
    """A one-line header, its folding undone."""
    value = message.get(name)
    return " ".join(str(value).split()) if value else ""


def _unfold(text: str) -> str:
    """An old ``Description`` header's text: continuation lines are indented by eight columns,
    or seven and a ``|`` (core metadata spec, "Description")."""
    lines = text.splitlines()
    rest = (
        line[8:] if line.startswith("       |") or line.startswith(" " * 8) else line.lstrip()
        for line in lines[1:]
    )
    return "\n".join([lines[0], *rest]) if lines else ""


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _when(stamp: str | None) -> str:
    return stamp[:10] + " " + stamp[11:16] + " UTC" if stamp else ""
