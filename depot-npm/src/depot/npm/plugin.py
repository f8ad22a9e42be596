"""Registers the npm ecosystem with depot: its routes under /npm and the `depot npm` commands."""

from __future__ import annotations

from collections.abc import Sequence

import click
from starlette.routing import BaseRoute, Mount

from depot.core import Depot, Ecosystem, hookimpl

ECOSYSTEM = Ecosystem(name="npm", prefix="/npm", title="npm registry")


@hookimpl
def depot_ecosystems() -> list[Ecosystem]:
    return [ECOSYSTEM]


@hookimpl
def depot_routes(depot: Depot) -> Sequence[BaseRoute]:
    from depot.npm.routes import routes

    return [Mount(ECOSYSTEM.prefix, routes=routes(depot.context(ECOSYSTEM.name)))]


@hookimpl
def depot_commands() -> Sequence[click.Command]:
    from depot.npm.cli import npm

    return [npm]
