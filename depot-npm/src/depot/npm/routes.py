"""Routes of the npm registry."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from depot.core import EcosystemContext


def routes(ctx: EcosystemContext) -> list[BaseRoute]:
    async def ping(request: Request) -> Response:
        return JSONResponse({})

    return [Route("/-/ping", ping, methods=["GET", "HEAD"])]
