"""A page per package: ``/-/browse/<ecosystem>/<name>``, what a person reads before installing.

An ecosystem contributes a :class:`PackagePages` through the ``depot_package_pages`` hook; for a
name it returns a :class:`PackagePage` (title, summary, install lines, facts, sections) built
from :mod:`depot.core.markup`, and the core lays it out in depot's one page style. Readmes reach
the page only through :func:`depot.core.markup.readme`, which sanitises them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from depot.core.markup import Markup, definitions, escape, pre

if TYPE_CHECKING:
    from starlette.requests import Request


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
    """

    title: str
    summary: str = ""
    install: Sequence[tuple[str, str]] = field(default_factory=tuple)
    facts: Sequence[tuple[str, object]] = field(default_factory=tuple)
    sections: Sequence[PageSection] = field(default_factory=tuple)


class PackagePages(Protocol):
    """An ecosystem's package pages.

    An ecosystem whose every write calls ``ctx.changes.notify`` (:mod:`depot.core.changes`) sets
    ``follows_changes = True``: the core then keeps each rendered page in memory until the
    ecosystem's generation moves (any change in it, since a page also shows other packages:
    dependencies, referrers), so a page costs no database query until something is written,
    here or on another replica. Without it every request renders the page afresh.
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
