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
  page's sha256 before it is committed. Files an upstream lists without a sha256 are left out:
  nothing unverifiable is served.

Core metadata (PEP 658) is not proxied: the pages served for upstream projects carry none, so
pip and uv read the metadata from the wheel itself.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urldefrag, urljoin, urlsplit

from depot.core import EcosystemContext
from depot.core.blobs import BlobUpload
from depot.core.errors import ConfigError, NotFound
from depot.core.http import blob_response
from depot.core.rendered import Rendered, RenderedCache
from depot.core.upstream import Unverified, UpstreamError
from depot.pypi import simple
from depot.pypi.names import InvalidFilename, parse_filename
from depot.pypi.retention import file_item, page_item
from depot.pypi.schema import cached_files, upstream_pages
from starlette.requests import Request
from starlette.responses import Response

#: What depot asks an upstream for: PEP 691 JSON first, HTML understood.
ACCEPT = f"{simple.JSON_V1}, {simple.HTML_V1};q=0.2, {simple.TEXT_HTML};q=0.1"
MAX_PAGE = 64 * 1024 * 1024


class PypiUpstreams:
    """The pull-through side of the index, over the ``--pypi-upstream`` URLs in order."""

    def __init__(self, ctx: EcosystemContext, urls: Sequence[str] | str) -> None:
        urls = [urls] if isinstance(urls, str) else list(urls)  # create_app(pypi_upstream="...")
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"--pypi-upstream {url!r} is not an http(s) URL")
        self.ctx = ctx
        self.urls = [url.rstrip("/") + "/" for url in urls]
        self.pages = RenderedCache()
        self.documents: dict[str, dict[str, Any]] = {}

    # -- project pages ---------------------------------------------------------------------

    async def page(self, request: Request, project: str, media_type: str, files_url: str) -> bytes:
        row = await self.held(project)
        key = (project, media_type, files_url)
        # Keyed by the held page's blob (content-addressed): a revalidation that changed it
        # names another blob.
        page = self.pages.get(key, row["blob_key"])  # type: ignore[arg-type]
        if page is None:
            document = await self._document(row["blob_key"])
            page = Rendered.of(render(document, media_type, files_url))
            self.pages.put(key, row["blob_key"], page)  # type: ignore[arg-type]
        return page.body

    async def held(self, project: str) -> Any:
        """The held page row, fetched or revalidated as freshness requires."""
        client = self.ctx.upstream
        row = await self._row(project)
        if row is None:
            client.miss(self.urls[0])
            return await client.single_flight(("page", project), lambda: self._fetch(project))
        self.ctx.record_use(page_item(project))  # --cache-max-size/-age: batched, no write
        upstream = row["upstream_url"]
        if client.is_fresh(row["checked_at"]):
            client.hit(upstream)
            return row
        if client.is_down(upstream):
            client.stale(upstream, project, UpstreamError(upstream, "recently failed"))
            return row
        client.miss(upstream)
        try:
            return await client.single_flight(
                ("page", project), lambda: self._revalidate(project, row)
            )
        except (UpstreamError, NotFound) as exc:
            client.stale(upstream, project, exc)
            return row

    async def _row(self, project: str) -> Any:
        return await self.ctx.db.fetch_one(
            upstream_pages.select().where(upstream_pages.c.project == project)
        )

    async def _fetch(self, project: str) -> Any:
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
                return await self._store(project, upstream, fetched)
        if failure is not None:
            raise failure
        raise NotFound(f"project {project} not found here nor at {', '.join(self.urls)}")

    async def _revalidate(self, project: str, row: Any) -> Any:
        upstream = row["upstream_url"]
        fetched = await self.ctx.upstream.fetch_document(
            upstream, f"{upstream}{quote(project)}/", accept=ACCEPT, etag=row["etag"],
            last_modified=row["last_modified"], limit=MAX_PAGE,
        )  # fmt: skip
        if fetched.status == 304:
            await self.ctx.db.execute(
                upstream_pages.update()
                .where(upstream_pages.c.project == project)
                .values(checked_at=time.time())
            )
            return await self._row(project)
        if fetched.status != 200:
            raise NotFound(f"project {project} is no longer at {upstream}")
        return await self._store(project, upstream, fetched)

    async def _store(self, project: str, upstream: str, fetched: Any) -> Any:
        try:
            files = parse_page(fetched.body, fetched.content_type, fetched.url)
        except ValueError as exc:
            raise UpstreamError(upstream, f"the page of {project} is not valid: {exc}") from exc
        document = {"name": project, "upstream": upstream, "files": files}
        body = json.dumps(document, separators=(",", ":")).encode()
        async with self.ctx.blobs.upload(f"incoming/{uuid.uuid4().hex}") as upload:
            await upload.write(body)
            await upload.complete()
            key = f"upstream/pages/{upload.hexdigest('sha256')}.json"
            await upload.commit(key)
        now = time.time()
        columns = ["upstream_url", "blob_key", "etag", "last_modified", "fetched_at", "checked_at"]
        async with self.ctx.reference_blobs(key):  # safe against a collection running now
            await self.ctx.db.execute(
                self.ctx.db.upsert(upstream_pages, ["project"], columns).values(
                    project=project, upstream_url=upstream, blob_key=key, etag=fetched.etag,
                    last_modified=fetched.last_modified, fetched_at=now, checked_at=now,
                )
            )  # fmt: skip
            # Evictable (--cache-max-size/-age), committed with the row.
            await self.ctx.cache_stored(page_item(project), len(body))
        # The project page and the search page show what is held: they follow this as they
        # follow uploads.
        await self.ctx.changes.notify(project)
        self.documents[key] = document
        return await self._row(project)

    async def _document(self, key: str) -> dict[str, Any]:
        document = self.documents.get(key)
        if document is None:
            body = bytearray()
            async for chunk in self.ctx.blobs.read(key):
                body += chunk
            document = json.loads(body)
            if len(self.documents) > 1000:
                self.documents.pop(next(iter(self.documents)))
            self.documents[key] = document
        return document

    # -- files -----------------------------------------------------------------------------

    async def file(self, request: Request, project: str, filename: str) -> Response:
        client = self.ctx.upstream
        row = await self.ctx.db.fetch_one(
            cached_files.select().where(cached_files.c.filename == filename)
        )
        if row is not None and row["project"] == project:
            key = row["blob_key"]
            try:
                response = await blob_response(
                    self.ctx.blobs, key, request,
                    headers={"ETag": f'"{row["sha256"]}"',
                             "Cache-Control": "public, max-age=31536000, immutable"},
                    on_start=lambda size: self.ctx.artifact_served(key, size, request),
                )  # fmt: skip
            except NotFound:
                pass  # the blob is gone: fetch it again
            else:
                client.hit(row["upstream_url"])
                self.ctx.record_use(file_item(project, filename))
                return response
        page_row = await self.held(project)
        document = await self._document(page_row["blob_key"])
        entry = next((f for f in document["files"] if f["filename"] == filename), None)
        if entry is None:
            raise NotFound(f"{filename} not found here nor at {page_row['upstream_url']}")
        upstream, source, expected = page_row["upstream_url"], entry["url"], entry["sha256"]

        async def finish(upload: BlobUpload) -> None:
            digest = upload.hexdigest("sha256")
            if digest != expected:
                raise Unverified(f"{filename} has sha256 {digest}, the index says {expected}")
            key = f"upstream/files/{digest}"
            await upload.commit(key)
            async with self.ctx.reference_blobs(key):
                await self.ctx.db.execute(
                    self.ctx.db.insert_or_ignore(cached_files).values(
                        filename=filename, project=project, upstream_url=upstream,
                        source_url=source, blob_key=key, sha256=digest, size=upload.size,
                        fetched_at=time.time(),
                    )
                )  # fmt: skip
                await self.ctx.cache_stored(file_item(project, filename), upload.size)
            await self.ctx.changes.notify(project)  # the page marks the file cached
            self.ctx.artifact_stored(key, upload.size, request)

        return await client.fetch_blob(
            request,
            key=("file", filename),
            upstream=upstream,
            url=source,
            open_upload=lambda: self.ctx.blobs.upload(f"incoming/{uuid.uuid4().hex}"),
            finish=finish,
        )


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
            None,
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
            files.append({
                "filename": filename, "url": urldefrag(urljoin(url, href))[0],
                "sha256": sha256.lower(), "size": entry.get("size"),
                "upload-time": entry.get("upload-time"),
                "requires-python": entry.get("requires-python"),
                "yanked": None if yanked in (None, False) else ("" if yanked is True else yanked),
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
        })  # fmt: skip
    return files


class _Links(HTMLParser):
    """The anchors of a PEP 503 page with their attributes (entities already unescaped)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))
