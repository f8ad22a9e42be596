"""Streaming a local store path's NAR over HTTP, serialised on the fly.

The tree walk and small files run in a worker thread, a batch of about ``CHUNK_SIZE`` bytes per
hop; large files are read in ``CHUNK_SIZE`` chunks on the event loop with ``preadv(RWF_NOWAIT)``
when the pages are cached (as depot-core's ``fs`` store does), in a thread otherwise. The body is
exactly ``NarSize`` bytes or the connection is cut: a path that changes or vanishes while it is
sent never looks like a complete NAR to the client (which checks NarHash as well).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator

from depot.core.http import RangedResponse
from depot.nix.nardump import Contents, NarDumpError, coalesce, frames, read_exactly, walk
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

log = logging.getLogger("depot.nix")

#: Bytes per read and send. On the 256 MiB benchmark path (README) 1 MiB read with RWF_NOWAIT
#: cost the least server CPU per GiB; 4 MiB, and pread in threads with 4 or 8 MiB, cost more.
CHUNK_SIZE = 1024 * 1024
_NOWAIT = hasattr(os, "preadv") and hasattr(os, "RWF_NOWAIT")


class LocalNarResponse(RangedResponse):
    """The NAR of ``base_name`` in ``store_dir``, ``nar_size`` bytes long."""

    def __init__(
        self,
        store_dir: str,
        base_name: str,
        nar_size: int,
        request: Request,
        media_type: str,
        on_start: Callable[[int], None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.base_name = base_name
        self.nar_size = nar_size
        super().__init__(nar_size, request, media_type, headers, on_start)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        store_fd = await asyncio.to_thread(os.open, self.store_dir, flags)
        parts: Iterator[bytes | Contents] = coalesce(
            frames(walk(store_fd, self.base_name)), CHUNK_SIZE, CHUNK_SIZE
        )
        try:
            await self._send(parts, send)
        finally:
            await asyncio.to_thread(parts.close)  # closes the fds the walk holds open
            os.close(store_fd)

    async def _send(self, parts: Iterator[bytes | Contents], send: Send) -> None:
        # The first step (lstat of the path itself) runs before the status line: a path removed
        # since its lookup still gets its 404 rather than a cut body.
        try:
            first = await asyncio.to_thread(next, parts, None)
        except NarDumpError as exc:
            log.warning(
                "local store path unreadable", extra={"path": self.base_name, "error": str(exc)}
            )
            body = b"" if self.head_only else b"store path is not readable\n"
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-length", str(len(body)).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if self.head_only:
            await send({"type": "http.response.body", "body": b""})
            return
        if self.on_start:
            self.on_start(self.end - self.start)
        buffer = memoryview(bytearray(CHUNK_SIZE)) if _NOWAIT else None
        position = 0  # offset in the NAR of the next byte ``parts`` yields
        part = first
        try:
            while part is not None and position < self.end:
                size = part.size if isinstance(part, Contents) else len(part)
                if position + size > self.nar_size:
                    raise NarDumpError(0, "the path is larger than its registered NarSize")
                if position + size > self.start:
                    skip = max(0, self.start - position)
                    stop = min(size, self.end - position)
                    if isinstance(part, Contents):
                        await self._send_file(part, skip, stop, buffer, send)
                    else:
                        await send(
                            {
                                "type": "http.response.body",
                                "body": part[skip:stop],
                                "more_body": True,
                            }
                        )
                position += size
                part = await asyncio.to_thread(next, parts, None) if position < self.end else None
            if position < self.end:
                raise NarDumpError(0, "the path is smaller than its registered NarSize")
        except NarDumpError as exc:
            # Cutting the connection short of Content-Length is the only way left to say so.
            log.error("local NAR cut short", extra={"path": self.base_name, "error": str(exc)})
            raise
        await send({"type": "http.response.body", "body": b""})

    async def _send_file(
        self, part: Contents, start: int, stop: int, buffer: memoryview | None, send: Send
    ) -> None:
        offset = start
        while offset < stop:
            n = min(CHUNK_SIZE, stop - offset)
            chunk = _read_cached(part.fd, n, offset, buffer) if buffer is not None else None
            if chunk is None:
                chunk = await asyncio.to_thread(read_exactly, part.fd, offset, n)
            offset += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


def _read_cached(fd: int, n: int, offset: int, buffer: memoryview) -> bytes | None:
    """Up to ``n`` page-cached bytes without blocking, or None (the caller reads in a thread)."""
    try:
        got = os.preadv(fd, [buffer[:n]], offset, os.RWF_NOWAIT)
    except OSError:  # not cached (EAGAIN), or the filesystem lacks RWF_NOWAIT
        return None
    return buffer[:got].tobytes() if got else None
