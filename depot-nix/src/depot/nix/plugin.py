"""Registers the nix ecosystem: routes under /nix, its tables, the `depot nix` commands."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import click
from depot.core import Depot, Ecosystem, hookimpl
from depot.core.database import Schema
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount

ECOSYSTEM = Ecosystem(name="nix", prefix="/nix", title="Nix binary cache")


@hookimpl
def depot_ecosystems() -> list[Ecosystem]:
    return [ECOSYSTEM]


@hookimpl
def depot_routes(depot: Depot) -> Sequence[BaseRoute]:
    from depot.nix.routes import routes

    return [Mount(ECOSYSTEM.prefix, routes=routes(depot.context(ECOSYSTEM.name)))]


@hookimpl
def depot_serve_options() -> Sequence[click.Option]:
    from depot.core.settings import option

    return [
        option(
            ["--nix-local-store"],
            is_flag=False,
            flag_value="/",
            default=None,
            metavar="[ROOT]",
            help="Also serve the valid paths of the Nix store under ROOT (default /: the host's "
            "own /nix/store), read-only, NARs made on the fly.",
        ),
        option(
            ["--nix-upstream"],
            multiple=True,
            default=(),
            metavar="URL",
            help="Binary cache to fetch paths from when they are not held here (e.g. "
            "https://cache.nixos.org); repeatable, tried in order; needs --nix-upstream-key.",
        ),
        option(
            ["--nix-upstream-key"],
            multiple=True,
            default=(),
            metavar="NAME:BASE64",
            help="Public key an upstream narinfo must carry a valid signature of; repeatable.",
        ),
        option(
            ["--nix-priority"],
            type=click.IntRange(min=0),
            default=30,
            show_default=True,
            help="Priority in nix-cache-info (lower is tried first by nix).",
        ),
        option(
            ["--nix-want-mass-query/--no-nix-want-mass-query"],
            default=True,
            show_default=True,
            help="WantMassQuery in nix-cache-info.",
        ),
    ]


@hookimpl
def depot_schemas() -> Sequence[Schema]:
    from depot.nix.tables import SCHEMA

    return [SCHEMA]


@hookimpl
def depot_startup(depot: Depot) -> None:
    """Refuse to start with a bad ``--private-key``: one line now, not a 500 later."""
    if depot.settings.private_key is not None:
        from depot.nix.keys import load_secret_key

        load_secret_key(depot.settings.private_key)


@hookimpl
def depot_catalogs(depot: Depot) -> Sequence[object]:
    from depot.nix.catalog import NixCatalog

    return [NixCatalog(depot.context(ECOSYSTEM.name))]


@hookimpl
def depot_package_pages(depot: Depot) -> Sequence[object]:
    from depot.nix.pages import NixPages

    return [NixPages(depot.context(ECOSYSTEM.name))]


@hookimpl
def depot_blob_references(depot: Depot) -> Sequence[object]:
    from depot.nix.store import NixBlobReferences

    return [NixBlobReferences(depot.context(ECOSYSTEM.name))]


@hookimpl
def depot_cached_content(depot: Depot) -> Sequence[object]:
    from depot.nix.retention import NixCachedContent

    return [NixCachedContent(depot.context(ECOSYSTEM.name))]


@hookimpl
def depot_index_sections(depot: Depot, request: Request) -> Sequence[object]:
    """How to point nix at this cache, with the public key when the depot signs."""
    import html

    from depot.core.pages import Section
    from depot.nix.keys import Signer

    cache = html.escape(depot.context(ECOSYSTEM.name).external_url(request))
    lines = [f"substituters = {cache} https://cache.nixos.org"]
    key = Signer(depot.settings.private_key).key if depot.settings.private_key else None
    if key is not None:
        lines.append(f"trusted-public-keys = {html.escape(str(key.public_key()))}")
    body = (
        "<p>nix.conf:</p><pre>" + "\n".join(lines) + "</pre>"
        f"<pre>nix copy --to '{cache}?compression=zstd' ./result\n"
        f"depot nix push {cache} --store-paths ./result</pre>"
    )
    if depot.settings.auth_file:
        url = depot.context(ECOSYSTEM.name).external_url(request)
        host = html.escape(urlsplit(url).hostname or "")
        body += (
            "<p>With authentication, give nix a netrc file holding a token "
            "(or run <code>depot proxy</code> and point nix at it):</p>"
            f'<pre>echo "machine {host} password $(depot token)" &gt; ~/.config/nix/netrc\n'
            "# nix.conf\nnetrc-file = ~/.config/nix/netrc</pre>"
        )
    return [Section("Use it with nix", body, ecosystem=ECOSYSTEM.name)]


@hookimpl
def depot_commands() -> Sequence[click.Command]:
    from depot.nix.cli import nix

    return [nix]
