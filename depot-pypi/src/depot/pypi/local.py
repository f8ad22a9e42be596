"""The local store that ``depot python save`` fills and ``depot python push`` empties into a depot.

Layout: ``<dir>/python/<normalised project>/<filename>``, written atomically (a hidden ``.part``
file, fsync, rename), so a file that is there under its real name is complete.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
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
    """One line per finished item on stderr, ``[ n/N]`` first, so a long run shows where it is."""

    def __init__(self, total: int, echo: object) -> None:
        self.total = total
        self.done = 0
        self._echo = echo

    def step(self, message: str) -> None:
        self.done += 1
        width = len(str(self.total))
        self._echo(f"[{self.done:>{width}}/{self.total}] {message}", err=True)  # type: ignore[operator]
