"""The core's own pages: ``/`` (what this depot serves) and ``/-/health``."""

from __future__ import annotations

import html
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from depot.core.http import external_base

if TYPE_CHECKING:
    from depot.core.app import Depot


@dataclass(frozen=True)
class Section:
    """A part of the ``/`` page contributed by a plugin; ``body_html`` is already escaped."""

    title: str
    body_html: str


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>depot</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
code,pre{{background:#f4f4f4;padding:.1rem .3rem}}pre{{padding:.6rem;overflow-x:auto}}</style>
</head><body><h1>depot</h1>
<p>Nix, npm and Python packages served from one place.</p>
<h2>Ecosystems</h2><ul>{ecosystems}</ul>{sections}</body></html>
"""


async def index(request: Request) -> Response:
    depot: Depot = request.scope["depot"]
    base = external_base(request, depot.settings)
    items = "".join(
        f'<li><a href="{html.escape(base + e.prefix)}/">{html.escape(e.title)}</a> '
        f"<code>{html.escape(base + e.prefix)}</code></li>"
        for e in depot.ecosystems.values()
    ) or "<li>No ecosystem plugin is installed.</li>"
    sections = []
    for result in depot.plugins.hook.depot_index_sections(depot=depot, request=request):
        if inspect.isawaitable(result):
            result = await result
        sections.extend(result or ())
    body = "".join(f"<h2>{html.escape(s.title)}</h2>{s.body_html}" for s in sections)
    return HTMLResponse(_PAGE.format(ecosystems=items, sections=body))


async def health(request: Request) -> Response:
    """200 when the database answers, 503 otherwise: what a load balancer should probe."""
    depot: Depot = request.scope["depot"]
    try:
        await depot.database.fetch_val("SELECT 1")
    except Exception as exc:  # any failure of the backing service means "not healthy"
        return JSONResponse({"status": "unavailable", "reason": str(exc)[:200]}, status_code=503)
    return JSONResponse({"status": "ok", "ecosystems": sorted(depot.ecosystems)})
