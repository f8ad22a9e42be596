"""Rendered documents kept in memory while their topic's generation stands.

A document that changes only when something is written (a packument, a simple index page, a
narinfo) is rendered once and kept as bytes with its ETag. :class:`RenderedCache` pairs each
rendering with the generation (:mod:`depot.core.changes`) it was made under, so a hot request
costs a dictionary lookup and no database query, and a conditional request is answered 304
without rendering anything (through :class:`depot.core.http.Validators`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

#: Total bytes of rendered documents kept per cache; the least recently used go first.
DEFAULT_BUDGET = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered document: its bytes and a strong ETag derived from them.

    ``raw_headers`` holds the header lists of its answers, built once
    (``depot.core.http.document_response(..., prebuilt=rendered.raw_headers)``).
    """

    body: bytes
    etag: str
    raw_headers: dict[Any, list[tuple[bytes, bytes]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def of(cls, body: bytes) -> Rendered:
        return cls(body, etag_of(body))


def etag_of(body: bytes) -> str:
    """A strong ETag of ``body``: the same in every process and replica that renders it."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


class RenderedCache:
    """A byte-bounded LRU of :class:`Rendered` documents, each with its generation."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self.used = 0
        self._entries: OrderedDict[Hashable, tuple[int, Rendered]] = OrderedDict()

    def get(self, key: Hashable, generation: int) -> Rendered | None:
        """The rendering under ``key`` if it was made under ``generation``, else None."""
        entry = self._entries.get(key)
        if entry is None or entry[0] != generation:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, generation: int, rendered: Rendered) -> Rendered:
        """Keep ``rendered`` (made under ``generation``, read *before* rendering) and return it."""
        size = len(rendered.body)
        if size > self.budget:
            return rendered
        old = self._entries.pop(key, None)
        if old is not None:
            self.used -= len(old[1].body)
        self._entries[key] = (generation, rendered)
        self.used += size
        while self.used > self.budget:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.used -= len(evicted.body)
        return rendered

    def __len__(self) -> int:
        return len(self._entries)
