"""Routing by first path segment (depot.core.routing) answers exactly as Starlette's scan would:
the first matching route in declared order, 405 for a path matched with another method, slash
redirects and 404s; mounts inside are routed the same way."""

from __future__ import annotations

import httpx
from depot.core.routing import SegmentRouter
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route


def answer(text: str):  # noqa: ANN201 - an endpoint factory
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{text} {dict(request.path_params)} {request.scope['root_path']}")

    return endpoint


def router() -> SegmentRouter:
    inner = [
        Route("/-/ping", answer("ping")),
        Route("/-/package/{path:path}", answer("tags"), methods=["PUT"]),
        Route("/{path:path}", answer("catch-all"), methods=["GET", "PUT"]),
    ]
    return SegmentRouter(
        [
            Route("/", answer("index")),
            Route("/{name}.narinfo", answer("narinfo")),
            Route("/simple/", answer("simple")),
            Route("/simple/{project}/", answer("project")),
            Mount("/npm", routes=inner),
            Route("/nix/{rest:path}", answer("nix route")),
        ]
    )


async def get(path: str, method: str = "GET") -> httpx.Response:
    transport = httpx.ASGITransport(app=router())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, path)


async def test_routes_match_in_declared_order_with_their_parameters() -> None:
    assert (await get("/")).text == "index {} "
    assert (await get("/abc.narinfo")).text == "narinfo {'name': 'abc'} "
    assert (await get("/simple/")).text == "simple {} "
    assert (await get("/simple/demo/")).text == "project {'project': 'demo'} "
    assert (await get("/nix/x/y")).text == "nix route {'rest': 'x/y'} "


async def test_mounted_routes_are_routed_by_segment_too() -> None:
    assert isinstance(router().routes[4].app, SegmentRouter)
    assert (await get("/npm/-/ping")).text == "ping {} /npm"
    # "-" has a literal route, but the catch-all declared after it still gets what it misses.
    assert (await get("/npm/-/other")).text == "catch-all {'path': '-/other'} /npm"
    assert (await get("/npm/left-pad")).text == "catch-all {'path': 'left-pad'} /npm"
    assert (await get("/npm/-/package/x/dist-tags", "PUT")).text.startswith("tags")


async def test_what_no_route_takes_is_answered_as_starlette_would() -> None:
    assert (await get("/simple/demo/", "POST")).status_code == 405  # matched, other method
    assert (await get("/npm/x", "DELETE")).status_code == 405
    redirect = await get("/simple/demo")
    assert redirect.status_code == 307 and redirect.headers["location"] == "http://t/simple/demo/"
    assert (await get("/elsewhere")).status_code == 404
