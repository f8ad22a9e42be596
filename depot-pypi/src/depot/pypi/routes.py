"""Routes of the Python package index."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from depot.core import EcosystemContext


def routes(ctx: EcosystemContext) -> list[BaseRoute]:
    async def simple_root(request: Request) -> Response:
        return HTMLResponse("<!DOCTYPE html><html><body></body></html>")

    return [Route("/simple/", simple_root, methods=["GET", "HEAD"])]
