"""A streaming NAR validator that also writes the ``.ls`` listing.

The NAR format (``src/libutil/archive.cc``): every token is a string, an 8-byte little-endian
length followed by the bytes and zero padding to a multiple of 8. After the magic
``nix-archive-1`` comes one node::

    ( type regular [executable ""] contents <bytes> )
    ( type symlink target <target> )
    ( type directory { entry ( name <name> node <node> ) } )

Directory entries are strictly sorted, and names are never empty, ``.``, ``..`` or contain ``/``
or NUL. :class:`NarValidator` is fed the NAR in chunks of any size (file contents are never
buffered), raises :class:`NarError` at the first violation, and emits the listing that Nix's
``listNar`` writes (``{"version":1,"root":...}``, ``narOffset`` for regular files) as JSON text
fragments, so neither the NAR nor its listing is ever held whole.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Generator

MAGIC = b"nix-archive-1"
#: Longest token (name, symlink target, keyword) accepted; Nix's own limit for names is 255.
MAX_TOKEN = 64 * 1024
MAX_DEPTH = 256

_READ, _CONTENTS = 0, 1
# The grammar generator yields what it wants next: (_READ, n) for n bytes handed back whole,
# or (_CONTENTS, n) for n bytes of file contents that are only counted and hashed by the caller.
_Want = tuple[int, int]
_Grammar = Generator[_Want, bytes, None]


class NarError(ValueError):
    """The bytes are not a valid NAR."""


class NarValidator:
    """Feed NAR bytes with :meth:`feed`, then call :meth:`finish`.

    ``size`` and ``sha256`` cover every byte fed; ``listing`` receives JSON fragments of the
    ``.ls`` document in order (pass None to skip the listing).
    """

    def __init__(self, listing: Callable[[str], None] | None = None) -> None:
        self.size = 0
        self.sha256 = hashlib.sha256()
        self._emit = listing or (lambda _text: None)
        self._buffer = bytearray()
        self._grammar = self._archive()
        self._want: _Want | None = next(self._grammar)

    def feed(self, data: bytes) -> None:
        """Check the next bytes of the NAR."""
        if not data:
            return
        self.sha256.update(data)
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self._want is None:
                raise NarError(f"trailing data after the end of the NAR at byte {self.size + pos}")
            kind, n = self._want
            if kind == _CONTENTS:
                take = min(n, len(view) - pos)
                pos += take
                if take < n:
                    self._want = (_CONTENTS, n - take)
                    break
                self._advance(b"")
            else:
                take = min(n - len(self._buffer), len(view) - pos)
                self._buffer += view[pos : pos + take]
                pos += take
                if len(self._buffer) < n:
                    break
                token = bytes(self._buffer)
                self._buffer.clear()
                self._advance(token)
        self.size += len(data)

    def _advance(self, token: bytes) -> None:
        try:
            self._want = self._grammar.send(token)
        except StopIteration:
            self._want = None

    def finish(self) -> None:
        """Raise NarError unless the whole NAR has been fed."""
        if self._want is not None:
            raise NarError(f"NAR is truncated after {self.size} bytes")

    @property
    def done(self) -> bool:
        return self._want is None

    # The grammar, one generator per production. ``offset`` tracks the NAR position for narOffset.

    def _archive(self) -> _Grammar:
        self._offset = 0
        magic = yield from self._string()
        if magic != MAGIC:
            raise NarError("not a NAR: the magic 'nix-archive-1' is missing")
        self._emit('{"version":1,"root":')
        yield from self._node(0)
        self._emit("}")

    def _raw(self, n: int) -> Generator[_Want, bytes, bytes]:
        data = yield (_READ, n)
        self._offset += n
        return data

    def _string(self, limit: int = MAX_TOKEN) -> Generator[_Want, bytes, bytes]:
        (length,) = struct.unpack("<Q", (yield from self._raw(8)))
        if length > limit:
            raise NarError(f"NAR string of {length} bytes at byte {self._offset} is too long")
        padded = (length + 7) & ~7
        data = (yield from self._raw(padded)) if padded else b""
        if any(data[length:]):
            raise NarError(f"non-zero padding in NAR at byte {self._offset}")
        return data[:length]

    def _expect(self, *words: bytes) -> Generator[_Want, bytes, None]:
        for word in words:
            got = yield from self._string(64)
            if got != word:
                raise NarError(
                    f"expected {word.decode()!r} in NAR at byte {self._offset}, got {got[:32]!r}"
                )

    def _node(self, depth: int) -> _Grammar:
        if depth > MAX_DEPTH:
            raise NarError("NAR directories nest too deeply")
        yield from self._expect(b"(", b"type")
        kind = yield from self._string(64)
        if kind == b"regular":
            yield from self._regular()
        elif kind == b"symlink":
            yield from self._expect(b"target")
            target = yield from self._string(4096)
            if not target or b"\0" in target:
                raise NarError("NAR symlink target is empty or contains NUL")
            yield from self._expect(b")")
            self._emit('{"type":"symlink","target":' + _json_text(target) + "}")
        elif kind == b"directory":
            yield from self._directory(depth)
        else:
            raise NarError(f"unknown NAR node type {kind[:32]!r}")

    def _regular(self) -> _Grammar:
        tag = yield from self._string(64)
        executable = tag == b"executable"
        if executable:
            marker = yield from self._string(64)
            if marker != b"":
                raise NarError("NAR 'executable' must be followed by an empty string")
            tag = yield from self._string(64)
        if tag != b"contents":
            raise NarError(f"expected 'contents' in NAR regular file, got {tag[:32]!r}")
        (length,) = struct.unpack("<Q", (yield from self._raw(8)))
        start = self._offset
        if length:
            yield (_CONTENTS, length)
            self._offset += length
        padding = (8 - length % 8) % 8
        if padding and any((yield from self._raw(padding))):
            raise NarError(f"non-zero padding after file contents at byte {self._offset}")
        yield from self._expect(b")")
        self._emit(
            f'{{"type":"regular","size":{length}'
            + (',"executable":true' if executable else "")
            + f',"narOffset":{start}}}'
        )

    def _directory(self, depth: int) -> _Grammar:
        self._emit('{"type":"directory","entries":{')
        previous: bytes | None = None
        while True:
            tag = yield from self._string(64)
            if tag == b")":
                break
            if tag != b"entry":
                raise NarError(f"expected 'entry' or ')' in NAR directory, got {tag[:32]!r}")
            yield from self._expect(b"(", b"name")
            name = yield from self._string(255)
            if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
                raise NarError(f"invalid file name {name!r} in NAR")
            if previous is not None and name <= previous:
                raise NarError(f"NAR directory entries not sorted: {name!r} after {previous!r}")
            yield from self._expect(b"node")
            self._emit(("," if previous is not None else "") + _json_text(name) + ":")
            previous = name
            yield from self._node(depth + 1)
            yield from self._expect(b")")
        self._emit("}}")


def _json_text(raw: bytes) -> str:
    return json.dumps(raw.decode("utf-8", "surrogateescape"), ensure_ascii=True).replace(
        "\\udc", "\\u00"
    )


def validate(data: bytes) -> tuple[int, str, str]:
    """Validate a whole NAR held in memory (tests, small files): size, sha256 hex, listing."""
    parts: list[str] = []
    validator = NarValidator(parts.append)
    validator.feed(data)
    validator.finish()
    return validator.size, validator.sha256.hexdigest(), "".join(parts)
