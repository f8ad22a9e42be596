"""Registers the npm ecosystem: routes under /npm, tables, `depot npm` commands, the / section."""

from __future__ import annotations

import html
from collections.abc import Sequence
from urllib.parse import urlsplit

import click
from depot.core import Depot, Ecosystem, hookimpl
from depot.core.database import Schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount

ECOSYSTEM = Ecosystem(name="npm", prefix="/npm", title="npm registry")


@hookimpl
def depot_ecosystems() -> list[Ecosystem]:
    return [ECOSYSTEM]


@hookimpl
def depot_routes(depot: Depot) -> Sequence[BaseRoute]:
    from depot.core.errors import HTTPError
    from depot.npm.login import explain_refusal
    from depot.npm.responses import error_response
    from depot.npm.routes import routes

    ctx = depot.context(ECOSYSTEM.name)

    def render_error(request: Request, exc: HTTPError) -> Response:
        return error_response(request, explain_refusal(ctx, request, exc))

    depot.set_error_renderer(ECOSYSTEM.name, render_error)
    return [Mount(ECOSYSTEM.prefix, routes=routes(ctx))]


@hookimpl
def depot_serve_options() -> Sequence[click.Option]:
    from depot.core.settings import option

    return [
        option(
            ["--npm-upstream"],
            default=None,
            metavar="URL",
            help="Registry to fetch packages from when nothing is published here under their "
            "name (e.g. https://registry.npmjs.org/); verified, cached, served from depot.",
        )
    ]


@hookimpl
def depot_schemas() -> Sequence[Schema]:
    from depot.npm.store import SCHEMA

    return [SCHEMA]


@hookimpl
def depot_catalogs(depot: Depot) -> Sequence[object]:
    from depot.npm.catalog import NpmCatalog

    return [NpmCatalog(depot.context(ECOSYSTEM.name))]


@hookimpl
def depot_package_pages(depot: Depot) -> Sequence[object]:
    from depot.npm.pages import NpmPages

    return [NpmPages(depot.context(ECOSYSTEM.name))]


@hookimpl
def depot_blob_references(depot: Depot) -> Sequence[object]:
    from depot.npm.store import NpmBlobReferences

    return [NpmBlobReferences(depot.context(ECOSYSTEM.name))]


@hookimpl
def depot_cached_content(depot: Depot) -> Sequence[object]:
    from depot.npm.retention import NpmCachedContent

    return [NpmCachedContent(depot.context(ECOSYSTEM.name))]


@hookimpl
def depot_commands() -> Sequence[click.Command]:
    from depot.npm.cli import npm

    return [npm]


@hookimpl
def depot_index_sections(depot: Depot, request: Request) -> Sequence[object]:
    from depot.core.pages import Section

    registry = depot.context(ECOSYSTEM.name).external_url(request, "/")
    parts = urlsplit(registry)
    body = (
        "<pre># .npmrc\n"
        f"registry={html.escape(registry)}\n"
        "# npm publish wants a token even when the depot is open\n"
        f"//{html.escape(parts.netloc + parts.path)}:_authToken=TOKEN\n\n"
        f"npm install --registry {html.escape(registry)} PACKAGE</pre>"
    )
    if not depot.settings.auth_file:
        body += (
            "<p>Or let npm write the token: any username and password log in to an open depot.</p>"
            f"<pre>npm login --registry {html.escape(registry)}</pre>"
        )
    else:
        body += (
            "<p>With authentication, the token is a JWT from your SSH key:</p>"
            f"<pre>npm config set //{html.escape(parts.netloc + parts.path)}:_authToken "
            '"$(depot token)"</pre>'
        )
    return [Section("Use it with npm", body, ecosystem=ECOSYSTEM.name)]
