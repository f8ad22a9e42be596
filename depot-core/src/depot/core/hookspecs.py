"""The hooks through which every part of depot plugs in.

Depot's own ecosystems (depot-nix, depot-npm, depot-pypi) and its built-in parts (the ``fs`` blob
store, the open and SSH-key authenticators) implement these exactly as a third-party plugin would:
a plain module with ``@hookimpl`` functions, registered through the ``depot`` entry-point group.

pluggy passes arguments by name, so an implementation takes only the arguments it needs; hooks can
grow new arguments without breaking old plugins. Hooks are called with keyword arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Sequence

    import click
    from depot.core.app import Depot
    from depot.core.auth import Authenticator
    from depot.core.blobs import StorageBackend
    from depot.core.catalog import Catalog
    from depot.core.database import Schema
    from depot.core.ecosystem import Ecosystem
    from depot.core.packagepages import PackagePages
    from depot.core.reachability import BlobReferences
    from depot.core.settings import Settings
    from starlette.requests import Request
    from starlette.routing import BaseRoute

PROJECT = "depot"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def depot_ecosystems() -> Sequence[Ecosystem]:
    """Declare the package ecosystems a plugin serves.

    Called once when the app is created. Return a list of :class:`depot.core.ecosystem.Ecosystem`
    (name, URL prefix, title). The name scopes the ecosystem's blob store, its logger and its
    table names; the prefix is where its routes live (``/nix``). Depot's ``/`` page and
    ``depot plugins`` list what is declared here. Two plugins declaring one name is an error.
    """


@hookspec
def depot_routes(depot: Depot) -> Sequence[BaseRoute]:
    """Contribute Starlette routes.

    Called once when the app is created, before anything is connected: handlers must reach the
    database and blob store through ``depot.context(<ecosystem name>)`` at request time. Return a
    list of routes, normally one ``Mount`` at the ecosystem's prefix. Routes are matched in the
    order plugins are registered; the core's own routes (``/``, ``/-/health``) come first.
    """


@hookspec
def depot_commands() -> Sequence[click.Command]:
    """Contribute commands to the ``depot`` CLI.

    Called once when ``depot`` starts. Return click commands or groups (``depot nix ...`` is the
    group named ``nix``). Keep imports of heavy modules inside the command bodies so that
    ``depot --help`` stays fast.
    """


@hookspec
def depot_serve_options() -> Sequence[click.Option]:
    """Contribute options to ``depot serve`` (and keyword options to ``create_app``).

    Called once when ``depot`` starts and when ``create_app`` validates its options. Return click
    options such as ``--s3-bucket``; each gets its ``DEPOT_<NAME>`` environment variable and is
    readable as ``settings.extra["s3_bucket"]``. Storage backends and ecosystems use this for their
    own configuration so that the core names none of them.
    """


@hookspec
def depot_storage_backends() -> Sequence[StorageBackend]:
    """Register blob-store backends selectable with ``--storage-type``.

    Called when the app starts. Return :class:`depot.core.blobs.StorageBackend` descriptors: a name
    (``fs``, ``s3``) and an ``open(settings)`` coroutine that returns a ready
    :class:`depot.core.blobs.BlobStore` or raises :class:`depot.core.errors.ConfigError` with a
    one-line reason. The built-in ``fs`` backend is registered through this hook.
    """


@hookspec(firstresult=True)
def depot_authenticator(settings: Settings) -> Authenticator | None:
    """Choose how requests are authenticated.

    Called once when the app starts; the first non-None result wins. Return an
    :class:`depot.core.auth.Authenticator`, or None to let a later plugin decide. The built-in
    implementations are registered ``trylast``: SSH-key JWTs when ``--auth-file`` is given, and
    otherwise an authenticator that lets every request through.
    """


@hookspec
def depot_schemas() -> Sequence[Schema]:
    """Contribute SQL tables.

    Called when the app starts. Return :class:`depot.core.database.Schema` objects: a name, a
    version, SQLAlchemy Core tables and the migrations that bring an older version up to date.
    Depot creates missing tables, runs pending migrations in order and records each schema's
    version, on SQLite and PostgreSQL alike.
    """


@hookspec
def depot_startup(depot: Depot) -> None:
    """Run once the database and blob store are ready, before the first request is answered.

    May be a coroutine function. Use it for caches or background work that needs the database;
    register clean-up on ``depot.exit_stack`` (an ``AsyncExitStack`` closed at shutdown). A cache
    of rendered documents needs no task of its own: ``ctx.changes`` (:mod:`depot.core.changes`)
    tells every process when a document is stale, within a stated bound.
    """


@hookspec
def depot_artifact_stored(ecosystem: str, key: str, size: int, request: Request | None) -> None:
    """Event: an artifact was verified and stored (a NAR, a tarball, a wheel, ...).

    Called after the blob and the row pointing at it are committed. ``key`` is the blob key
    inside the ecosystem's namespace. Listeners (logs, metrics) must be quick and must not raise.
    """


@hookspec
def depot_artifact_served(ecosystem: str, key: str, size: int, request: Request | None) -> None:
    """Event: an artifact download started.

    Called when a blob response begins; ``size`` is the number of bytes the response will send.
    Listeners must be quick and must not raise.
    """


@hookspec
def depot_index_sections(depot: Depot, request: Request) -> Sequence[Any]:
    """Contribute sections to the ``/`` page.

    Called for each request to ``/``; may be a coroutine function. Return a list of
    :class:`depot.core.pages.Section` (title and HTML body, already escaped), for instance how to
    point the ecosystem's client at this depot.
    """


@hookspec
def depot_catalogs(depot: Depot) -> Sequence[Catalog]:
    """Contribute read-only views of what an ecosystem holds.

    Called once at start-up. Return :class:`depot.core.catalog.Catalog` objects; the core builds
    the ``/`` page statistics, the ``/-/browse/<ecosystem>`` search pages and the stored-object
    gauges of ``/metrics`` from them.
    """


@hookspec
def depot_package_pages(depot: Depot) -> Sequence[PackagePages]:
    """Contribute a page per package: ``/-/browse/<ecosystem>/<name>``.

    Called once, on the first package page requested. Return
    :class:`depot.core.packagepages.PackagePages` objects (an ``ecosystem`` name and an async
    ``page(name, request)`` that returns a :class:`depot.core.packagepages.PackagePage` or None
    for a name the ecosystem does not hold). The core lays the page out in depot's style, under
    the mount prefix and ``--base-url``; build its parts with :mod:`depot.core.markup`, whose
    ``readme()`` sanitises rendered readmes. Catalog entries with ``page`` set link to it.
    """


@hookspec
def depot_blob_references(depot: Depot) -> Sequence[BlobReferences]:
    """Report which blob keys an ecosystem's rows hold, so the garbage collector keeps them.

    Called once, when the first collection (``depot gc``, ``--gc-interval``) or removal needs
    it. Return :class:`depot.core.reachability.BlobReferences` objects: an ``ecosystem`` name and
    ``async referenced(keys)``, which answers, for a batch of at most 1,000 keys of that
    ecosystem's blob namespace, the ones some row points at (one indexed ``IN`` query per key
    column keeps a store of any size cheap). Blobs of an ecosystem that returns none here are
    never collected. Rows must come to point at existing blobs inside
    ``ctx.reference_blobs(...)``, so that a collection never removes a blob a row is about to
    name.
    """


@hookspec
def depot_cached_content(depot: Depot) -> Sequence[Any]:
    """Let the core evict an ecosystem's cached (upstream-fetched) content.

    Called at each collection when ``--cache-max-size`` or ``--cache-max-age`` is set. Return
    :class:`depot.core.retention.CachedContent` objects: an ``ecosystem`` name and
    ``async evict(items)``, which removes those items (rows, then ``ctx.release_blobs``). Items
    are what the ecosystem declared with ``ctx.cache_stored(item, size)``; use is recorded with
    ``ctx.record_use(item)`` (batched, no database write per request). Published content is
    never declared, so it is never evicted.
    """
