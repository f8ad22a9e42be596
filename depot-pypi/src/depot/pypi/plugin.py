"""Registers the pypi ecosystem with depot: its routes under /python and the `depot python` commands."""

from __future__ import annotations

from collections.abc import Sequence

import click
from starlette.routing import BaseRoute, Mount

from depot.core import Depot, Ecosystem, hookimpl

ECOSYSTEM = Ecosystem(name="pypi", prefix="/python", title="Python package index")


@hookimpl
def depot_ecosystems() -> list[Ecosystem]:
    return [ECOSYSTEM]


@hookimpl
def depot_routes(depot: Depot) -> Sequence[BaseRoute]:
    from depot.pypi.routes import routes

    return [Mount(ECOSYSTEM.prefix, routes=routes(depot.context(ECOSYSTEM.name)))]


@hookimpl
def depot_commands() -> Sequence[click.Command]:
    from depot.pypi.cli import python

    return [python]
