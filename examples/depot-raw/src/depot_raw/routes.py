"""``/raw``: store a file (route -> verify -> store -> respond), serve it, list them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.errors import BadRequest, Conflict, NotFound
from depot.core.http import blob_response
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from depot_raw.tables import raw_files

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def _file_name(request: Request) -> str:
    name = request.path_params["name"]
    if not _NAME.match(name):
        raise BadRequest(f"file name {name!r} is not allowed (letters, digits, . _ -)")
    return name


def routes(ctx: EcosystemContext) -> list[BaseRoute]:
    async def put_file(request: Request) -> Response:
        name = _file_name(request)
        expected = request.headers.get("x-checksum-sha256", "").lower() or None
        async with ctx.blobs.upload(f"incoming/{name}") as upload:
            async for chunk in request.stream():
                await upload.write(chunk)
            await upload.complete()
            sha256 = upload.hexdigest("sha256")
            if expected and expected != sha256:
                raise BadRequest(f"body has sha256 {sha256}, X-Checksum-Sha256 says {expected}")
            previous = await _stored_sha256(name)
            if previous == sha256:
                return JSONResponse({"name": name, "sha256": sha256}, status_code=200)
            if previous is not None:
                raise Conflict(f"{name} exists with other content")
            # Content-addressed: racing uploads of one name can only ever publish their own bytes.
            await upload.commit(f"sha256/{sha256}")
        # Rows come to point at blobs inside reference_blobs, so a collection never removes
        # a blob between its commit above and this insert.
        async with ctx.reference_blobs(f"sha256/{sha256}"):
            await ctx.db.execute(
                ctx.db.insert_or_ignore(raw_files).values(
                    name=name, sha256=sha256, size=upload.size, uploaded_at=datetime.now(UTC)
                )
            )
        if await _stored_sha256(name) != sha256:  # another upload of this name won the race
            raise Conflict(f"{name} exists with other content")
        ctx.artifact_stored(f"sha256/{sha256}", upload.size, request)
        return JSONResponse({"name": name, "sha256": sha256}, status_code=201)

    async def _stored_sha256(name: str) -> str | None:
        row = await ctx.db.fetch_one(sa.select(raw_files.c.sha256).where(raw_files.c.name == name))
        return None if row is None else row[0]

    async def get_file(request: Request) -> Response:
        name = _file_name(request)
        row = await ctx.db.fetch_one(sa.select(raw_files).where(raw_files.c.name == name))
        if row is None:
            raise NotFound(f"{name} not found")
        # A name is bound to one content for good: its sha256 is a strong ETag and the file is
        # immutable (blob_response's default Cache-Control).
        return await blob_response(
            ctx.blobs, f"sha256/{row.sha256}", request, etag=f'"{row.sha256}"'
        )

    async def list_files(request: Request) -> Response:
        rows = await ctx.db.fetch_all(sa.select(raw_files).order_by(raw_files.c.name))
        return JSONResponse([{"name": r.name, "sha256": r.sha256, "size": r.size} for r in rows])

    return [
        Route("/", list_files, methods=["GET", "HEAD"]),
        Route("/files/{name:path}", put_file, methods=["PUT"]),
        Route("/files/{name:path}", get_file, methods=["GET", "HEAD"]),
    ]
