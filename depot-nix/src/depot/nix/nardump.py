"""Serialising a store path to a NAR, as ``nix-store --dump`` does (``src/libutil/archive.cc``).

:func:`walk` reads the tree with ``lstat``/``readlink``/directory fds and yields its structure as
events; :func:`frames` turns events into NAR bytes (pure), leaving file contents to the caller as
:class:`Contents` markers so that large files can be streamed in big chunks by whoever serves
them; :func:`listing` turns the same events into the ``.ls`` document (``listNar``'s JSON).

Nix's rules kept here: directory entries sorted byte-wise (its ``std::map<std::string>``), a file
is ``executable`` when the owner-execute bit is set, symlinks are written as their target and
never followed, and anything other than files, directories and symlinks is refused.

Confinement: every name below the store path is opened relative to its parent directory's fd with
``O_NOFOLLOW``, so a symlink (or a rename racing with the walk) can never lead the walker outside
the store path it was given.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC = b"nix-archive-1"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)


class NarDumpError(OSError):
    """The path cannot be serialised (vanished, changed, or holds a device, socket or fifo)."""


# Events, in NAR order.


@dataclass(frozen=True)
class Regular:
    """A regular file; ``fd`` is open for reading while the event is current (-1 if not opened)."""

    size: int
    executable: bool
    fd: int = -1


@dataclass(frozen=True)
class Symlink:
    target: bytes


@dataclass(frozen=True)
class DirectoryStart:
    pass


@dataclass(frozen=True)
class Entry:
    """The next node belongs to directory entry ``name``."""

    name: bytes


@dataclass(frozen=True)
class EntryEnd:
    pass


@dataclass(frozen=True)
class DirectoryEnd:
    pass


Event = Regular | Symlink | DirectoryStart | Entry | EntryEnd | DirectoryEnd


@dataclass(frozen=True)
class Contents:
    """``size`` bytes of the file open at ``fd`` go here in the NAR."""

    fd: int
    size: int


def walk(dir_fd: int, name: str | bytes, open_files: bool = True) -> Iterator[Event]:
    """The events of the node ``name`` inside the directory open at ``dir_fd``.

    With ``open_files`` each :class:`Regular` carries an fd that stays open until the generator is
    advanced past it.
    """
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except OSError as exc:
        raise NarDumpError(exc.errno, f"cannot lstat {name!r}: {exc.strerror}") from None
    mode = st.st_mode
    if stat.S_ISREG(mode):
        executable = bool(mode & stat.S_IXUSR)
        if not open_files:
            yield Regular(st.st_size, executable)
            return
        fd = _open(name, dir_fd, _FILE_FLAGS)
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
                st.st_dev,
                st.st_ino,
            ):
                raise NarDumpError(0, f"{name!r} changed while it was being read")
            yield Regular(opened.st_size, executable, fd)
        finally:
            os.close(fd)
    elif stat.S_ISLNK(mode):
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError as exc:
            raise NarDumpError(exc.errno, f"cannot readlink {name!r}: {exc.strerror}") from None
        yield Symlink(os.fsencode(target))
    elif stat.S_ISDIR(mode):
        fd = _open(name, dir_fd, _DIR_FLAGS)
        try:
            # listdir on an fd gives bytes names only via scandir; os.listdir(fd) returns str
            # decoded with surrogateescape, which fsencode turns back into the exact bytes.
            names = sorted(os.fsencode(n) for n in os.listdir(fd))
            yield DirectoryStart()
            for entry in names:
                yield Entry(entry)
                yield from walk(fd, entry, open_files)
                yield EntryEnd()
            yield DirectoryEnd()
        finally:
            os.close(fd)
    else:
        raise NarDumpError(0, f"{name!r} is not a regular file, directory or symlink")


def _open(name: str | bytes, dir_fd: int, flags: int) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        raise NarDumpError(exc.errno, f"cannot open {name!r}: {exc.strerror}") from None


# The NAR encoding: each token is a little-endian u64 length, the bytes, zero padding to 8.


def _token(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data + bytes(-len(data) % 8)


_WORDS = b"( ) type regular executable contents symlink target directory entry name node".split()
_T = {w: _token(w) for w in [*_WORDS, b""]}
_REGULAR = _T[b"("] + _T[b"type"] + _T[b"regular"]
_EXECUTABLE = _T[b"executable"] + _T[b""]
_SYMLINK = _T[b"("] + _T[b"type"] + _T[b"symlink"] + _T[b"target"]
_DIRECTORY = _T[b"("] + _T[b"type"] + _T[b"directory"]
_ENTRY = _T[b"entry"] + _T[b"("] + _T[b"name"]


def frames(events: Iterator[Event]) -> Iterator[bytes | Contents]:
    """The NAR as framing bytes interleaved with :class:`Contents` markers for file data."""
    yield _token(MAGIC)
    for event in events:
        if isinstance(event, Regular):
            head = _REGULAR + (_EXECUTABLE if event.executable else b"")
            yield head + _T[b"contents"] + struct.pack("<Q", event.size)
            if event.size:
                yield Contents(event.fd, event.size)
            yield bytes(-event.size % 8) + _T[b")"]
        elif isinstance(event, Symlink):
            yield _SYMLINK + _token(event.target) + _T[b")"]
        elif isinstance(event, DirectoryStart):
            yield _DIRECTORY
        elif isinstance(event, Entry):
            yield _ENTRY + _token(event.name) + _T[b"node"]
        else:  # EntryEnd closes the entry, DirectoryEnd the directory node: both are ")"
            yield _T[b")"]


def nar_size(events: Iterator[Event]) -> int:
    """The length of the NAR these events serialise to, without reading any file."""
    return sum(f.size if isinstance(f, Contents) else len(f) for f in frames(events))


def coalesce(
    parts: Iterator[bytes | Contents], small: int, chunk_size: int
) -> Iterator[bytes | Contents]:
    """Join framing and the contents of files under ``small`` bytes into chunks of about
    ``chunk_size`` (read here, with ``pread``); larger files stay :class:`Contents` markers."""
    buffer = bytearray()
    for part in parts:
        if isinstance(part, Contents):
            if part.size < small:
                buffer += read_exactly(part.fd, 0, part.size)
            else:
                if buffer:
                    yield bytes(buffer)
                    buffer.clear()
                yield part
                continue
        else:
            buffer += part
        if len(buffer) >= chunk_size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def read_exactly(fd: int, offset: int, n: int) -> bytes:
    """``n`` bytes at ``offset``; a file that shrank since its fstat is an error (no short NAR)."""
    data = os.pread(fd, n, offset)
    while len(data) < n:
        more = os.pread(fd, n - len(data), offset + len(data))
        if not more:
            raise NarDumpError(0, "a file shrank while it was being read")
        data += more
    return data


def dump(dir_fd: int, name: str | bytes, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    """The whole NAR of ``name`` (inside ``dir_fd``) in chunks; synchronous, for tests and tools."""
    for part in coalesce(frames(walk(dir_fd, name)), chunk_size, chunk_size):
        if isinstance(part, Contents):
            for offset in range(0, part.size, chunk_size):
                yield read_exactly(part.fd, offset, min(chunk_size, part.size - offset))
        else:
            yield part


def listing(events: Iterator[Event]) -> str:
    """The ``.ls`` JSON of a NAR (``{"version":1,"root":...}``), ``narOffset`` for regular files.

    Offsets are computed from the framing lengths, so no file is read. The text is what
    :class:`depot.nix.nar.NarValidator` derives from the NAR bytes.
    """
    parts = ['{"version":1,"root":']
    offset = len(_token(MAGIC))
    first_entry = [True]
    for event in events:
        if isinstance(event, Regular):
            head = len(_REGULAR) + (len(_EXECUTABLE) if event.executable else 0)
            start = offset + head + len(_T[b"contents"]) + 8
            parts.append(
                f'{{"type":"regular","size":{event.size}'
                + (',"executable":true' if event.executable else "")
                + f',"narOffset":{start}}}'
            )
            offset = start + event.size + (-event.size % 8) + len(_T[b")"])
            continue
        if isinstance(event, Symlink):
            parts.append('{"type":"symlink","target":' + _json_text(event.target) + "}")
            offset += len(_SYMLINK) + len(_token(event.target)) + len(_T[b")"])
        elif isinstance(event, DirectoryStart):
            parts.append('{"type":"directory","entries":{')
            first_entry.append(True)
            offset += len(_DIRECTORY)
        elif isinstance(event, Entry):
            parts.append(("" if first_entry[-1] else ",") + _json_text(event.name) + ":")
            first_entry[-1] = False
            offset += len(_ENTRY) + len(_token(event.name)) + len(_T[b"node"])
        elif isinstance(event, EntryEnd):
            offset += len(_T[b")"])
        else:
            parts.append("}}")
            first_entry.pop()
            offset += len(_T[b")"])
    parts.append("}")
    return "".join(parts)


def _json_text(raw: bytes) -> str:
    # The same spelling as the listing NarValidator writes for uploaded NARs.
    return json.dumps(raw.decode("utf-8", "surrogateescape"), ensure_ascii=True).replace(
        "\\udc", "\\u00"
    )
