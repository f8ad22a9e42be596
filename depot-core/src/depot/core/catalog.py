"""What an ecosystem shows people about what it holds: counts, sizes, newest uploads, search.

Plugins contribute a :class:`Catalog` through the ``depot_catalogs`` hook; the core renders the
``/`` page, the ``/-/browse/<ecosystem>`` pages and the stored-object gauges of ``/metrics`` from
it, so a third-party ecosystem gets all three by implementing two coroutines. Entries that name
a ``page`` link to the ecosystem's package pages (the ``depot_package_pages`` hook).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from depot.core.packagepages import CACHED, Provenance

if TYPE_CHECKING:
    from depot.core.held import HeldDocument


@dataclass(frozen=True)
class CatalogEntry:
    """One thing an ecosystem holds: an npm package, a Python project, a Nix store path.

    ``fields`` are extra (label, value) pairs shown on the browse page (versions, files,
    references, signatures); ``href`` is a path under the ecosystem's prefix, if it has one;
    ``page`` names the entry's package page (``/-/browse/<ecosystem>/<page>``, see
    :mod:`depot.core.packagepages`), which the ``/`` and browse pages link to when given.
    ``provenance`` (:class:`depot.core.packagepages.Provenance`) marks an entry depot holds only
    as a cache of an upstream: the browse page lists those apart, under their upstream. Entries
    without it are content published or pushed here.
    """

    name: str
    summary: str = ""
    size: int | None = None
    uploaded_at: datetime | None = None
    href: str | None = None
    fields: Sequence[tuple[str, str]] = field(default_factory=tuple)
    page: str | None = None
    provenance: Provenance | None = None


@dataclass(frozen=True)
class CatalogStats:
    """Totals for the ``/`` page and the ``depot_stored_*`` gauges."""

    objects: int
    bytes: int
    newest: Sequence[CatalogEntry] = field(default_factory=tuple)


class Catalog(Protocol):
    """An ecosystem's read-only view of its metadata."""

    ecosystem: str

    async def stats(self, newest: int = 5) -> CatalogStats:
        """Stored objects, their bytes, and the ``newest`` most recent uploads."""

    async def search(self, query: str, limit: int = 50) -> Sequence[CatalogEntry]:
        """Entries whose name contains ``query`` (all entries for an empty query).

        An ecosystem with a pull-through cache lists the names it holds only as cached after
        the published ones (``limit`` counts both), each with its ``provenance``; ``stats``
        (the ``/`` page's counts and newest uploads) counts published content only."""


def cached_entries(
    held: Sequence[HeldDocument],
    fetched: Mapping[str, tuple[int, int]],
    *,
    unit: str,
    href: Callable[[str], str],
) -> list[CatalogEntry]:
    """Entries for names held only as a cache of an upstream (their documents from
    ``ctx.held_documents.listed``), each under its upstream, with what was fetched so far:
    ``fetched`` maps a name to (artifacts, bytes), ``unit`` names them ("tarball(s)") and
    ``href`` gives a name's path under the ecosystem's prefix."""
    entries = []
    for document in held:
        count, size = fetched.get(document.name, (0, 0))
        entries.append(
            CatalogEntry(
                name=document.name,
                summary=f"{count} {unit} cached",
                size=size,
                uploaded_at=datetime.fromtimestamp(document.fetched_at, UTC),
                href=href(document.name),
                page=document.name,
                provenance=Provenance(CACHED, document.upstream, document.fetched_at),
            )
        )
    return entries
