"""The local store that ``depot python save`` fills and ``depot python push`` empties into a depot.

Layout: ``<dir>/python/<normalised project>/<filename>``, written atomically (a hidden ``.part``
file, fsync, rename), so a file that is there under its real name is complete.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from depot.pypi.names import DistributionFile, InvalidFilename, parse_filename

SUBDIR = "python"


def saved_path(root: Path, dist: DistributionFile) -> Path:
    return root / SUBDIR / dist.project / dist.filename


def part_path(final: Path) -> Path:
    """A hidden temporary name beside ``final``: the same file system, so rename is atomic."""
    return final.parent / f".{final.name}.{secrets.token_hex(4)}.part"


def publish_part(part: Path, final: Path) -> None:
    """Make a completely written temporary file visible under its final name."""
    with open(part, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def saved_files(root: Path) -> Iterator[tuple[DistributionFile, Path]]:
    """Every complete distribution under ``root/python``, sorted; others are skipped."""
    base = root / SUBDIR
    if not base.is_dir():
        return
    for project_dir in sorted(
        p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")
    ):
        for path in sorted(project_dir.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                dist = parse_filename(path.name)
            except InvalidFilename:
                continue
            if dist.project == project_dir.name:
                yield dist, path


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


class Progress:
    """Progress on stderr: one line per finished item, ``[ n/N]`` first.

    On a terminal a status line below them also shows the bytes moved so far, redrawn in place a
    few times a second, so a large download is visibly alive between two finished files.
    """

    def __init__(self, total: int, echo: Callable[..., None], live: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self.bytes = 0
        self._echo = echo
        self._live = sys.stderr.isatty() if live is None else live
        self._drawn = 0.0

    def step(self, message: str) -> None:
        self.done += 1
        width = len(str(self.total))
        self._clear()
        self._echo(f"[{self.done:>{width}}/{self.total}] {message}", err=True)
        self._draw(force=True)

    def add_bytes(self, count: int) -> None:
        self.bytes += count
        self._draw()

    def finish(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self._live:
            self._echo("\r\x1b[K", err=True, nl=False)

    def _draw(self, force: bool = False) -> None:
        if not self._live or self.done >= self.total:
            return
        now = time.monotonic()
        if not force and now - self._drawn < 0.2:
            return
        self._drawn = now
        filled = int(20 * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (20 - filled)
        self._echo(
            f"\r\x1b[K[{bar}] {self.done}/{self.total} files, {human_size(self.bytes)}",
            err=True, nl=False,
        )  # fmt: skip
