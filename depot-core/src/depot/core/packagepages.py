"""A page per package: ``/-/browse/<ecosystem>/<name>``, what a person reads before installing.

An ecosystem contributes a :class:`PackagePages` through the ``depot_package_pages`` hook; for a
name it returns a :class:`PackagePage` (title, summary, install lines, facts, sections) built
from :mod:`depot.core.markup`, and the core lays it out in depot's one page style. Readmes reach
the page only through :func:`depot.core.markup.readme`, which sanitises them.

Where content came from is a :class:`Provenance` (published or pushed here, or cached from which
upstream and when): an ecosystem hands one for the whole package (``PackagePage.provenance``,
which the core shows under the title) and may label each version, file or path with
:func:`provenance_label`, so every ecosystem says it in the same words and style.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from depot.core.markup import Markup, definitions, escape, pre

if TYPE_CHECKING:
    from starlette.requests import Request


@dataclass(frozen=True)
class Provenance:
    """Where a package, version, file or store path came from.

    ``kind`` is one of :data:`PUBLISHED` (an upload through the ecosystem's publish protocol),
    :data:`PUSHED` (``depot ... push`` or ``nix copy --to``), :data:`CACHED` (fetched from
    ``upstream`` and verified, at ``at``, POSIX seconds) or :data:`AT_UPSTREAM` (listed by
    ``upstream`` in metadata depot holds, its bytes not fetched yet: the first install fetches
    them). ``at`` of published or pushed content is when it arrived, if known.
    """

    kind: str
    upstream: str | None = None
    at: float | None = None

    @property
    def cached(self) -> bool:
        """True for content that came from an upstream (held or only listed)."""
        return self.kind in (CACHED, AT_UPSTREAM)


#: The kinds of :class:`Provenance`.
PUBLISHED, PUSHED, CACHED, AT_UPSTREAM = "published", "pushed", "cached", "at-upstream"


def _stamp(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at)) if at is not None else ""


@lru_cache(maxsize=1024)
def provenance_label(provenance: Provenance) -> Markup:
    """A short label for a table cell: ``published here``, ``pushed here``, ``cached from
    <upstream> <when>``, ``at <upstream>, not fetched yet``. Cached: a table of a thousand
    versions repeats a handful of labels."""
    kind = provenance.kind
    upstream = escape(provenance.upstream or "an upstream")
    when = escape(_stamp(provenance.at))
    if kind == CACHED:
        fetched = f", fetched {when}" if when else ""
        return Markup(f'<span class="provenance cached">cached from {upstream}{fetched}</span>')
    if kind == AT_UPSTREAM:
        return Markup(f'<span class="provenance upstream">at {upstream}, not fetched yet</span>')
    text = {PUBLISHED: "published here", PUSHED: "pushed here"}.get(kind, kind)
    on = f" {when}" if when else ""
    return Markup(f'<span class="provenance local">{escape(text)}{on}</span>')


def provenance_note(provenance: Provenance) -> Markup:
    """The sentence under a package's title that says where the package as a whole came from."""
    if provenance.cached:
        when = _stamp(provenance.at)
        fetched = f" (metadata fetched {when})" if when else ""
        return Markup(
            '<p class="provenance-note cached"><strong>Cached from {}</strong>{}: nothing of '
            "it was published to this depot; depot serves what it fetched and verified, and "
            "fetches the rest on first install.</p>"
        ).format(provenance.upstream or "an upstream", fetched)
    how = "Pushed" if provenance.kind == PUSHED else "Published"
    return Markup(
        '<p class="provenance-note local"><strong>{} to this depot</strong>: served from depot '
        "only, never merged with an upstream's versions of the same name.</p>"
    ).format(how)


@dataclass(frozen=True)
class PageSection:
    """A titled part of a package page; ``body`` is Markup built with :mod:`depot.core.markup`."""

    title: str
    body: Markup
    id: str = ""


@dataclass(frozen=True)
class PackagePage:
    """What a package page shows, top to bottom.

    ``install`` holds (what, command) pairs shown as lines to copy; ``facts`` (label, text or
    Markup) pairs under the title; ``sections`` follow in order (versions, files, readme, ...).
    ``provenance`` says where the package came from (:func:`provenance_note`, under the
    summary); None for an ecosystem without upstreams, which says nothing about it.
    """

    title: str
    summary: str = ""
    install: Sequence[tuple[str, str]] = field(default_factory=tuple)
    facts: Sequence[tuple[str, object]] = field(default_factory=tuple)
    sections: Sequence[PageSection] = field(default_factory=tuple)
    provenance: Provenance | None = None


class PackagePages(Protocol):
    """An ecosystem's package pages.

    An ecosystem whose every write calls ``ctx.changes.notify`` (:mod:`depot.core.changes`) sets
    ``follows_changes = True``: the core then keeps each rendered page in memory until the
    ecosystem's generation moves (any change in it, since a page also shows other packages:
    dependencies, referrers), so a page costs no database query until something is written,
    here or on another replica. Without it every request renders the page afresh. A pull-through
    cache's writes (a fetched packument, file or narinfo, an eviction) notify too, so a page
    built from cached content follows them like it follows publishes.
    """

    ecosystem: str

    async def page(self, name: str, request: Request) -> PackagePage | None:
        """The page of ``name`` (the path after ``/-/browse/<ecosystem>/``), or None if this
        depot holds no such package. May raise :class:`depot.core.errors.HTTPError`."""
        ...


def package_page_url(base: str, ecosystem: str, name: str) -> str:
    """The absolute URL of a package's page; ``base`` is :func:`depot.core.http.external_base`.

    Scoped npm names keep their ``@`` and ``/`` (``/-/browse/npm/@scope/name``).
    """
    return f"{base}/-/browse/{quote(ecosystem, safe='')}/{quote(name, safe='@/+:')}"


def render(found: PackagePage) -> Markup:
    """The body of a package page (without the surrounding document)."""
    parts = [Markup("<h1>{}</h1>").format(found.title)]
    if found.summary:
        parts.append(Markup('<p class="summary">{}</p>').format(found.summary))
    if found.provenance is not None:
        parts.append(provenance_note(found.provenance))
    if found.install:
        lines = [
            Markup('<div class="install"><div class="muted">{}</div>{}</div>').format(
                what, pre(command)
            )
            for what, command in found.install
        ]
        parts.append(Markup("").join(lines))
    parts.append(definitions(found.facts))
    for section in found.sections:
        ident = Markup(' id="{}"').format(section.id) if section.id else Markup()
        parts.append(
            Markup("<section{}><h2>{}</h2>{}</section>").format(ident, section.title, section.body)
        )
    return escape("").join(parts)
