"""Small artifacts kept in memory: a hot npm tarball or wheel is sent without opening a file.

Most downloads are small (an npm tarball, a pure-Python wheel), and for them opening, reading
and closing the blob (a thread hop each on the filesystem store, a request on S3) cost more than
sending the bytes. :class:`ArtifactMemory` keeps blobs of at most :data:`MAX_ITEM` bytes per
process, least recently used first out, within ``--artifact-memory`` bytes (32 MiB by default).
It is filled on first read.

It is keyed by the blob's key in the store, and only for keys whose bytes never change: an
ecosystem asks for it (``blob_response(..., memory=True)``) for content-addressed keys (a
wheel's ``sha256/...``) or keys unique per upload and never reused (an npm tarball's), so the
bytes under a key are always the right ones, even after the blob was collected. Whether the
artifact is still *there* is not this cache's question: the ecosystem answers it first, from its
rows or from a lookup kept current by the change notification (:mod:`depot.core.changes`), so
after an unpublish, a delete, a collection or an eviction the download is a 404 at once in the
writing process and within the bound in every other.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

#: Largest blob kept in memory: larger ones are streamed from the store every time.
MAX_ITEM = 1024 * 1024


@dataclass(slots=True)
class HeldArtifact:
    """A blob's bytes with what its responses say about it."""

    body: bytes
    etag: str | None
    modified: float | None
    #: Prebuilt ``http.response.start`` header lists of plain 200 answers, by what varies.
    raw_headers: dict[tuple[str, str | None, str | None], list[tuple[bytes, bytes]]] = field(
        default_factory=dict
    )


class ArtifactMemory:
    """A byte-bounded LRU of small immutable blobs, by their full key in the store."""

    def __init__(self, budget: int, max_item: int = MAX_ITEM) -> None:
        self.budget = budget
        self.max_item = min(max_item, budget)
        self.used = 0
        self._held: OrderedDict[str, HeldArtifact] = OrderedDict()

    def get(self, key: str) -> HeldArtifact | None:
        held = self._held.get(key)
        if held is not None:
            self._held.move_to_end(key)
        return held

    def fits(self, size: int) -> bool:
        return 0 <= size <= self.max_item

    def put(self, key: str, held: HeldArtifact) -> None:
        if not self.fits(len(held.body)):
            return
        old = self._held.pop(key, None)
        if old is not None:
            self.used -= len(old.body)
        self._held[key] = held
        self.used += len(held.body)
        while self.used > self.budget:
            _, dropped = self._held.popitem(last=False)
            self.used -= len(dropped.body)

    def discard(self, key: str) -> None:
        """Forget ``key`` (its blob was removed by this process); other processes keep theirs
        until it ages out, which is safe: the bytes under a key never change."""
        old = self._held.pop(key, None)
        if old is not None:
            self.used -= len(old.body)

    def __len__(self) -> int:
        return len(self._held)
