"""HTTP helpers every ecosystem needs: external URLs, blob responses with ranges, error bodies."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from depot.core.blobs import InvalidKey
from depot.core.errors import BadRequest, HTTPError, NotFound
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from depot.core.blobs import ScopedBlobStore
    from depot.core.settings import Settings

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def external_base(request: Request, settings: Settings) -> str:
    """The URL at which the client reached depot's root, without a trailing slash.

    ``--base-url`` wins; otherwise scheme and Host come from the request (or from
    ``X-Forwarded-Proto``/``-Host``/``-Prefix`` with ``--trust-proxy-headers``), followed by the
    mount prefix when depot runs inside another app.
    """
    if settings.base_url:
        return settings.base_url.rstrip("/")
    headers = request.headers
    scheme = request.url.scheme
    host = headers.get("host") or request.url.netloc
    prefix = ""
    if settings.trust_proxy_headers:
        scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
        host = headers.get("x-forwarded-host", host).split(",")[0].strip()
        prefix = headers.get("x-forwarded-prefix", "").split(",")[0].strip().rstrip("/")
    root_path = depot_root_path(request)
    return f"{scheme}://{host}{prefix}{root_path}"


def depot_root_path(request: Request) -> str:
    """The mount prefix of the depot app itself (not of the ecosystem's Mount inside it)."""
    return request.scope.get("depot.root_path", request.scope.get("root_path", "")).rstrip("/")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range ``[start, end)`` a Range header asks for, or None for the whole.

    Multiple ranges are answered with the whole body (allowed by RFC 9110); an unsatisfiable
    range raises 416.
    """
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m:
        return None
    first, last = m.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = int(last)
        if length == 0:
            raise HTTPError(416, "range not satisfiable", {"Content-Range": f"bytes */{size}"})
        return max(0, size - length), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size or end <= start:
        raise HTTPError(416, "range not satisfiable", {"Content-Range": f"bytes */{size}"})
    return start, end


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The whole body of a request that must be small (metadata, a JSON document); 413 past
    ``limit`` bytes, noticed as the bytes arrive rather than after they were all held."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPError(413, f"request body larger than {limit} bytes")
    return bytes(body)


class RangedResponse(Response):
    """A body of known ``size`` streamed by a subclass: status, ``Content-Length``,
    ``Accept-Ranges`` and single-range support (``self.start``/``self.end``) done once here."""

    def __init__(
        self,
        size: int,
        request: Request,
        media_type: str,
        headers: dict[str, str] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> None:
        self.range = parse_range(request.headers.get("range"), size)
        self.head_only = request.method == "HEAD"
        self.on_start = on_start
        self.status_code = 206 if self.range else 200
        self.media_type = media_type
        self.background = None
        self.start, self.end = self.range or (0, size)
        all_headers = {"accept-ranges": "bytes", "content-length": str(self.end - self.start)}
        if self.range:
            all_headers["content-range"] = f"bytes {self.start}-{self.end - 1}/{size}"
        all_headers.update(headers or {})
        self.init_headers(all_headers)


class BlobResponse(RangedResponse):
    """Stream a stored blob with Content-Length, ``Accept-Ranges`` and single-range support."""

    def __init__(
        self,
        blobs: ScopedBlobStore,
        key: str,
        size: int,
        request: Request,
        media_type: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> None:
        self.blobs = blobs
        self.key = key
        super().__init__(size, request, media_type, headers, on_start)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if self.head_only:
            await send({"type": "http.response.body", "body": b""})
            return
        if self.on_start:
            self.on_start(self.end - self.start)
        chunks: AsyncIterator[bytes] = self.blobs.read(self.key, self.start, self.end)
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def blob_response(
    blobs: ScopedBlobStore,
    key: str,
    request: Request,
    media_type: str = "application/octet-stream",
    headers: dict[str, str] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Response:
    """A :class:`BlobResponse` for ``key``, or 404 if the store has no such blob."""
    try:
        stat = await blobs.stat(key)
    except InvalidKey as exc:
        raise BadRequest(str(exc)) from exc
    if stat is None:
        raise NotFound(f"{key} not found")
    return BlobResponse(blobs, key, stat.size, request, media_type, headers, on_start)


def plain_error(request: Request, exc: HTTPError) -> Response:
    """The default rendering of an :class:`HTTPError`: its reason as one line of text."""
    body = "" if request.method == "HEAD" else exc.reason + "\n"
    return PlainTextResponse(body, status_code=exc.status, headers=exc.headers)


ErrorRenderer = Callable[[Request, HTTPError], Response | Awaitable[Response]]
