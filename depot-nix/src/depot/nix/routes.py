"""Routes of the Nix binary cache."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from depot.core import EcosystemContext


def routes(ctx: EcosystemContext) -> list[BaseRoute]:
    async def cache_info(request: Request) -> Response:
        body = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"
        return PlainTextResponse(body, media_type="text/x-nix-cache-info")

    return [Route("/nix-cache-info", cache_info, methods=["GET", "HEAD"])]
