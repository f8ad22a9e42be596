"""A page per package: ``/-/browse/<ecosystem>/<name>``, what a person reads before installing.

An ecosystem contributes a :class:`PackagePages` through the ``depot_package_pages`` hook; for a
name it returns a :class:`PackagePage` (title, summary, install lines, facts, sections) built
from :mod:`depot.core.markup`, and the core lays it out in depot's one page style. Readmes reach
the page only through :func:`depot.core.markup.readme`, which sanitises them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Sequence
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

    It may also define ``async def validator(self, name: str) -> Hashable | None``: a value from
    one cheap query that changes whenever the page of ``name`` would (a change serial, a count).
    The core then keeps the rendered page in memory while the validator is unchanged and answers
    ``If-None-Match`` with 304; the database stays the source of truth, so replicas sharing it
    never serve a stale page.
    """

    ecosystem: str

    async def page(self, name: str, request: Request) -> PackagePage | None:
        """The page of ``name`` (the path after ``/-/browse/<ecosystem>/``), or None if this
        depot holds no such package. May raise :class:`depot.core.errors.HTTPError`."""
        ...


class RenderedPages:
    """Rendered package pages kept per process: a byte-bounded LRU, each entry checked against
    its validator on every request (see :class:`PackagePages`)."""

    def __init__(self, budget: int = 32 * 1024 * 1024) -> None:
        self.budget = budget
        self.used = 0
        self._pages: OrderedDict[Hashable, tuple[Hashable, bytes]] = OrderedDict()

    def get(self, key: Hashable, validator: Hashable) -> bytes | None:
        entry = self._pages.get(key)
        if entry is None or entry[0] != validator:
            return None
        self._pages.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, validator: Hashable, body: bytes) -> None:
        if len(body) > self.budget // 4:
            return
        old = self._pages.pop(key, None)
        if old is not None:
            self.used -= len(old[1])
        self._pages[key] = (validator, body)
        self.used += len(body)
        while self.used > self.budget:
            _, (_, evicted) = self._pages.popitem(last=False)
            self.used -= len(evicted)


def etag(key: Hashable, validator: Hashable) -> str:
    """A strong ETag for one rendering (page, query, base URL) at one validator."""
    return '"' + hashlib.blake2b(repr((key, validator)).encode(), digest_size=12).hexdigest() + '"'


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
