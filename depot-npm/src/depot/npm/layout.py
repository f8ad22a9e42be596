"""Where ``depot npm save`` keeps packages and ``depot npm push`` finds them.

    <dir>/npm/tarballs/<name>/<basename>-<version>.tgz   the tarball as the registry served it
    <dir>/npm/versions/<name>/<version>.json             its version document (abbreviated manifest)
    <dir>/npm/dist-tags/<name>.json                      the registry's dist-tags when last saved

A version document is written after its tarball has been verified, so its presence means "saved".
Both are written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depot.npm.names import check_name, is_version, tarball_filename


@dataclass(frozen=True)
class SavedVersion:
    name: str
    version: str
    document: Path
    tarball: Path


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = root / "npm"

    def tarball(self, name: str, version: str) -> Path:
        return self.root / "tarballs" / name / tarball_filename(name, version)

    def document(self, name: str, version: str) -> Path:
        return self.root / "versions" / name / f"{version}.json"

    def dist_tags(self, name: str) -> Path:
        return self.root / "dist-tags" / f"{name}.json"

    def is_saved(self, name: str, version: str) -> bool:
        return self.document(name, version).is_file() and self.tarball(name, version).is_file()

    def saved(self) -> Iterator[SavedVersion]:
        """Every complete saved version, sorted by name and version file."""
        versions = self.root / "versions"
        if not versions.is_dir():
            return
        for path in sorted(versions.rglob("*.json")):
            name = path.parent.relative_to(versions).as_posix()
            version = path.name[: -len(".json")]
            if check_name(name).errors or not is_version(version):
                continue
            tarball = self.tarball(name, version)
            if tarball.is_file():
                yield SavedVersion(name, version, path, tarball)


def write_json_atomically(path: Path, document: Any) -> None:
    write_atomically(path, json.dumps(document, indent=1, sort_keys=True).encode())


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
