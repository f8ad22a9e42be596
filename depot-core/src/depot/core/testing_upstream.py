"""A fault-injecting HTTP proxy for testing pull-through caches against a real upstream.

:class:`FaultProxy` forwards every request to a target URL (normally a second ``depot serve``
holding pushed packages) and, for requests whose path matches a rule, misbehaves the way real
upstreams do: answers slowly, answers 500, cuts a body short of its Content-Length, sends a
body chunked without saying its length, tampers with bytes, or substitutes text (a wrong
signature in a narinfo). It runs on its own event loop in a thread, so synchronous tests driving
real clients can use it, and counts what it forwarded.

    with FaultProxy(upstream.url) as proxy:
        proxy.add("tamper", r"/-/.*\\.tgz$")
        ...
        proxy.clear()
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from depot.core.testing import free_port

#: What a rule does to a matching request.
KINDS = ("slow", "stall", "500", "truncate", "tamper", "replace", "refuse", "chunked")


@dataclass
class Fault:
    """``kind`` applied to requests whose path matches ``pattern`` (``re.search``).

    ``delay`` (seconds): ``slow`` waits that long before answering, ``stall`` sends the first
    half of the body at once and the second half that much later;
    ``old``/``new`` for ``replace``; ``times``: how many requests it applies to (None: all).
    """

    kind: str
    pattern: str = ""
    delay: float = 1.0
    old: bytes = b""
    new: bytes = b""
    times: int | None = None


class FaultProxy:
    """A reverse proxy on a free loopback port that injects :class:`Fault` rules."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.faults: list[Fault] = []
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    # -- rules ----------------------------------------------------------------------------

    def add(self, kind: str, pattern: str = "", **options: Any) -> Fault:
        assert kind in KINDS, kind
        fault = Fault(kind, pattern, **options)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def count(self, pattern: str = "") -> int:
        """Requests forwarded (or refused) whose path matches ``pattern``."""
        with self._lock:
            return sum(n for path, n in self.requests.items() if re.search(pattern, path))

    def _fault_for(self, path: str) -> Fault | None:
        with self._lock:
            self.requests[path] += 1
            for fault in self.faults:
                if re.search(fault.pattern, path) and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    # -- serving --------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        """Stop serving (idempotent: a test may stop it to play an outage)."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._thread = None

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        from aiohttp import ClientSession, ClientTimeout, web

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with ClientSession(
            timeout=ClientTimeout(total=None, sock_read=120), auto_decompress=False
        ) as session:

            async def handle(request: web.Request) -> web.StreamResponse:
                try:
                    return await forward(request)
                except ConnectionResetError:  # the depot hung up; nothing to answer
                    return web.Response(status=499)

            async def forward(request: web.Request) -> web.StreamResponse:
                fault = self._fault_for(request.path)
                kind = fault.kind if fault else None
                if kind == "refuse":
                    assert request.transport is not None
                    request.transport.close()
                    return web.Response(status=500)
                if kind == "500":
                    return web.Response(status=500, text="injected failure\n")
                if kind == "slow":
                    await asyncio.sleep(fault.delay)  # type: ignore[union-attr]
                headers = {
                    k: v
                    for k, v in request.headers.items()
                    # Host stays: the upstream then writes links (tarball URLs) via the proxy.
                    if k.lower() not in ("content-length", "transfer-encoding")
                }
                async with session.request(
                    request.method,
                    self.target + request.path_qs,
                    headers=headers,
                    data=await request.read() if request.can_read_body else None,
                    allow_redirects=False,
                ) as upstream:
                    body = await upstream.read()
                    if kind == "tamper" and body:
                        middle = len(body) // 2
                        body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
                    if kind == "replace":
                        body = body.replace(fault.old, fault.new)  # type: ignore[union-attr]
                    out = web.StreamResponse(status=upstream.status)
                    for k, v in upstream.headers.items():
                        if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                            out.headers[k] = v
                    if kind == "chunked":
                        out.enable_chunked_encoding()  # the length is known only at the end
                    else:
                        out.content_length = len(body)
                    await out.prepare(request)
                    if request.method == "HEAD":
                        return out
                    half = len(body) // 2
                    await out.write(body[:half])
                    if kind == "truncate":
                        assert request.transport is not None
                        request.transport.close()
                        return out
                    if kind == "stall":
                        await asyncio.sleep(fault.delay)  # type: ignore[union-attr]
                    await out.write(body[half:])
                    await out.write_eof()
                    return out

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self.port)
            await site.start()
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()
