"""``depot proxy``: a local HTTP proxy that signs every request to one depot with a fresh token.

Clients that cannot send a token themselves (``nix copy --to http://127.0.0.1:43407/nix``) talk to
the proxy; it forwards each request to the upstream URL with ``Authorization: Bearer <jwt>``,
streaming request and response bodies chunk by chunk in both directions (a NAR of several GiB
never sits in memory), and mints a new token before the current one expires.

In-process use (``depot nix push``)::

    async with running_proxy("https://depot.example.com") as local_url:
        ...  # point nix at local_url

    with proxy_in_thread("https://depot.example.com") as local_url:  # synchronous callers
        subprocess.run(["nix", "copy", "--to", local_url + "/nix", path])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from depot.core.errors import DepotError
from depot.core.tokens import TokenSource, find_signing_key

log = logging.getLogger("depot.proxy")

DEFAULT_PORT = 43407
CHUNK_SIZE = 1 << 20
#: Connection-level headers that belong to one hop and are never forwarded (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "authorization",  # replaced by the proxy's own token
    }
)


def upstream_base(url: str) -> str:
    """Validate the upstream URL and drop its trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DepotError(f"{url!r} is not an http(s) URL")
    if parts.query or parts.fragment:
        raise DepotError(f"{url!r}: the upstream URL takes no query or fragment")
    return url.rstrip("/")


def _forward_headers(headers: Any) -> list[tuple[str, str]]:
    listed = {
        name.strip().lower()
        for value in headers.getall("Connection", [])
        for name in value.split(",")
    }
    return [
        (name, value)
        for name, value in headers.items()
        if name.lower() not in HOP_BY_HOP and name.lower() not in listed
    ]


def make_handler(upstream: str, tokens: TokenSource, session: Any) -> Callable[[Any], Any]:
    """The aiohttp request handler that forwards to ``upstream``."""
    from aiohttp import ClientError, web

    async def forward(request: web.Request) -> web.StreamResponse:
        try:
            token = await tokens.token()
        except DepotError as exc:
            log.error("cannot mint a token: %s", exc)
            return web.Response(status=502, text=f"depot proxy: {exc}\n")
        headers = [*_forward_headers(request.headers), ("Authorization", f"Bearer {token}")]
        body = _stream_body(request) if request.body_exists else None
        try:
            async with session.request(
                request.method,
                upstream + request.rel_url.raw_path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
                skip_auto_headers=("Content-Type", "User-Agent", "Accept-Encoding"),
            ) as answer:
                response = web.StreamResponse(status=answer.status, reason=answer.reason)
                _copy_response_headers(answer, response, upstream, request)
                await response.prepare(request)
                if request.method != "HEAD" and not await _relay(answer, response, request):
                    return response
                await response.write_eof()
        except (TimeoutError, ClientError) as exc:
            log.warning("%s %s -> upstream error: %s", request.method, request.path, exc)
            return web.Response(status=502, text=f"depot proxy: upstream error: {exc}\n")
        log.info("%s %s %s", request.method, request.path, answer.status)
        return response

    async def _relay(answer: Any, response: web.StreamResponse, request: web.Request) -> bool:
        """Copy the body chunk by chunk; False when either side broke off midway."""
        try:
            async for chunk in answer.content.iter_chunked(CHUNK_SIZE):
                await response.write(chunk)
        except (TimeoutError, ClientError) as exc:
            # The status line is gone: cut the connection, so the client sees a short body
            # and never a complete-looking one (a chunked body would otherwise end cleanly).
            log.warning("%s %s -> upstream broke off: %s", request.method, request.path, exc)
            if request.transport is not None:
                request.transport.close()
            return False
        except ConnectionResetError:
            log.info("%s %s -> client went away", request.method, request.path)
            return False
        return True

    return forward


def _stream_body(request: Any) -> AsyncIterator[bytes]:
    """The upload as it arrives: a Content-Length stays one, chunked stays chunked."""

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(CHUNK_SIZE):
            yield chunk

    return chunks()


def _copy_response_headers(answer: Any, response: Any, upstream: str, request: Any) -> None:
    for name, value in answer.headers.items():
        if name.lower() in HOP_BY_HOP:
            continue
        if name.lower() == "location" and value.startswith(upstream):
            # A redirect inside the depot stays on the proxy, so it keeps adding the token.
            value = f"{request.scheme}://{request.host}{value[len(upstream) :]}"
        response.headers.add(name, value)
    length = answer.headers.get("Content-Length")
    if length is not None and request.method != "HEAD":
        response.content_length = int(length)


@contextlib.asynccontextmanager
async def running_proxy(
    url: str,
    port: int = 0,
    host: str = "127.0.0.1",
    key_path: str | Path | None = None,
    token_lifetime: str | float | timedelta = timedelta(hours=1),
) -> AsyncIterator[str]:
    """Run the proxy on this event loop; yields its local base URL (``http://127.0.0.1:PORT``).

    The signing key is looked up before the port opens, so a missing key fails at once.
    """
    from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

    upstream = upstream_base(url)
    tokens = TokenSource(upstream, key_path=key_path, lifetime=token_lifetime)
    tokens.key = await find_signing_key(key_path)
    # No total timeout: a multi-GiB NAR may take long; only a stalled connection is an error.
    session = ClientSession(
        connector=TCPConnector(limit=64),
        timeout=ClientTimeout(total=None, sock_connect=30, sock_read=600),
        auto_decompress=False,  # pass Content-Encoding through untouched
    )
    server = web.Server(make_handler(upstream, tokens, session), access_log=None)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await session.close()
        raise DepotError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    local = f"http://{host if ':' not in host else f'[{host}]'}:{bound}"
    log.info("proxy listening", extra={"local": local, "upstream": upstream})
    try:
        yield local
    finally:
        await runner.cleanup()
        await session.close()


@contextlib.contextmanager
def proxy_in_thread(url: str, port: int = 0, **options: Any) -> Iterator[str]:
    """:func:`running_proxy` on an event loop of its own in a background thread.

    For synchronous callers (a click command that then runs ``nix copy``): yields the local base
    URL once the proxy listens, and stops it when the block ends.
    """
    ready: list[str] = []
    failed: list[BaseException] = []
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            async with running_proxy(url, port=port, **options) as local:
                ready.append(local)
                started.set()
                await stop.wait()
        except BaseException as exc:  # reported in the caller's thread
            failed.append(exc)
            started.set()

    thread = threading.Thread(
        target=loop.run_until_complete, args=(main(),), daemon=True, name="depot-proxy"
    )
    thread.start()
    started.wait()
    try:
        if failed:
            raise failed[0]
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        loop.close()


async def serve_forever(
    url: str,
    port: int,
    host: str = "127.0.0.1",
    key_path: str | Path | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """What ``depot proxy`` runs: the proxy until SIGINT or SIGTERM."""
    import signal

    async with running_proxy(url, port=port, host=host, key_path=key_path) as local:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        announce(local)
        await stop.wait()
