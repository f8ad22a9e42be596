"""Deadlines for request bodies: a body that stalls is answered 408 instead of held forever.

Each wait for the next piece of a request body may last ``--request-body-timeout`` seconds
(:class:`depot.core.metrics.ObserverMiddleware` waits under :meth:`BodyDeadlines.watch`). When the
server is asked to stop, :meth:`BodyDeadlines.shorten` brings every pending wait, and every later
one, down to :data:`SHUTDOWN_GRACE`: a client still sending finishes its upload, one that stalls
gets its 408 at once instead of holding the shutdown for the whole graceful timeout and then being
cancelled (which hypercorn answered 500 and logged as a traceback).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from depot.core.errors import HTTPError

#: After SIGTERM, how long a request body may go without a byte.
SHUTDOWN_GRACE = 2.0


class BodyDeadlines:
    """The body timeout of one depot, and the waits running under it."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.stopping = False
        self._waiting: set[asyncio.Timeout] = set()

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[None]:
        """Wait for one piece of a body; 408 with ``Connection: close`` when it does not come."""
        limit = SHUTDOWN_GRACE if self.stopping else self.timeout
        try:
            async with asyncio.timeout(limit) as deadline:
                self._waiting.add(deadline)
                try:
                    yield
                finally:
                    self._waiting.discard(deadline)
        except TimeoutError:
            reason = (
                "the server is stopping and the request body stalled"
                if self.stopping
                else f"the request body stalled: no bytes for {limit:g} s"
            )
            raise HTTPError(408, reason, {"Connection": "close"}) from None

    def shorten(self) -> None:
        """The server is stopping: every wait, now and later, ends within :data:`SHUTDOWN_GRACE`."""
        self.stopping = True
        when = asyncio.get_running_loop().time() + SHUTDOWN_GRACE
        for deadline in self._waiting:
            current = deadline.when()
            if current is None or current > when:
                deadline.reschedule(when)
