"""Rendered project pages kept in memory, checked against the database on every request.

A project page with thousands of files costs far more to fetch and render than to send, and it
changes only when a file is added, removed or yanked. Each request asks the database for the
project's *validator* (file count, newest upload time, yank changes: one indexed aggregate query)
and reuses the rendered bytes while it is unchanged. The database stays the only source of truth,
so several ``depot serve`` processes sharing one database never serve a stale page, and the
validator doubles as the page's ETag.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable

#: Total bytes of rendered pages kept; the least recently used go first.
DEFAULT_BUDGET = 64 * 1024 * 1024


class PageCache:
    """A byte-bounded LRU of rendered pages, keyed by whatever identifies a rendering."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
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
        if len(body) > self.budget:
            return
        old = self._pages.pop(key, None)
        if old is not None:
            self.used -= len(old[1])
        self._pages[key] = (validator, body)
        self.used += len(body)
        while self.used > self.budget:
            _, (_, evicted) = self._pages.popitem(last=False)
            self.used -= len(evicted)


def etag(*parts: object) -> str:
    """A strong ETag for a rendering identified by ``parts`` (validator, media type, base URL)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()
    return f'"{digest}"'
