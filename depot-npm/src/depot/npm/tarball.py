"""Reading ``package.json`` out of a gzipped npm tarball as its bytes stream past.

A registry must check that a tarball's ``package.json`` names the package and version it is
published as, without holding the tarball in memory or writing it twice. :class:`PackageJsonReader`
is fed the compressed bytes in chunks (the same chunks that go to the blob store), decompresses
incrementally and walks the tar headers (ustar, GNU long names, pax ``path``), keeping only the
one member it wants. npm strips the first path component of every entry (normally ``package/``),
so the manifest is ``<any>/package.json``.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

BLOCK = 512
#: A package.json larger than this is refused rather than buffered.
MAX_MANIFEST_SIZE = 8 * 1024 * 1024


class TarballError(ValueError):
    """The bytes are not a gzipped tar with a readable package.json."""


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for large sizes
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError as exc:
        raise TarballError("corrupt tar header") from exc


def _is_manifest(path: str) -> bool:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return len(parts) == 2 and parts[1] == "package.json"


class PackageJsonReader:
    """Feed gzipped tarball bytes with :meth:`feed`; :meth:`finish` returns the parsed manifest."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._buf = bytearray()
        self._skip = 0  # bytes of the current member (plus padding) still to discard
        self._capture: bytearray | None = None
        self._capture_left = 0
        self._capture_pad = 0
        self._long_name: str | None = None
        self._member_kind = ""
        self._manifest: bytes | None = None
        self._done = False
        self.entries = 0

    def feed(self, data: bytes) -> None:
        if self._done or not data:
            return
        try:
            out = self._inflate.decompress(data)
            while self._inflate.eof and self._inflate.unused_data:
                rest = self._inflate.unused_data  # concatenated gzip members
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out += self._inflate.decompress(rest)
        except zlib.error as exc:
            raise TarballError(f"tarball is not valid gzip: {exc}") from exc
        self._buf += out
        self._walk()

    def _walk(self) -> None:
        buf = self._buf
        pos = 0
        while not self._done:
            if self._skip:
                step = min(self._skip, len(buf) - pos)
                pos += step
                self._skip -= step
                if self._skip:
                    break
                continue
            if self._capture is not None:
                step = min(self._capture_left, len(buf) - pos)
                self._capture += buf[pos : pos + step]
                pos += step
                self._capture_left -= step
                if self._capture_left:
                    break
                self._member_done(bytes(self._capture))
                self._capture = None
                self._skip = self._capture_pad
                continue
            if len(buf) - pos < BLOCK:
                break
            header = bytes(buf[pos : pos + BLOCK])
            pos += BLOCK
            self._header(header)
        del buf[:pos]

    def _header(self, header: bytes) -> None:
        if header == b"\0" * BLOCK:
            self._done = True  # end-of-archive marker
            return
        checksum = _octal(header[148:156])
        computed = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if checksum != computed:
            raise TarballError("corrupt tar header (checksum)")
        self.entries += 1
        size = _octal(header[124:136])
        kind = chr(header[156]) if header[156] else "0"
        name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        if header[257:262] == b"ustar":
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
            if prefix:
                name = f"{prefix}/{name}"
        if self._long_name is not None and kind not in ("L", "x"):
            name, self._long_name = self._long_name, None
        padded = -(-size // BLOCK) * BLOCK
        wanted = kind in ("L", "x") or (kind in ("0", "7") and _is_manifest(name))
        if wanted and self._manifest is None:
            if size > MAX_MANIFEST_SIZE:
                raise TarballError("package.json in the tarball is too large")
            self._member_kind = kind
            self._capture = bytearray()
            self._capture_left = size
            self._capture_pad = padded - size
        else:
            self._skip = padded

    def _member_done(self, content: bytes) -> None:
        if self._member_kind == "L":
            self._long_name = content.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif self._member_kind == "x":
            for record in _pax_records(content):
                if record[0] == "path":
                    self._long_name = record[1]
        else:
            self._manifest = content

    def finish(self) -> dict[str, Any]:
        """The parsed package.json; raises :class:`TarballError` if there was none."""
        if not self._done and not self._inflate.eof:
            raise TarballError("tarball is truncated")
        if self._manifest is None:
            raise TarballError("tarball has no package.json")
        try:
            manifest = json.loads(self._manifest.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TarballError(f"package.json in the tarball is not valid JSON: {exc}") from exc
        if not isinstance(manifest, dict):
            raise TarballError("package.json in the tarball is not a JSON object")
        return manifest


def _pax_records(content: bytes) -> list[tuple[str, str]]:
    """``<len> <key>=<value>\\n`` records of a pax extended header (POSIX.1-2001)."""
    records = []
    pos = 0
    while pos < len(content):
        space = content.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(content[pos:space])
        except ValueError:
            break
        record = content[space + 1 : pos + length - 1].decode("utf-8", "replace")
        key, _, value = record.partition("=")
        records.append((key, value))
        pos += length
    return records
