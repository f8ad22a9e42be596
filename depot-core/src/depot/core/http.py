"""HTTP helpers every ecosystem needs: external URLs, blob responses with ranges and
conditional requests, error bodies."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from depot.core.artifactmemory import HeldArtifact
from depot.core.blobs import InvalidKey
from depot.core.errors import BadRequest, HTTPError, NotFound
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from depot.core.blobs import BlobStat, ScopedBlobStore
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


def document_response(
    request: Request,
    body: bytes,
    etag: str,
    media_type: str,
    cache_control: str,
    *,
    vary: str | None = "Accept",
    headers: dict[str, str] | None = None,
    prebuilt: dict[Any, list[tuple[bytes, bytes]]] | None = None,
) -> Response:
    """A rendered document (packument, simple page, narinfo): 200 with its bytes, 304 when the
    client's ``If-None-Match`` holds ``etag``, headers alone for HEAD.

    ``prebuilt`` is a dict kept with the rendering (say a field of the cached object): the raw
    header list of its 200 answer is built once there and reused while the rendering is, so a
    hot request formats no header. ``text/*`` types get ``; charset=utf-8`` as Starlette adds.
    """
    if_none_match = None
    for name, value in request.scope["headers"]:
        if name == b"if-none-match":
            if_none_match = value
            break
    if if_none_match is not None:
        validators = Validators(etag, None, cache_control)
        if validators.unchanged(request):
            return validators.not_modified({"Vary": vary, **(headers or {})} if vary else headers)
    variant = (media_type, cache_control, vary, tuple(headers.items()) if headers else None)
    raw = prebuilt.get(variant) if prebuilt is not None else None
    if raw is None:
        content_type = media_type
        if content_type.startswith("text/") and "charset=" not in content_type:
            content_type += "; charset=utf-8"
        fields = {"content-type": content_type, "content-length": str(len(body)), "etag": etag,
                  "cache-control": cache_control}  # fmt: skip
        if vary:
            fields["vary"] = vary
        raw = raw_header_list({**fields, **(headers or {})})
        if prebuilt is not None:
            if len(prebuilt) >= 16:  # a few variants per rendering; more is someone's game
                prebuilt.clear()
            prebuilt[variant] = raw
    return BytesResponse(200, list(raw), b"" if request.method == "HEAD" else body)


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
    # From the scope, not request.url: building the URL object cost more than the rest.
    scheme = request.scope.get("scheme", "http")
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
    memory: bool = False,
) -> Response:
    """A :class:`BlobResponse` for ``key``, or 404 if the store has no such blob.

    The response carries ``ETag`` (``etag`` when the caller knows a content hash, else the
    store's), ``Last-Modified`` and ``cache_control`` (immutable unless said otherwise), and a
    matching If-None-Match or If-Modified-Since gets a 304 instead of the bytes.

    ``memory``: the bytes under ``key`` never change (a content-addressed key, or one unique per
    upload and never reused), so a small blob may be kept in this process's memory
    (:mod:`depot.core.artifactmemory`) and sent from there without opening it. The caller has
    checked that the artifact still exists (a current row or a lookup the change notification
    keeps current); the bytes outlive their blob only in memory.
    """
    held = None
    if memory and blobs.memory is not None:
        try:
            full_key = blobs.full_key(key)
        except InvalidKey as exc:
            raise BadRequest(str(exc)) from exc
        held = blobs.memory.get(full_key)
        if held is None:
            stat = await _stat(blobs, key)
            if blobs.memory.fits(stat.size):
                body = b"".join([chunk async for chunk in blobs.read(key)])
                if len(body) != stat.size:
                    raise NotFound(f"{key} not found")  # replaced meanwhile: ask again
                held = HeldArtifact(body, stat.etag, stat.modified)
                blobs.memory.put(full_key, held)
        if held is not None:
            return _held_response(
                held, key, request, media_type, headers, on_start, etag, cache_control
            )
    else:
        stat = await _stat(blobs, key)
    validators = Validators(etag or stat.etag or _derived_etag(key, stat.size, stat.modified),
                            stat.modified, cache_control)  # fmt: skip
    if validators.unchanged(request):
        return validators.not_modified(headers)
    all_headers = {**validators.headers(), **(headers or {})}
    return BlobResponse(blobs, key, stat.size, request, media_type, all_headers, on_start)


async def _stat(blobs: ScopedBlobStore, key: str) -> BlobStat:
    try:
        stat = await blobs.stat(key)
    except InvalidKey as exc:
        raise BadRequest(str(exc)) from exc
    if stat is None:
        raise NotFound(f"{key} not found")
    return stat


class BytesResponse(Response):
    """A body already in memory, with a complete raw header list: nothing left to compute.

    ``on_start(size)`` is called as the body goes out (not for HEAD), like :class:`BlobResponse`.
    """

    def __init__(
        self,
        status_code: int,
        raw_headers: list[tuple[bytes, bytes]],
        body: bytes,
        on_start: Callable[[int], None] | None = None,
    ) -> None:
        self.status_code = status_code
        self.raw_headers = raw_headers
        self.body = body
        self.background = None
        self.on_start = on_start

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if self.on_start is not None and self.body:
            self.on_start(len(self.body))
        await send({"type": "http.response.body", "body": self.body})


def raw_header_list(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """``headers`` as an ASGI header list (lower-case names, latin-1 values)."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def _held_response(
    held: HeldArtifact,
    key: str,
    request: Request,
    media_type: str,
    headers: dict[str, str] | None,
    on_start: Callable[[int], None] | None,
    etag: str | None,
    cache_control: str | None,
) -> Response:
    """The answer :func:`blob_response` would give, from bytes in memory."""
    size = len(held.body)
    request_headers = request.headers
    conditional = "if-none-match" in request_headers or "if-modified-since" in request_headers
    if conditional or headers or "range" in request_headers:
        validators = Validators(etag or held.etag or _derived_etag(key, size, held.modified),
                                held.modified, cache_control)  # fmt: skip
        if validators.unchanged(request):
            return validators.not_modified(headers)
        span = parse_range(request_headers.get("range"), size)
        start, end = span or (0, size)
        all_headers = {"content-type": media_type, "accept-ranges": "bytes",
                       "content-length": str(end - start), **validators.headers(),
                       **(headers or {})}  # fmt: skip
        if span:
            all_headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        body = b"" if request.method == "HEAD" else held.body[start:end]
        return BytesResponse(206 if span else 200, raw_header_list(all_headers), body, on_start)
    variant = (media_type, etag, cache_control)
    raw = held.raw_headers.get(variant)
    if raw is None:
        validators = Validators(etag or held.etag or _derived_etag(key, size, held.modified),
                                held.modified, cache_control)  # fmt: skip
        raw = held.raw_headers[variant] = raw_header_list(
            {"content-type": media_type, "accept-ranges": "bytes", "content-length": str(size),
             **validators.headers()}
        )  # fmt: skip
    body = b"" if request.method == "HEAD" else held.body
    return BytesResponse(200, list(raw), body, on_start)


def _derived_etag(key: str, size: int, modified: float | None) -> str:
    """An ETag for a blob whose store names none: it moves when the key is rewritten."""
    digest = hashlib.blake2b(f"{key}\0{size}\0{modified}".encode(), digest_size=16)
    return f'"{digest.hexdigest()}"'


def plain_error(request: Request, exc: HTTPError) -> Response:
    """The default rendering of an :class:`HTTPError`: its reason as one line of text."""
    body = "" if request.method == "HEAD" else exc.reason + "\n"
    return PlainTextResponse(body, status_code=exc.status, headers=exc.headers)


ErrorRenderer = Callable[[Request, HTTPError], Response | Awaitable[Response]]
