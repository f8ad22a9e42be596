"""Registers the nix ecosystem with depot: its routes under /nix and the `depot nix` commands."""

from __future__ import annotations

from collections.abc import Sequence

import click
from starlette.routing import BaseRoute, Mount

from depot.core import Depot, Ecosystem, hookimpl

ECOSYSTEM = Ecosystem(name="nix", prefix="/nix", title="Nix binary cache")


@hookimpl
def depot_ecosystems() -> list[Ecosystem]:
    return [ECOSYSTEM]


@hookimpl
def depot_routes(depot: Depot) -> Sequence[BaseRoute]:
    from depot.nix.routes import routes

    return [Mount(ECOSYSTEM.prefix, routes=routes(depot.context(ECOSYSTEM.name)))]


@hookimpl
def depot_commands() -> Sequence[click.Command]:
    from depot.nix.cli import nix

    return [nix]
