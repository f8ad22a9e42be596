"""A host Starlette application with depot mounted under ``/pkgs``.

Run it with ``hypercorn examples.embedded.app:app`` (or any ASGI server). Nothing but the ``Mount``
is needed: depot starts itself on the first request, because Starlette does not run the lifespan
of a mounted app, and every link it writes carries the ``/pkgs`` prefix.
"""

import os

from depot.core import create_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("host application; packages are under /pkgs/\n")


app = Starlette(
    routes=[
        Route("/", home),
        Mount(
            "/pkgs",
            app=create_app(store_path=os.environ.get("EMBEDDED_DEPOT_STORE", "depot-store")),
        ),
    ]
)
