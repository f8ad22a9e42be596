"""Routes of the Python package index, under ``/python``.

- ``GET /python/simple/`` and ``/python/simple/<project>/``: the simple API (PEP 503 / 691).
- ``GET|HEAD /python/files/<project>/<filename>``: a distribution; ``<filename>.metadata`` beside
  each wheel is its core metadata (PEP 658).
- ``POST /python/``: twine's upload (the legacy API, ``:action=file_upload``).
- ``PUT /python/files/<project>/<filename>``: the upload ``depot python push`` uses; the body is
  the file, ``X-Depot-Sha256`` (or ``?sha256=``) its expected hash.
- ``POST|DELETE /python/-/yank/<project>/<version>``: yank a release (PEP 592), with an optional
  reason in a JSON or form body, or un-yank it; see :mod:`depot.pypi.yank`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from depot.core import EcosystemContext
from depot.core.errors import BadRequest, HTTPError, NotFound
from depot.core.http import blob_response, document_response, read_limited_body
from depot.core.limits import check_name, check_version
from depot.core.rendered import Rendered, RenderedCache
from depot.pypi import delete, simple, store, yank
from depot.pypi.names import DistributionFile, InvalidFilename, normalize, parse_filename
from depot.pypi.schema import blob_key
from packaging.version import InvalidVersion, Version
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from depot.pypi.pullthrough import PypiUpstreams

#: Form fields that steer the upload rather than describe the distribution.
_CONTROL_FIELDS = {":action", "protocol_version", "content", *store.DIGEST_FIELDS}

#: Non-file form fields (a long description) may be this large.
MAX_FORM_FIELD = 8 * 1024 * 1024

SHA256_HEADER = "x-depot-sha256"

#: Distribution file locations remembered per process (filename -> generation, row).
FILE_ROWS = 100_000


def routes(ctx: EcosystemContext) -> list[BaseRoute]:
    """The routes, bound to the ecosystem's context (read at request time)."""

    # Pages are reused while their project's generation stands (depot.core.changes): every
    # upload and yank announces the project, so a hot page costs no database query.
    pages = RenderedCache()
    file_rows: dict[str, tuple[int, Mapping[str, Any] | None]] = {}
    # project -> (generation, whether anything is uploaded here): the dependency-confusion
    # check before every upstream answer, without a query while the project is unchanged.
    local_projects: dict[str, tuple[int, bool]] = {}

    async def upload_page(request: Request) -> Response:
        return HTMLResponse(
            '<!DOCTYPE html><html><body><a href="simple/">simple index</a></body></html>'
        )

    async def legacy_upload(request: Request) -> Response:
        """twine's ``POST /python/``: parse the form, verify, store, answer 200."""
        try:
            async with request.form(max_part_size=MAX_FORM_FIELD) as form:
                return await _legacy_upload(ctx, request, form)
        except (MultiPartException, HTTPException) as exc:
            detail = getattr(exc, "message", None) or getattr(exc, "detail", str(exc))
            raise BadRequest(f"malformed upload form: {detail}") from exc

    async def simple_root(request: Request) -> Response:
        media_type = _negotiate(request)
        generation = ctx.changes.generation()  # any change in the index
        key = ("", media_type)
        page = pages.get(key, generation)
        if page is None:
            names = await store.projects(ctx)
            render = simple.root_json if media_type == simple.JSON_V1 else simple.root_html
            page = pages.put(key, generation, Rendered.of(render(names)))
        return _page(page, media_type, request, ctx.document_cache_control)

    async def simple_project(request: Request) -> Response:
        requested = request.path_params["project"]
        project = normalize(requested)
        if requested != project:
            # PEP 503: clients ask for the normalised name; send others there.
            url = ctx.external_url(request, f"/simple/{quote(project)}/")
            if request.url.query:
                url += "?" + request.url.query
            return RedirectResponse(url, status_code=301, headers={"Vary": "Accept"})
        media_type = _negotiate(request)
        generation = ctx.changes.generation(project)  # before reading the rows
        files_url = ctx.external_url(request, f"/files/{quote(project)}/")
        key = (project, media_type, files_url)
        page = pages.get(key, generation)
        if page is None:
            if upstreams is not None and not await is_local(project):
                # Nothing uploaded here under this name: the upstream's page, never merged (not
                # kept in ``pages``: a revalidation may change it without a local change).
                held = await upstreams.page(request, project, media_type, files_url)
                return _page(held, media_type, request, ctx.document_cache_control)
            rows = await store.project_files(ctx, project)
            if not rows:
                if upstreams is None:
                    raise NotFound(f"project {project} not found")
                held = await upstreams.page(request, project, media_type, files_url)
                return _page(held, media_type, request, ctx.document_cache_control)
            body = _render_project(project, media_type, files_url, rows)
            page = pages.put(key, generation, Rendered.of(body))
        return _page(page, media_type, request, ctx.document_cache_control)

    async def simple_project_no_slash(request: Request) -> Response:
        project = normalize(request.path_params["project"])
        return RedirectResponse(ctx.external_url(request, f"/simple/{quote(project)}/"), 301)

    async def file_row(project: str, filename: str) -> Mapping[str, Any] | None:
        """The row of ``filename`` under ``project`` (or None), remembered while the project is
        unchanged."""
        generation = ctx.changes.generation(project)
        remembered = file_rows.get(filename)
        if remembered is not None and remembered[0] == generation:
            return remembered[1]
        row = await store.file_row(ctx, filename)
        if row is not None and row["project"] != project:
            row = None
        if len(file_rows) >= FILE_ROWS:
            file_rows.clear()
        file_rows[filename] = (generation, row)
        return row

    async def is_local(project: str) -> bool:
        """Whether anything of ``project`` is uploaded or pushed here."""
        generation = ctx.changes.generation(project)
        remembered = local_projects.get(project)
        if remembered is not None and remembered[0] == generation:
            return remembered[1]
        local = bool(await store.project_files(ctx, project))
        if len(local_projects) >= FILE_ROWS:
            local_projects.clear()
        local_projects[project] = (generation, local)
        return local

    upstreams: PypiUpstreams | None = None
    if ctx.settings.extra.get("pypi_upstream"):
        from depot.pypi.pullthrough import PypiUpstreams

        upstreams = PypiUpstreams(ctx, ctx.settings.extra["pypi_upstream"], is_local)

    async def get_file(request: Request) -> Response:
        project = request.path_params["project"]
        filename = request.path_params["filename"]
        if upstreams is not None and not await is_local(project):
            # Nothing uploaded here under this name: a file (or core metadata) from upstream.
            # A project with anything uploaded here never reaches the upstream.
            return await upstreams.file(request, project, filename)
        if filename.endswith(".metadata"):
            row = await file_row(project, filename.removesuffix(".metadata"))
            if row is None or not row["metadata_sha256"]:
                raise NotFound(f"{filename} not found")
            sha256, media_type = row["metadata_sha256"], "text/plain; charset=utf-8"
        else:
            row = await file_row(project, filename)
            if row is None:
                raise NotFound(f"{filename} not found")
            sha256, media_type = row["sha256"], "application/octet-stream"
        key = blob_key(sha256)
        # A published file never changes (its name is bound to its hash): the sha256 is its
        # ETag, which ``depot python push`` compares, and it is immutable.
        return await blob_response(
            ctx.blobs, key, request, media_type,
            on_start=lambda size: ctx.artifact_served(key, size, request), etag=f'"{sha256}"',
            memory=True,  # sha256/<digest>: content-addressed
        )  # fmt: skip

    async def put_file(request: Request) -> Response:
        """``depot python push``: the body is the file; verify, store, 201 (200 if present)."""
        dist = _dist_for(request.path_params["project"], request.path_params["filename"])
        expected = {
            "sha256_digest": request.headers.get(SHA256_HEADER)
            or request.query_params.get("sha256")
        }
        received = await store.receive_stream(request.stream())
        try:
            created = await store.publish(ctx, dist, received, expected, request=request)
        finally:
            await asyncio.to_thread(received.file.close)
        return PlainTextResponse(
            "stored\n" if created else "already stored\n", status_code=201 if created else 200
        )

    async def yank_release(request: Request) -> Response:
        """Yank (POST, optional reason in the body) or un-yank (DELETE) every file of a release."""
        project = normalize(request.path_params["project"])
        version = yank.parse_version(request.path_params["version"])
        yanked, reason = request.method == "POST", None
        if yanked:
            body = await read_limited_body(request, yank.MAX_BODY)
            reason = yank.parse_reason(body, request.headers.get("content-type"))
        release = await yank.set_yanked(ctx, project, version, yanked, reason)
        ctx.log.info(
            "yank" if yanked else "un-yank",
            extra={"project": project, "version": release.version, "changed": release.changed},
        )
        return JSONResponse(release.as_json())

    async def delete_release(request: Request) -> Response:
        """``depot python delete``: every file of a project, or of one of its versions."""
        project = normalize(request.path_params["project"])
        dry_run = request.query_params.get("dry-run", "") not in ("", "0", "false")
        answer = await delete.delete_files(
            ctx, project, request.path_params.get("version"), dry_run
        )
        return JSONResponse(answer)

    return [
        Route("/", legacy_upload, methods=["POST"]),
        Route("/", upload_page, methods=["GET", "HEAD"]),
        Route("/simple/", simple_root, methods=["GET", "HEAD"]),
        Route("/simple/{project}/", simple_project, methods=["GET", "HEAD"]),
        Route("/simple/{project}", simple_project_no_slash, methods=["GET", "HEAD"]),
        Route("/files/{project}/{filename}", get_file, methods=["GET", "HEAD"]),
        Route("/files/{project}/{filename}", put_file, methods=["PUT"]),
        Route("/-/yank/{project}/{version}", yank_release, methods=["POST", "DELETE"]),
        Route("/-/projects/{project}", delete_release, methods=["DELETE"]),
        Route("/-/projects/{project}/{version}", delete_release, methods=["DELETE"]),
    ]


def _render_project(
    project: str, media_type: str, files_url: str, rows: Sequence[Mapping[str, Any]]
) -> bytes:
    """A project page from its rows (PEP 691 JSON or PEP 503 HTML)."""
    files = []
    versions = set()
    for row in rows:
        # databases' Record._mapping is the SQLAlchemy row, a tuple of the selected columns:
        # unpacking it is ten times cheaper than per-key Record access, which dominated here.
        filename, version, sha256, size, requires_python, metadata_sha256, upload_time, yanked = (
            row._mapping  # type: ignore[attr-defined]
        )
        versions.add(version)
        files.append(
            simple.IndexFile(
                filename, files_url + quote(filename), sha256, size, upload_time,
                requires_python, metadata_sha256, yanked,
            )
        )  # fmt: skip
    if media_type == simple.JSON_V1:
        return simple.project_json(project, simple.sort_versions(versions), files)
    return simple.project_html(project, files)


async def _legacy_upload(ctx: EcosystemContext, request: Request, form: FormData) -> Response:
    action = form.get(":action")
    if action != "file_upload":
        raise BadRequest(f"unsupported :action {action!r} (only file_upload is)")
    content = form.get("content")
    if not isinstance(content, UploadFile) or not content.filename:
        raise BadRequest("the form has no 'content' file")
    dist = _parse(content.filename)
    _check_form_matches(form, dist)
    received = await asyncio.to_thread(store.digest_file, content.file)
    expected = {field: _text(form, field) for field in store.DIGEST_FIELDS}
    fields = _metadata_fields(form)
    created = await store.publish(ctx, dist, received, expected, fields, request)
    ctx.log.info(
        "upload" if created else "upload of an identical file",
        extra={"distribution": dist.filename, "project": dist.project},
    )
    return PlainTextResponse("OK\n")


def _check_form_matches(form: FormData, dist: DistributionFile) -> None:
    """The form's name, version and filetype must agree with the filename."""
    name = _text(form, "name")
    version = _text(form, "version")
    if not name or not version:
        raise BadRequest("the form lacks 'name' or 'version'")
    if normalize(name) != dist.project:
        raise BadRequest(f"{dist.filename} does not belong to project {name}")
    check_name(name)
    check_version(version)
    try:
        if Version(version) != dist.version:
            raise BadRequest(f"{dist.filename} is not version {version} of {name}")
    except (InvalidVersion, ValueError) as exc:  # ValueError: over int()'s digit limit
        raise BadRequest(f"invalid version {version!r}") from exc
    filetype = _text(form, "filetype")
    if filetype and filetype != dist.packagetype:
        raise BadRequest(f"{dist.filename} is not a {filetype}")


def _metadata_fields(form: FormData) -> dict[str, str | list[str]]:
    """The descriptive fields twine sends (summary, classifiers, ...), kept with the row."""
    fields: dict[str, str | list[str]] = {}
    for key, value in form.multi_items():
        if key in _CONTROL_FIELDS or not isinstance(value, str) or not value:
            continue
        if key in fields:
            existing = fields[key]
            fields[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            fields[key] = value
    return fields


def _text(form: FormData, field: str) -> str | None:
    value = form.get(field)
    return value.strip() if isinstance(value, str) else None


def _parse(filename: str) -> DistributionFile:
    try:
        return parse_filename(filename)
    except InvalidFilename as exc:
        raise BadRequest(str(exc)) from exc


def _dist_for(project: str, filename: str) -> DistributionFile:
    """The distribution named by a files URL; its project segment must be the normalised name."""
    dist = _parse(filename)
    if project != dist.project:
        raise BadRequest(f"{filename} does not belong to project {project}")
    return dist


#: Clients send a handful of distinct Accept headers; parsing one costs more than the rest of a
#: cached page's request, so each answer is remembered.
_negotiate_cached = functools.lru_cache(maxsize=512)(simple.negotiate)


def _negotiate(request: Request) -> str:
    format_param = request.query_params.get("format") if request.scope["query_string"] else None
    try:
        return _negotiate_cached(request.headers.get("accept"), format_param)
    except simple.NotAcceptable as exc:
        raise HTTPError(406, str(exc), {"Vary": "Accept"}) from exc


_CONTENT_TYPES = {
    simple.TEXT_HTML: simple.TEXT_HTML + "; charset=utf-8",
    simple.JSON_V1: simple.JSON_V1,
    simple.HTML_V1: simple.HTML_V1,
}


def _page(page: Rendered, media_type: str, request: Request, cache_control: str) -> Response:
    """A rendered page, or 304 when the client holds it; HEAD gets the headers alone."""
    return document_response(
        request, page.body, page.etag, _CONTENT_TYPES.get(media_type, media_type), cache_control,
        prebuilt=page.raw_headers,
    )  # fmt: skip
