"""A short-lived, per-process cache of narinfo text read from the local Nix store.

Uploaded narinfos follow the core's change notification (see ``routes``); a path of the local
store (``--nix-local-store``) changes outside depot, when the store is garbage-collected or a path
is built, so its narinfo is served for a few seconds at most. Absent paths are never cached here.
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
