"""A host Starlette application with depot mounted under ``/pkgs``.

Run it with ``hypercorn examples.embedded.app:app`` (or any ASGI server). The ``Mount`` is all
depot needs: it starts itself on the first request (Starlette does not run a mounted app's
lifespan) and closes when the server's event loop winds down, and every link it writes carries the
``/pkgs`` prefix. The ``lifespan=`` line is the one to add for start-up errors before the first
request and an orderly close when the host's lifespan ends; a host with a lifespan of its own
enters ``depot.core.running(depot_app)`` inside it instead.
"""

import os

from depot.core import create_app, lifespan
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("host application; packages are under /pkgs/\n")


depot_app = create_app(store_path=os.environ.get("EMBEDDED_DEPOT_STORE", "depot-store"))

routes = [
    Route("/", home),
    Mount("/pkgs", app=depot_app),
]

app = Starlette(routes=routes, lifespan=lifespan(depot_app))
