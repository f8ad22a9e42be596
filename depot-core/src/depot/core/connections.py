"""Connections under ``depot serve``: every request answered or closed, a refused body free.

Hypercorn 0.18's HTTP/1.1 handling has four gaps that a public registry cannot live with; each is
closed here by a subclass of the hypercorn class concerned, installed by :func:`install`:

- **An early answer deadlocked the connection.** Hypercorn hands body chunks to the app through a
  queue of ten; when the app answers without reading the body (413 past a limit, 404 before
  reading), the queue stays full, and the ``http.disconnect`` hypercorn then puts on it waits
  forever: the connection, the app's task and everything it held (a 16 MiB body buffer) stayed
  until the client gave up. :class:`_HTTPStream` drops the chunks the app never read once its
  answer is complete, and :class:`_H11Protocol` marks such an answer ``Connection: close``.
  :class:`_TCPServer` then half-closes and reads and discards for at most :data:`LINGER_SECONDS`
  (so the client reads the answer rather than a reset), and closes.
- **Impossible framing was waited on.** ``Content-Length`` with ``Transfer-Encoding`` (request
  smuggling's favourite) or a length no body can have (``2**64``) are refused at once with 400.
- **A client's close was noticed after the keep-alive timeout.** Hypercorn's connection task
  waits for its idle timer (75 s) before closing a socket the client already closed, so each such
  client held a descriptor in CLOSE_WAIT that long; the timer is stopped as soon as the client's
  end closes.
- **A stalled body** is answered 408 by the app itself (``--request-body-timeout``, see
  :class:`depot.core.metrics.ObserverMiddleware`); the above makes that answer close the
  connection.

Hypercorn has no hooks for any of this, so :func:`install` replaces the names hypercorn builds
connections with (as :mod:`depot.core.writes` does for its writer); if hypercorn is not the shape
this was written against, it changes nothing and says so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

log = logging.getLogger("depot.core")

#: After an early answer, how long the rest of an unread body is read and dropped before the
#: socket closes: closing with unread bytes sends a reset, which can destroy the answer in flight.
LINGER_SECONDS = 2.0
#: ... and at most this many bytes of it.
LINGER_BYTES = 64 * 1024 * 1024
#: The largest Content-Length accepted: what a signed 64-bit file offset can address.
MAX_CONTENT_LENGTH = 2**63 - 1


def framing_error(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a request's framing is impossible, or None: CL with TE, or an absurd Content-Length."""
    lengths = [v for n, v in headers if n.lower() == b"content-length"]
    codings = [v for n, v in headers if n.lower() == b"transfer-encoding"]
    if lengths and codings:
        return "Content-Length together with Transfer-Encoding"
    for value in lengths:
        text = value.strip()
        if text.isdigit() and int(text) > MAX_CONTENT_LENGTH:
            return f"Content-Length {text[:30].decode()} is larger than any body"
    return None


def install() -> bool:
    """Make hypercorn's asyncio worker use the connection classes of this module; idempotent.

    Returns whether it did. Includes :mod:`depot.core.writes`' coalescing writer.
    """
    try:
        import h11
        from hypercorn import protocol as hypercorn_protocol
        from hypercorn.asyncio import run as hypercorn_run
        from hypercorn.asyncio.tcp_server import MAX_RECV, TCPServer
        from hypercorn.events import Closed, RawData
        from hypercorn.protocol import h11 as hypercorn_h11
        from hypercorn.protocol.events import Response, StreamClosed
        from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
    except ImportError:
        log.warning("hypercorn is not the version depot knows; connection fixes not installed")
        return False
    current = getattr(hypercorn_run, "TCPServer", None)
    if getattr(current, "depot_connections", False):
        return True
    expected = (
        current is TCPServer,
        hypercorn_protocol.H11Protocol is hypercorn_h11.H11Protocol,
        hypercorn_h11.HTTPStream is HTTPStream,
        hasattr(TCPServer, "_read_data") and hasattr(TCPServer, "protocol_send"),
        hasattr(hypercorn_h11.H11Protocol, "_create_stream"),
        hasattr(hypercorn_h11.H11Protocol, "_send_h11_event"),
    )
    if not all(expected):
        log.warning(
            "hypercorn's connection classes are not the ones depot knows; "
            "early answers, framing and closed sockets are handled as hypercorn does",
            extra={"found": repr(current)},
        )
        return False
    from depot.core.logs import log_access
    from depot.core.writes import CoalescingWriter

    class _HTTPStream(HTTPStream):  # type: ignore[misc, valid-type]
        """Drops body chunks the app never read once its answer is complete (no deadlock)."""

        async def handle(self, event: Any) -> None:
            if isinstance(event, StreamClosed) and self.state == ASGIHTTPState.CLOSED:
                queue = getattr(getattr(self, "app_put", None), "__self__", None)
                if isinstance(queue, asyncio.Queue):
                    while not queue.empty():
                        queue.get_nowait()
            await super().handle(event)

    class _H11Protocol(hypercorn_h11.H11Protocol):  # type: ignore[misc, valid-type]
        """Refuses impossible framing; an answer given before the body arrived closes."""

        async def _create_stream(self, request: Any) -> None:
            reason = framing_error(list(request.headers))
            if reason is None:
                await super()._create_stream(request)
                return
            body = reason.encode() + b"\n"
            headers = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *self.config.response_headers("h11"),
            ]
            await self._send_h11_event(h11.Response(status_code=400, headers=headers))
            await self._send_h11_event(h11.Data(data=body))
            await self._send_h11_event(h11.EndOfMessage())
            log_access(
                request.method.decode("latin-1"),
                request.target.decode("latin-1").split("?")[0],
                400,
                len(body),
                0.0,
                (self.client or ("", 0))[0],
            )
            await self.send(Closed())

        async def stream_send(self, event: Any) -> None:
            if (
                isinstance(event, Response)
                and event.status_code >= 200
                and self.connection.their_state is h11.SEND_BODY
                and not any(n.lower() == b"connection" for n, _ in event.headers)
            ):
                event = Response(
                    stream_id=event.stream_id,
                    headers=[*event.headers, (b"connection", b"close")],
                    status_code=event.status_code,
                )
            await super().stream_send(event)

    class _TCPServer(TCPServer):  # type: ignore[misc, valid-type]
        """Coalesced writes; lingering close after an early answer; a client's close at once."""

        depot_connections = True
        coalesces_writes = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.writer = CoalescingWriter(self.writer)
            self._linger_until: float | None = None
            self._linger_timer: asyncio.TimerHandle | None = None

        def _body_unread(self) -> bool:
            connection = getattr(getattr(self, "protocol", None), "protocol", None)
            connection = getattr(connection, "connection", None)
            return getattr(connection, "their_state", None) is h11.SEND_BODY

        async def protocol_send(self, event: Any) -> None:
            if (
                isinstance(event, Closed)
                and self._linger_until is None
                and not self.reader.at_eof()
                and self._body_unread()
            ):
                # Answer out, body still coming: half-close, then drop what arrives (in
                # _read_data) until the client closes or the linger time is up.
                self._linger_until = time.monotonic() + LINGER_SECONDS
                try:
                    self.writer.write_eof()
                except (NotImplementedError, OSError, RuntimeError):
                    await super().protocol_send(event)
                    return
                # The reader may be waiting with no timeout: closing the transport ends it.
                self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.writer.close)
                return
            await super().protocol_send(event)

        async def _close(self) -> None:
            if self._linger_timer is not None:
                self._linger_timer.cancel()
            # The peer may be gone ("not connected"): then nothing is left to close.
            with contextlib.suppress(OSError):
                await super()._close()

        async def _read_data(self) -> None:
            dropped = 0
            while not self.reader.at_eof():
                timeout = self.config.read_timeout
                if self._linger_until is not None:
                    timeout = self._linger_until - time.monotonic()
                    if timeout <= 0 or dropped > LINGER_BYTES:
                        break
                try:
                    data = await asyncio.wait_for(self.reader.read(MAX_RECV), timeout)
                except (ConnectionError, OSError, TimeoutError):
                    break
                if self._linger_until is not None:
                    dropped += len(data)
                    continue
                await self.protocol.handle(RawData(data))
            await self.protocol.handle(Closed())
            # The client's end is closed: do not wait for the keep-alive timer to close ours.
            await self.idle_task.stop()

    hypercorn_h11.HTTPStream = _HTTPStream
    hypercorn_protocol.H11Protocol = _H11Protocol
    hypercorn_run.TCPServer = _TCPServer
    return True
