"""Running depot's start-up and shutdown inside a host application's lifespan.

Starlette never forwards lifespan events to a mounted app (encode/starlette#649), so a depot
mounted with ``Mount("/pkgs", app=create_app(...))`` starts on its first request and closes when
the event loop winds down. A host that wants start-up errors before it takes traffic, and an
orderly close when its own lifespan ends, enters :func:`running` (or passes :func:`lifespan`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from depot.core.app import Depot
    from starlette.applications import Starlette


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Depot]:
    """Start the depot of ``app`` (made by ``create_app``) and close it when the block exits.

    Inside a host's own lifespan: ``async with depot.core.running(depot_app): yield``.
    """
    depot: Depot = app.state.depot
    await depot.startup()
    try:
        yield depot
    finally:
        await depot.shutdown()


def lifespan(*apps: Starlette) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan for a host with none of its own that runs these depots:
    ``Starlette(routes=..., lifespan=depot.core.lifespan(depot_app))``."""

    @asynccontextmanager
    async def run(_host: Any) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for app in apps:
                await stack.enter_async_context(running(app))
            yield

    return run
