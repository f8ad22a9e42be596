"""One ``send`` per response turn: coalescing hypercorn's small socket writes.

Hypercorn writes each HTTP/1.1 event on its own: the status line and headers, then every body
chunk, each a ``transport.write`` and so a ``send`` syscall that on loopback also runs the
receiver's TCP processing. For the small answers that dominate package traffic (a narinfo, an
abbreviated packument, a simple-index page) that is two syscalls where one would do, and
measured with wrk against ``depot serve`` it was about a third of the server's CPU per request:
coalescing them raised narinfo requests/s by about half.

:class:`CoalescingWriter` stands in for the connection's :class:`asyncio.StreamWriter`. Writes
smaller than :data:`FLUSH_AT` are gathered and handed to the transport once, at the end of the
current event-loop turn; a write that brings the gathered bytes to :data:`FLUSH_AT` goes out at
once, so large bodies stream exactly as before and ``drain()`` keeps its back-pressure. Closing
or half-closing flushes first. Nothing is held beyond one loop turn or :data:`FLUSH_AT` bytes.

:func:`install` makes hypercorn's asyncio worker use it; ``depot serve`` calls it. Hypercorn has
no hook for this, so it replaces the ``TCPServer`` name hypercorn's asyncio runner builds each
connection with, by a subclass that wraps the writer; if hypercorn's internals are not the shape
this was written against, it leaves hypercorn alone and says so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("depot.core")

#: Gathered bytes at which a write goes to the transport at once instead of at the turn's end.
FLUSH_AT = 64 * 1024


class CoalescingWriter:
    """An :class:`asyncio.StreamWriter` whose small writes of one loop turn leave as one."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pending: list[bytes] = []
        self._size = 0
        self._scheduled = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._pending.append(data)
        self._size += len(data)
        if self._size >= FLUSH_AT:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_at_turn_end)

    def _flush_at_turn_end(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Hand everything gathered to the transport now."""
        if not self._pending:
            return
        pending, size = self._pending, self._size
        self._pending = []
        self._size = 0
        # A connection already gone raises here; hypercorn's reader sees it close and cleans
        # up, as it does when its own write fails this way.
        with contextlib.suppress(ConnectionError, RuntimeError):
            if len(pending) == 1:
                self._writer.write(pending[0])
            elif size < FLUSH_AT:
                self._writer.write(b"".join(pending))
            else:
                # Headers and a large body (a tarball from memory): handed over as they are,
                # which uvloop sends with one writev, instead of copying the body into a join
                # (a fresh allocation the size of the body, page faults included, per request).
                self._writer.writelines(pending)

    async def drain(self) -> None:
        await self._writer.drain()

    def write_eof(self) -> None:
        self.flush()
        self._writer.write_eof()

    def close(self) -> None:
        self.flush()
        self._writer.close()

    async def wait_closed(self) -> None:
        await self._writer.wait_closed()

    def __getattr__(self, name: str) -> Any:
        # get_extra_info, transport, is_closing, can_write_eof: the real writer's.
        return getattr(self._writer, name)


def install() -> bool:
    """Make hypercorn's asyncio worker give each connection a :class:`CoalescingWriter`.

    Returns whether it did; idempotent.
    """
    try:
        from hypercorn.asyncio import run as hypercorn_run
        from hypercorn.asyncio.tcp_server import TCPServer
    except ImportError:  # pragma: no cover - hypercorn is a dependency
        return False
    current = getattr(hypercorn_run, "TCPServer", None)
    if current is not None and getattr(current, "coalesces_writes", False):
        return True
    if current is not TCPServer or not hasattr(TCPServer, "protocol_send"):
        log.warning(
            "hypercorn's connection class is not the one depot knows; writes are not coalesced",
            extra={"found": repr(current)},
        )
        return False

    class CoalescingTCPServer(TCPServer):  # type: ignore[misc, valid-type]
        """Hypercorn's connection handler, writing through a :class:`CoalescingWriter`."""

        coalesces_writes = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.writer = CoalescingWriter(self.writer)

    hypercorn_run.TCPServer = CoalescingTCPServer
    return True
