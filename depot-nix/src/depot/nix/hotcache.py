"""A short-lived, per-process cache of served narinfo text.

Every ``nix build`` against a cache asks for the same narinfos again and again (a CI fleet asks
for one closure from many machines), and each answer would otherwise cost a database round trip
and a signature. A published narinfo never changes except by gaining signatures, so an entry may
be served for a few seconds: this process drops it at once when it stores a signature, and another
replica's added signature shows up within ``ttl`` seconds. Absent paths are never cached, so a
path published anywhere is visible on the next request.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class HotCache:
    def __init__(self, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if time.monotonic() >= expires:
            del self._entries[key]
            return None
        return value

    def put(self, key: str, value: str) -> None:
        self._entries[key] = (time.monotonic() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)
