"""``--pypi-upstream``: project pages and files of projects with nothing uploaded here.

Reads top to bottom per request, after the local index found no file of the project (a project
with anything uploaded or pushed here is served from depot only: dependency confusion):

- project page: held and fresh (``--upstream-max-age``, or ``--offline``) -> served; held and
  due -> conditional revalidation at the upstream it came from; upstream failing -> the held page,
  stale, with a log line and a metric; not held -> each ``--pypi-upstream`` in order until one
  has the project (PEP 691 JSON asked for first, PEP 503 HTML understood), its file list kept
  as a blob with a row, served in the client's format with every link pointing at depot;
- file: held -> served; else the upstream URL from the held page -> streamed to the client while
  it is stored (:meth:`depot.core.upstream.UpstreamClient.fetch_blob`), verified against the
  page's sha256 before its last byte is sent and before it is committed. Files an upstream
  lists without a sha256 are left out: nothing unverifiable is served.
- core metadata (PEP 658/714): a file the upstream page offers ``<file>.metadata`` for, with a
  sha256, is offered on depot's page too; ``<file>.metadata`` is fetched, verified and cached
  like any file (a cached file of its own, evicted on its own). pip and uv then resolve from
  the metadata and download each wheel once, at the end; so that the download finds the wheel
  held, asking for a file's metadata starts fetching the file itself in the background
  (:meth:`depot.core.upstream.UpstreamClient.prefetch`), up to :data:`PREFETCH_MAX` bytes,
  and the metadata's ``Requires-Dist`` names the projects whose pages the client asks for next:
  those not held are fetched in the background too (at most :data:`PREFETCH_PAGES`, extras left
  out), each with the core metadata of the version a resolver most likely picks
  (:func:`likely_choice`), whose requirements are prefetched in turn: a cold install finds most
  pages and metadata held or on their way instead of waiting on upstream for each in sequence.

Project pages are the core's held documents (:mod:`depot.core.held`: the row, the freshness
policy, per-process memory); what depot holds of a page is its own JSON list of the upstream's
files. Cached file rows are remembered per process and answered without a database query;
eviction (:mod:`depot.pypi.retention`) announces the projects it touched through the core's
change notification (topics ``<project>`` and ``upstream/<project>``), so every process forgets
them within the notification's bound. Revalidation needs no announcement: each process
revalidates the copy it holds after ``--upstream-max-age``.
"""

from __future__ import annotations

import json
import platform
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from email.parser import BytesHeaderParser
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urldefrag, urljoin, urlsplit

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.blobs import BlobUpload
from depot.core.changes import TopicFeed
from depot.core.errors import ConfigError, NotFound
from depot.core.held import HeldDocument
from depot.core.http import blob_response
from depot.core.rendered import Rendered, RenderedCache
from depot.core.upstream import Fetched, Unverified, UpstreamError
from depot.pypi import simple
from depot.pypi.names import METADATA_SUFFIX, InvalidFilename, normalize, parse_filename
from depot.pypi.retention import file_item, topic
from depot.pypi.schema import cached_files
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from starlette.requests import Request
from starlette.responses import Response

#: What depot asks an upstream for: PEP 691 JSON first, HTML understood.
ACCEPT = f"{simple.JSON_V1}, {simple.HTML_V1};q=0.2, {simple.TEXT_HTML};q=0.1"
MAX_PAGE = 64 * 1024 * 1024
#: A file whose metadata is asked for is prefetched if the page gives its size and it is no
#: larger than this (pip backtracking over the versions of a huge wheel reads each version's
#: metadata and downloads one).
PREFETCH_MAX = 64 * 1024 * 1024
#: Dependencies of one core metadata file whose pages are prefetched, at most.
PREFETCH_PAGES = 100
#: Core metadata larger than this is not read for dependencies.
MAX_METADATA = 1024 * 1024
#: Cached file rows remembered per process.
REMEMBERED = 100_000

# Compiled once (depot.core.prepared): a cold install asks for one row per file.
_CACHED_FILE = cached_files.select().where(cached_files.c.filename == sa.bindparam("filename"))


class PypiUpstreams:
    """The pull-through side of the index, over the ``--pypi-upstream`` URLs in order."""

    def __init__(
        self,
        ctx: EcosystemContext,
        urls: Sequence[str] | str,
        is_local: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        urls = [urls] if isinstance(urls, str) else list(urls)  # create_app(pypi_upstream="...")
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"--pypi-upstream {url!r} is not an http(s) URL")
        self.ctx = ctx
        self.urls = [url.rstrip("/") + "/" for url in urls]
        # Whether a project has anything uploaded here (then upstream is never asked for it).
        self.is_local = is_local
        self.pages = RenderedCache()
        # filename -> (change generation of upstream/<project>, cached file row)
        self.file_rows: dict[str, tuple[int, Any]] = {}
        # At start-up, not during the first install through the cache (about 0.2 s).
        import aiohttp  # noqa: F401

    # -- project pages ---------------------------------------------------------------------

    async def page(
        self, request: Request, project: str, media_type: str, files_url: str
    ) -> Rendered:
        held = await self.held(project)
        key = (project, media_type, files_url)
        # Keyed by the held page's blob (content-addressed): a revalidation that changed it
        # names another blob.
        page = self.pages.get(key, held.blob_key)  # type: ignore[arg-type]
        if page is None:
            document = await self.ctx.held_documents.read(held)
            page = Rendered.of(render(document, media_type, files_url))
            self.pages.put(key, held.blob_key, page)  # type: ignore[arg-type]
        return page

    async def held(self, project: str, *, read: bool = True) -> HeldDocument:
        """The held page, fetched or revalidated as freshness requires
        (:meth:`depot.core.held.HeldDocuments.current`); ``read=False``: the caller found none."""
        return await self.ctx.held_documents.current(
            project, self.urls[0], self._refresh(project), read=read
        )

    def _refresh(self, project: str) -> Callable[[HeldDocument | None], Awaitable[HeldDocument]]:
        async def refresh(held: HeldDocument | None) -> HeldDocument:
            if held is None:
                return await self._fetch(project)
            return await self._revalidate(project, held)

        return refresh

    async def _fetch(self, project: str) -> HeldDocument:
        """The first upstream that has the project wins; 404 if none has it."""
        failure: UpstreamError | None = None
        for upstream in self.urls:
            try:
                fetched = await self.ctx.upstream.fetch_document(
                    upstream, f"{upstream}{quote(project)}/", accept=ACCEPT, limit=MAX_PAGE
                )
            except UpstreamError as exc:
                failure = exc
                continue
            if fetched.status == 200:
                return await self._store(project, upstream, fetched, None)
        if failure is not None:
            raise failure
        raise NotFound(f"project {project} not found here nor at {', '.join(self.urls)}")

    async def _revalidate(self, project: str, held: HeldDocument) -> HeldDocument:
        """Ask the upstream the held page came from, conditionally."""
        upstream = held.upstream
        fetched = await self.ctx.upstream.fetch_document(
            upstream, f"{upstream}{quote(project)}/", accept=ACCEPT, etag=held.etag,
            last_modified=held.last_modified, limit=MAX_PAGE,
        )  # fmt: skip
        if fetched.status == 304:
            return await self.ctx.held_documents.confirm(held)
        if fetched.status != 200:
            raise NotFound(f"project {project} is no longer at {upstream}")
        return await self._store(project, upstream, fetched, held)

    async def _store(
        self, project: str, upstream: str, fetched: Fetched, replaces: HeldDocument | None
    ) -> HeldDocument:
        """Hold the page's file list, each link absolute, as depot's own JSON document."""
        try:
            files = parse_page(fetched.body, fetched.content_type, fetched.url)
        except ValueError as exc:
            raise UpstreamError(upstream, f"the page of {project} is not valid: {exc}") from exc
        document = {"name": project, "upstream": upstream, "files": files}
        return await self.ctx.held_documents.store(
            project, upstream, json.dumps(document, separators=(",", ":")).encode(),
            etag=fetched.etag, last_modified=fetched.last_modified, replaces=replaces,
            document=document,
        )  # fmt: skip

    # -- files -----------------------------------------------------------------------------

    def _open_file_upload(self) -> AbstractAsyncContextManager[BlobUpload]:
        # Committed as upstream/files/<sha256>: content-addressed, so kept in memory when small.
        return self.ctx.blobs.upload(f"incoming/{uuid.uuid4().hex}", remember=True)

    async def file(self, request: Request, project: str, filename: str) -> Response:
        """A file of an upstream project, or its core metadata (``<file>.metadata``)."""
        client = self.ctx.upstream
        row = await self._file_row(project, filename)
        if row is not None:
            key = row["blob_key"]
            try:
                response = await blob_response(
                    self.ctx.blobs, key, request,
                    "text/plain; charset=utf-8" if filename.endswith(METADATA_SUFFIX)
                    else "application/octet-stream",
                    on_start=lambda size: self.ctx.artifact_served(key, size, request),
                    etag=f'"{row["sha256"]}"',
                    memory=True,  # upstream/files/<sha256>: content-addressed
                )  # fmt: skip
            except NotFound:
                self.file_rows.pop(filename, None)  # the blob is gone: fetch it again
            else:
                client.hit(row["upstream_url"])
                self.ctx.record_use(file_item(project, filename))
                wheel = filename.removesuffix(METADATA_SUFFIX)
                if wheel != filename and wheel not in self.file_rows:
                    # Metadata prefetched with its project's page: the wheel comes next.
                    client.background(self._prefetch_file(project, wheel), wheel)
                return response
        held = await self.held(project)
        document = await self.ctx.held_documents.read(held)
        upstream = held.upstream
        if filename.endswith(METADATA_SUFFIX):
            wheel = filename.removesuffix(METADATA_SUFFIX)
            entry = next((f for f in document["files"] if f["filename"] == wheel), None)
            if entry is None or not entry.get("metadata-sha256"):
                raise NotFound(f"{filename} not found here nor at {upstream}")
            source, expected = entry["url"] + METADATA_SUFFIX, entry["metadata-sha256"]
            # After the metadata's own request is on its way (this task runs on when it waits).
            client.background(self._prefetch(project, upstream, entry), f"{wheel}")
        else:
            entry = next((f for f in document["files"] if f["filename"] == filename), None)
            if entry is None:
                raise NotFound(f"{filename} not found here nor at {upstream}")
            source, expected = entry["url"], entry["sha256"]
        verify, finish = self._verified_storing(
            request, project, filename, upstream, source, expected
        )
        on_chunk = None
        if filename.endswith(METADATA_SUFFIX):
            verify, on_chunk = self._reading_requirements(verify)
        return await client.fetch_blob(
            request,
            key=("file", filename),
            upstream=upstream,
            url=source,
            open_upload=self._open_file_upload,
            finish=finish,
            verify=verify,
            on_chunk=on_chunk,
            media_type="text/plain; charset=utf-8"
            if filename.endswith(METADATA_SUFFIX)
            else "application/octet-stream",
        )

    async def _file_row(self, project: str, filename: str) -> Any:
        """The cached file's row, remembered while its project's upstream topic stands."""
        generation = self.ctx.changes.generation(topic(project))
        remembered = self.file_rows.get(filename)
        if remembered is not None and remembered[0] == generation:
            return remembered[1]
        row = await self.ctx.db.fetch_one(_CACHED_FILE, {"filename": filename})
        if row is None or row["project"] != project:
            return None
        row = dict(row._mapping)  # type: ignore[attr-defined]
        return self._remember(filename, generation, row)

    def _remember(self, filename: str, generation: int, row: Any) -> Any:
        if len(self.file_rows) >= REMEMBERED:
            self.file_rows.clear()
        self.file_rows[filename] = (generation, row)
        return row

    async def _prefetch_file(self, project: str, filename: str) -> None:
        if await self._file_row(project, filename) is not None:
            return
        held = await self.held(project)
        document = await self.ctx.held_documents.read(held)
        entry = next((f for f in document["files"] if f["filename"] == filename), None)
        if entry is not None:
            await self._prefetch(project, held.upstream, entry)

    async def _prefetch(self, project: str, upstream: str, entry: dict[str, Any]) -> None:
        """Start fetching the file whose metadata a client reads: it downloads it next."""
        filename = entry["filename"]
        size = entry.get("size")
        if not isinstance(size, int) or size > PREFETCH_MAX:
            return
        if await self._file_row(project, filename) is not None:
            return
        verify, finish = self._verified_storing(
            None, project, filename, upstream, entry["url"], entry["sha256"]
        )
        self.ctx.upstream.prefetch(
            key=("file", filename),
            upstream=upstream,
            url=entry["url"],
            open_upload=self._open_file_upload,
            finish=finish,
            verify=verify,
        )

    def _reading_requirements(
        self, verify: Callable[[BlobUpload], None]
    ) -> tuple[Callable[[BlobUpload], None], Callable[[bytes], None]]:
        """``verify`` that, once core metadata passed it, prefetches the pages it requires; and
        the ``on_chunk`` collecting the metadata's bytes for it."""
        metadata = bytearray()

        def collect(chunk: bytes) -> None:
            if len(metadata) <= MAX_METADATA:
                metadata.extend(chunk)

        def verify_and_prefetch(upload: BlobUpload) -> None:
            verify(upload)
            self._prefetch_pages(bytes(metadata))

        return verify_and_prefetch, collect

    def _prefetch_pages(self, metadata: bytes) -> None:
        """Fetch in the background the pages of the projects verified core metadata requires
        (not those of extras), unless held or uploaded here: the client asks for them next."""
        if len(metadata) > MAX_METADATA:
            return
        seen = set()
        for name, specifier in requirements(metadata):
            if name in seen or len(seen) >= PREFETCH_PAGES:
                continue
            seen.add(name)
            self.ctx.upstream.background(self._prefetch_page(name, specifier), f"page of {name}")

    async def _prefetch_page(self, project: str, specifier: SpecifierSet) -> None:
        """The page of a required project; if it was not held, the core metadata of the
        version a client most likely picks (:func:`likely_choice`), which prefetches its own
        requirements' pages in turn: the closure a resolver walks one request at a time is
        fetched concurrently."""
        if self.is_local is not None and await self.is_local(project):
            return
        if await self.ctx.held_documents.get(project) is not None:
            return
        held = await self.held(project, read=False)
        entry = likely_choice((await self.ctx.held_documents.read(held))["files"], specifier)
        if entry is None:
            return
        filename = entry["filename"] + METADATA_SUFFIX
        if await self._file_row(project, filename) is not None:
            return
        upstream = held.upstream
        verify, finish = self._verified_storing(
            None, project, filename, upstream, entry["url"] + METADATA_SUFFIX,
            entry["metadata-sha256"],
        )  # fmt: skip
        verify, on_chunk = self._reading_requirements(verify)
        self.ctx.upstream.prefetch(
            key=("file", filename),
            upstream=upstream,
            url=entry["url"] + METADATA_SUFFIX,
            open_upload=self._open_file_upload,
            finish=finish,
            verify=verify,
            on_chunk=on_chunk,
        )

    def _verified_storing(
        self,
        request: Request | None,
        project: str,
        filename: str,
        upstream: str,
        source: str,
        expected: str,
    ) -> tuple[Callable[[BlobUpload], None], Callable[[BlobUpload], Awaitable[None]]]:
        """``verify`` (the page's sha256) and ``finish`` (commit, row) of one fetched file."""
        generation = self.ctx.changes.generation(topic(project))

        def verify(upload: BlobUpload) -> None:
            digest = upload.hexdigest("sha256")
            if digest != expected:
                raise Unverified(f"{filename} has sha256 {digest}, the index says {expected}")

        async def finish(upload: BlobUpload) -> None:
            verify(upload)
            digest = upload.hexdigest("sha256")
            key = f"upstream/files/{digest}"
            row = {
                "filename": filename, "project": project, "upstream_url": upstream,
                "source_url": source, "blob_key": key, "sha256": digest, "size": upload.size,
                "fetched_at": time.time(),
            }  # fmt: skip
            # The blob first, then its row, in one hand-over (committed just before the row,
            # the blob is younger than any grace period); the package page marks a file other
            # than core metadata cached (see TopicFeed.ECOSYSTEM).
            await self.ctx.group_commit(
                [(self.ctx.db.insert_or_ignore(cached_files), row)],
                cached=[(file_item(project, filename), upload.size)],
                notify=[] if filename.endswith(METADATA_SUFFIX) else [TopicFeed.ECOSYSTEM],
                blob=(upload, key),
            )
            self._remember(filename, generation, row)
            self.ctx.artifact_stored(key, upload.size, request)

        return verify, finish


def requirements(metadata: bytes) -> list[tuple[str, SpecifierSet]]:
    """The normalised names and version specifiers a core metadata file requires outside
    extras, in order."""
    found = []
    for value in BytesHeaderParser().parsebytes(metadata).get_all("Requires-Dist") or []:
        try:
            requirement = Requirement(value)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        found.append((normalize(requirement.name), requirement.specifier))
    return found


def likely_choice(files: list[dict[str, Any]], specifier: SpecifierSet) -> dict[str, Any] | None:
    """The file whose core metadata a resolver most likely reads for ``specifier``: the newest
    final release it allows with a pure-Python wheel (``*-none-any.whl``, the same for every
    client) offering verifiable metadata and not yanked, whose Requires-Python admits the
    Python depot runs on (a client's is usually alike). None when nothing fits."""
    python = platform.python_version()
    best: tuple[Version, dict[str, Any]] | None = None
    for entry in files:
        if not entry["filename"].endswith("-none-any.whl") or not entry.get("metadata-sha256"):
            continue
        if entry.get("yanked") is not None:
            continue
        try:
            version = parse_filename(entry["filename"]).version
            requires_python = entry.get("requires-python")
            if requires_python and not SpecifierSet(requires_python).contains(python, True):
                continue
        except (InvalidFilename, InvalidSpecifier):
            continue
        if version.is_prerelease or not specifier.contains(version):
            continue
        if best is None or version > best[0]:
            best = (version, entry)
    return None if best is None else best[1]


def render(document: dict[str, Any], media_type: str, files_url: str) -> bytes:
    """A held upstream page in the client's format, every link pointing at depot."""
    files = [
        simple.IndexFile(
            f["filename"],
            files_url + quote(f["filename"]),
            f["sha256"],
            f.get("size") or 0,
            f.get("upload-time") or "",
            f.get("requires-python"),
            f.get("metadata-sha256"),
            f.get("yanked"),
        )  # fmt: skip
        for f in document["files"]
    ]
    if media_type == simple.JSON_V1:
        versions = set()
        for f in document["files"]:
            try:
                versions.add(str(parse_filename(f["filename"]).version))
            except InvalidFilename:
                continue
        return simple.project_json(document["name"], simple.sort_versions(versions), files)
    return simple.project_html(document["name"], files)


def parse_page(body: bytes, content_type: str, url: str) -> list[dict[str, Any]]:
    """The files of an upstream project page (PEP 691 JSON or PEP 503 HTML) that carry a sha256,
    with absolute URLs. Raises ValueError for a page that is neither."""
    if "json" in content_type:
        try:
            page = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        if not isinstance(page, dict) or not isinstance(page.get("files"), list):
            raise ValueError("no files list")
        files = []
        for entry in page["files"]:
            if not isinstance(entry, dict):
                continue
            sha256 = (entry.get("hashes") or {}).get("sha256")
            filename, href = entry.get("filename"), entry.get("url")
            if not (
                isinstance(sha256, str) and isinstance(filename, str) and isinstance(href, str)
            ):
                continue
            yanked = entry.get("yanked")
            # PEP 714 names it core-metadata; PEP 658's dist-info-metadata is the older key.
            metadata = entry.get("core-metadata", entry.get("dist-info-metadata"))
            files.append({
                "filename": filename, "url": urldefrag(urljoin(url, href))[0],
                "sha256": sha256.lower(), "size": entry.get("size"),
                "upload-time": entry.get("upload-time"),
                "requires-python": entry.get("requires-python"),
                "yanked": None if yanked in (None, False) else ("" if yanked is True else yanked),
                "metadata-sha256": _metadata_sha256(metadata),
            })  # fmt: skip
        return files
    parser = _Links()
    try:
        parser.feed(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc}") from exc
    files = []
    for attrs in parser.links:
        href = attrs.get("href") or ""
        target, fragment = urldefrag(urljoin(url, href))
        algorithm, _, digest = fragment.partition("=")
        filename = target.rsplit("/", 1)[-1]
        if algorithm != "sha256" or not digest or not filename:
            continue
        files.append({
            "filename": filename, "url": target, "sha256": digest.lower(), "size": None,
            "upload-time": None, "requires-python": attrs.get("data-requires-python"),
            "yanked": (attrs["data-yanked"] or "") if "data-yanked" in attrs else None,
            "metadata-sha256": _metadata_sha256(
                attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
            ),
        })  # fmt: skip
    return files


def _metadata_sha256(value: Any) -> str | None:
    """The sha256 of a file's core metadata from a PEP 691 ``core-metadata`` value (a dict of
    hashes, or true/false) or a PEP 503 ``data-core-metadata`` attribute (``sha256=<hex>`` or
    ``true``). Metadata offered without a sha256 is not offered again: it could not be checked."""
    if isinstance(value, dict):
        digest = value.get("sha256")
    elif isinstance(value, str):
        algorithm, _, digest = value.partition("=")
        if algorithm != "sha256":
            return None
    else:
        return None
    if not isinstance(digest, str) or len(digest) != 64:
        return None
    try:
        int(digest, 16)
    except ValueError:
        return None
    return digest.lower()


class _Links(HTMLParser):
    """The anchors of a PEP 503 page with their attributes (entities already unescaped)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))
