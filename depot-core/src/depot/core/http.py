"""HTTP helpers every ecosystem needs: external URLs, blob responses with ranges and
conditional requests, error bodies."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
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

#: Cache-Control of an artifact whose URL names bytes that never change (a NAR, a tarball, a
#: wheel): any cache may keep it for a year without asking again.
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Validators:
    """What a response tells caches: its ``ETag``, ``Last-Modified`` and ``Cache-Control``.

    :meth:`unchanged` answers a conditional GET or HEAD (RFC 9110 section 13.1), so a client or a
    proxy that already holds the representation gets a bodiless 304 from :meth:`not_modified`.
    """

    etag: str | None
    last_modified: float | None = None
    cache_control: str | None = IMMUTABLE

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.etag:
            headers["ETag"] = self.etag
        if self.last_modified is not None:
            headers["Last-Modified"] = formatdate(self.last_modified, usegmt=True)
        if self.cache_control:
            headers["Cache-Control"] = self.cache_control
        return headers

    def unchanged(self, request: Request) -> bool:
        """True when the request's validators match: If-None-Match (weak comparison) decides
        when present, If-Modified-Since only otherwise (RFC 9110 section 13.2.2)."""
        if request.method not in ("GET", "HEAD"):
            return False
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None:
            if not self.etag:
                return False
            if if_none_match.strip() == "*":
                return True
            ours = self.etag.removeprefix("W/")
            return any(tag.strip().removeprefix("W/") == ours for tag in if_none_match.split(","))
        if_modified_since = request.headers.get("if-modified-since")
        if if_modified_since is None or self.last_modified is None:
            return False
        try:
            since = parsedate_to_datetime(if_modified_since).timestamp()
        except (TypeError, ValueError):
            return False  # an unparsable date is ignored (RFC 9110 section 13.1.3)
        return int(self.last_modified) <= since

    def not_modified(self, headers: dict[str, str] | None = None) -> Response:
        """The 304 answer: the validators and ``headers`` (say ``Vary``), no body."""
        return Response(status_code=304, headers={**self.headers(), **(headers or {})})


def document_validators(body: bytes, cache_control: str) -> Validators:
    """Validators of a rendered mutable document (narinfo, ``nix-cache-info``): a strong ETag
    from its bytes and the deployment's document ``Cache-Control``."""
    return Validators(f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"', None, cache_control)


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
    *,
    etag: str | None = None,
    cache_control: str | None = IMMUTABLE,
) -> Response:
    """A :class:`BlobResponse` for ``key``, or 404 if the store has no such blob.

    The response carries ``ETag`` (``etag`` when the caller knows a content hash, else the
    store's), ``Last-Modified`` and ``cache_control`` (immutable unless said otherwise), and a
    matching If-None-Match or If-Modified-Since gets a 304 instead of the bytes.
    """
    try:
        stat = await blobs.stat(key)
    except InvalidKey as exc:
        raise BadRequest(str(exc)) from exc
    if stat is None:
        raise NotFound(f"{key} not found")
    validators = Validators(etag or stat.etag or _derived_etag(key, stat.size, stat.modified),
                            stat.modified, cache_control)  # fmt: skip
    if validators.unchanged(request):
        return validators.not_modified(headers)
    all_headers = {**validators.headers(), **(headers or {})}
    return BlobResponse(blobs, key, stat.size, request, media_type, all_headers, on_start)


def _derived_etag(key: str, size: int, modified: float | None) -> str:
    """An ETag for a blob whose store names none: it moves when the key is rewritten."""
    digest = hashlib.blake2b(f"{key}\0{size}\0{modified}".encode(), digest_size=16)
    return f'"{digest.hexdigest()}"'


def plain_error(request: Request, exc: HTTPError) -> Response:
    """The default rendering of an :class:`HTTPError`: its reason as one line of text."""
    body = "" if request.method == "HEAD" else exc.reason + "\n"
    return PlainTextResponse(body, status_code=exc.status, headers=exc.headers)


ErrorRenderer = Callable[[Request, HTTPError], Response | Awaitable[Response]]
