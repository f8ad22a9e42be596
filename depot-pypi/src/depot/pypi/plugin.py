"""Registers the pypi ecosystem with depot: its routes under /python, its table, `depot python`."""

from __future__ import annotations

import html
from collections.abc import Sequence

import click
from depot.core import Depot, Ecosystem, hookimpl
from depot.core.database import Schema
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount

ECOSYSTEM = Ecosystem(name="pypi", prefix="/python", title="Python package index")


@hookimpl
def depot_ecosystems() -> list[Ecosystem]:
    return [ECOSYSTEM]


@hookimpl
def depot_routes(depot: Depot) -> Sequence[BaseRoute]:
    from depot.pypi.routes import routes

    return [Mount(ECOSYSTEM.prefix, routes=routes(depot.context(ECOSYSTEM.name)))]


@hookimpl
def depot_serve_options() -> Sequence[click.Option]:
    from depot.core.settings import option

    return [
        option(
            ["--pypi-upstream"],
            multiple=True,
            default=(),
            metavar="URL",
            help="Simple index to fetch projects from when nothing is uploaded here under their "
            "name (e.g. https://pypi.org/simple/); repeatable, tried in order; verified, cached.",
        )
    ]


@hookimpl
def depot_schemas() -> Sequence[Schema]:
    from depot.pypi.schema import SCHEMA

    return [SCHEMA]


@hookimpl
def depot_commands() -> Sequence[click.Command]:
    from depot.pypi.cli import python

    return [python]


@hookimpl
def depot_catalogs(depot: Depot) -> Sequence[object]:
    from depot.pypi.catalog import PypiCatalog

    return [PypiCatalog(depot.context(ECOSYSTEM.name))]


@hookimpl
def depot_package_pages(depot: Depot) -> Sequence[object]:
    from depot.pypi.pages import PypiPages

    return [PypiPages(depot.context(ECOSYSTEM.name))]


@hookimpl
def depot_blob_references(depot: Depot) -> Sequence[object]:
    from depot.pypi.delete import PypiBlobReferences

    return [PypiBlobReferences(depot.context(ECOSYSTEM.name))]


@hookimpl
def depot_cached_content(depot: Depot) -> Sequence[object]:
    from depot.pypi.retention import PypiCachedContent

    return [PypiCachedContent(depot.context(ECOSYSTEM.name))]


@hookimpl
def depot_index_sections(depot: Depot, request: Request) -> Sequence[object]:
    from depot.core.pages import Section

    ctx = depot.context(ECOSYSTEM.name)
    index = html.escape(ctx.external_url(request, "/simple/"))
    upload = html.escape(ctx.external_url(request, "/"))
    body = (
        f"<pre>pip install --index-url {index} PACKAGE\n"
        f"uv pip install --index-url {index} PACKAGE\n"
        f"twine upload --repository-url {upload} dist/*</pre>"
    )
    if depot.settings.auth_file:
        # Both clients take the token as the password of the __token__ user.
        scheme, _, rest = ctx.external_url(request, "/simple/").partition("://")
        body += (
            "<p>With authentication (<code>TOKEN=$(depot token)</code>):</p>"
            f"<pre>pip install --index-url "
            f"{html.escape(scheme)}://__token__:$TOKEN@{html.escape(rest)} PACKAGE\n"
            f"twine upload --repository-url {upload} -u __token__ -p $TOKEN dist/*</pre>"
        )
    return [Section("Use it with pip, uv and twine", body, ecosystem=ECOSYSTEM.name)]
