"""Streaming decompression of NAR files as ``nix copy`` compresses them.

Each decompressor is fed compressed chunks and pushes decompressed output, at most
:data:`OUTPUT_CHUNK` bytes at a time, into a sink, so memory stays flat whatever the expansion
ratio (a NAR of zeros shrinks a thousandfold). :meth:`Decompressor.finish` raises
:class:`CompressionError` when the stream stops before its end.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import Any

import brotli
import zstandard

OUTPUT_CHUNK = 1024 * 1024

Sink = Callable[[bytes], None]


class CompressionError(ValueError):
    """The compressed stream is corrupt, truncated or of an unknown kind."""


class Decompressor:
    """Feed with :meth:`feed`; end with :meth:`finish`."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError


class Identity(Decompressor):
    """``Compression: none``."""

    def feed(self, data: bytes) -> None:
        if data:
            self.sink(data)

    def finish(self) -> None:
        return None


class _StdlibDecompressor(Decompressor):
    """lzma, bz2 and zlib share ``decompress(data, max_length)``, ``eof`` and ``unused_data``.

    A stream that ends and is followed by more data starts a new stream, as ``xz`` and
    ``bzip2`` do for concatenated files.
    """

    name = ""

    def __init__(self, sink: Sink) -> None:
        super().__init__(sink)
        self._d = self._new()
        self._started = False

    def _new(self) -> Any:
        raise NotImplementedError

    def _pending(self) -> bool:
        """Whether the decompressor holds input it has not turned into output yet."""
        return not self._d.needs_input

    def _call(self, data: bytes) -> bytes:
        try:
            return self._d.decompress(data, OUTPUT_CHUNK)
        except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
            raise CompressionError(f"corrupt {self.name} data: {exc}") from None

    def feed(self, data: bytes) -> None:
        while data:
            if self._d.eof:
                self._d = self._new()
            self._started = True
            out = self._call(data)
            if out:
                self.sink(out)
            data = b""
            while not self._d.eof and self._pending():
                out = self._call(self._tail())
                if out:
                    self.sink(out)
            if self._d.eof:
                data = self._d.unused_data

    def _tail(self) -> bytes:
        return b""

    def finish(self) -> None:
        if not self._started or not self._d.eof:
            raise CompressionError(f"{self.name} data is truncated")


class Xz(_StdlibDecompressor):
    name = "xz"

    def _new(self) -> Any:
        return lzma.LZMADecompressor(lzma.FORMAT_XZ)


class Bzip2(_StdlibDecompressor):
    name = "bzip2"

    def _new(self) -> Any:
        return bz2.BZ2Decompressor()


class Gzip(_StdlibDecompressor):
    name = "gzip"

    def _new(self) -> Any:
        return zlib.decompressobj(16 + zlib.MAX_WBITS)

    def _pending(self) -> bool:
        return bool(self._d.unconsumed_tail)

    def _tail(self) -> bytes:
        return self._d.unconsumed_tail

    def finish(self) -> None:
        if self._started and not self._d.eof:
            # zlib may still hold output it produced after the last input byte was consumed.
            out = self._d.flush()
            if out:
                self.sink(out)
        super().finish()


class _SinkWriter:
    """The file-like end that zstandard's stream writer pushes bounded chunks into."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def write(self, data: bytes) -> int:
        self.sink(bytes(data))
        return len(data)


class Zstd(Decompressor):
    """zstd through zstandard's stream writer, which emits ``write_size`` chunks.

    The writer cannot tell a frame cut at its end from a complete one; a truncated NAR file is
    still caught by its FileHash and by the NAR parser.
    """

    def __init__(self, sink: Sink) -> None:
        super().__init__(sink)
        self._writer = zstandard.ZstdDecompressor().stream_writer(
            _SinkWriter(sink), write_size=OUTPUT_CHUNK, write_return_read=True
        )
        self._fed = False

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self._fed = True
        try:
            self._writer.write(data)
        except zstandard.ZstdError as exc:
            raise CompressionError(f"corrupt zstd data: {exc}") from None

    def finish(self) -> None:
        if not self._fed:
            raise CompressionError("zstd data is empty")
        try:
            self._writer.flush()
        except zstandard.ZstdError as exc:
            raise CompressionError(f"corrupt zstd data: {exc}") from None


class Brotli(Decompressor):
    """``Compression: br``; brotli 1.2 caps each step's output and says when it wants input."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(sink)
        self._d = brotli.Decompressor()

    def _step(self, data: bytes) -> bytes:
        try:
            # The limit stops the buffer's growth, which goes in steps: half keeps it near a chunk.
            return self._d.process(data, output_buffer_limit=OUTPUT_CHUNK // 2)
        except brotli.error as exc:
            raise CompressionError(f"corrupt br data: {exc}") from None

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self._d.is_finished():
            raise CompressionError("trailing data after the end of the br stream")
        out = self._step(data)
        while True:
            if out:
                self.sink(out)
            if self._d.can_accept_more_data():
                return
            out = self._step(b"")
            if not out:
                return

    def finish(self) -> None:
        if not self._d.is_finished():
            raise CompressionError("br data is truncated")


DECOMPRESSORS: dict[str, type[Decompressor]] = {
    "br": Brotli,
    "none": Identity,
    "xz": Xz,
    "bzip2": Bzip2,
    "gzip": Gzip,
    "zstd": Zstd,
}


def decompressor(compression: str, sink: Sink) -> Decompressor:
    """A decompressor for a narinfo's ``Compression`` value."""
    kind = DECOMPRESSORS.get(compression)
    if kind is None:
        raise CompressionError(f"compression {compression!r} is not supported by this depot")
    return kind(sink)
