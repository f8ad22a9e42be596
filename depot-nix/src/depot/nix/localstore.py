"""The host's own Nix store, read-only: what ``depot serve --nix-local-store`` serves.

Path metadata comes from Nix's database, ``<root>/nix/var/nix/db/db.sqlite``
(``src/libstore/schema.sql``: ``ValidPaths`` and ``Refs``), opened with ``mode=ro`` so depot can
never write to it. Only paths registered there are valid: a path being built, or one whose
registration has not committed, is absent, so it is never half-served. Where the database cannot
be read (another user's store, a daemon-only install) depot asks ``nix path-info --json``
instead, which is slower (a process per lookup) but needs no access to the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sqlite3
import threading
import urllib.parse
from pathlib import Path

from depot.core.errors import ConfigError
from depot.nix import nardump
from depot.nix.narinfo import NarInfo
from depot.nix.nixbase32 import Hash
from depot.nix.signing import Signature
from depot.nix.storepath import STORE_DIR, base_name_of, check_base_name

log = logging.getLogger("depot.nix")

#: The narinfo URL of a local path's NAR; the NarHash in it lets the NAR route refuse a path that
#: was deleted and rebuilt with different contents since the client read the narinfo.
LOCAL_NAR_PREFIX = "nar/local"


def local_nar_url(hash_part: str, nar_hash: Hash) -> str:
    return f"{LOCAL_NAR_PREFIX}/{hash_part}/{nar_hash.nix32()}.nar"


def local_narinfo(
    store_path: str,
    nar_hash: str,
    nar_size: int,
    references: list[str],
    deriver: str | None,
    sigs: list[str],
    ca: str | None,
) -> NarInfo:
    """The narinfo of a local path from what Nix records about it (full paths, any hash form)."""
    base = base_name_of(store_path)
    parsed_hash = Hash.parse(nar_hash)
    signatures = []
    for text in sigs:
        try:
            signatures.append(Signature.parse(text))
        except ValueError:
            log.warning(
                "ignoring a malformed signature in the nix database", extra={"path": store_path}
            )
    return NarInfo(
        store_path=store_path,
        url=local_nar_url(base.split("-", 1)[0], parsed_hash),
        compression="none",
        nar_hash=parsed_hash,
        nar_size=nar_size,
        references=tuple(sorted(base_name_of(r) for r in references)),
        deriver=base_name_of(deriver) if deriver else None,
        ca=ca or None,
        signatures=tuple(dict.fromkeys(signatures)),
    )


class NixDatabase:
    """Nix's SQLite database opened read-only; lookups are synchronous (call them in a thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
        # A Nix build holding a write lock makes readers wait briefly, not fail.
        self._conn = sqlite3.connect(uri, uri=True, timeout=10, check_same_thread=False)
        self._lock = threading.Lock()
        self._conn.execute(
            "SELECT id, path, hash, deriver, narSize, sigs, ca FROM ValidPaths LIMIT 1"
        )

    def lookup(self, hash_part: str) -> NarInfo | None:
        # Every store path starts "<store>/<hash part>-": a range on the unique index of `path`
        # finds it without a scan ("." sorts right after "-").
        low, high = f"{STORE_DIR}/{hash_part}-", f"{STORE_DIR}/{hash_part}."
        with self._lock:
            row = self._conn.execute(
                "SELECT id, path, hash, deriver, narSize, sigs, ca FROM ValidPaths"
                " WHERE path >= ? AND path < ? LIMIT 1",
                (low, high),
            ).fetchone()
            if row is None:
                return None
            refs = self._conn.execute(
                "SELECT v.path FROM Refs r JOIN ValidPaths v ON v.id = r.reference"
                " WHERE r.referrer = ?",
                (row[0],),
            ).fetchall()
        _id, path, nar_hash, deriver, nar_size, sigs, ca = row
        return local_narinfo(
            path, nar_hash, nar_size or 0, [r[0] for r in refs], deriver, (sigs or "").split(), ca
        )

    def close(self) -> None:
        self._conn.close()


class PathInfoCommand:
    """``nix path-info --json`` for stores whose database depot cannot read."""

    def __init__(self, root: Path, nix: str) -> None:
        self.root = root
        self.nix = nix

    async def lookup(self, hash_part: str) -> NarInfo | None:
        base = await asyncio.to_thread(
            _find_base_name, self.root / STORE_DIR.lstrip("/"), hash_part
        )
        if base is None:
            return None
        store_path = f"{STORE_DIR}/{base}"
        args = [self.nix, "--extra-experimental-features", "nix-command", "path-info", "--json"]
        if str(self.root) != "/":
            args += ["--store", str(self.root)]
        if base.endswith(".drv"):  # otherwise nix 2.8 answers for the derivation's outputs
            args.append("--derivation")
        process = await asyncio.create_subprocess_exec(
            *args, store_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        stdout, stderr = await process.communicate()
        if process.returncode != 0:
            log.warning(
                "nix path-info failed",
                extra={"path": store_path, "error": stderr.decode(errors="replace")[-300:]},
            )
            return None
        entries = json.loads(stdout or b"[]")
        entry = entries[0] if entries else {}
        if (
            not entry.get("narHash")
            or entry.get("valid") is False
            or entry.get("path") != store_path
        ):
            return None
        return local_narinfo(
            store_path,
            entry["narHash"],
            int(entry.get("narSize") or 0),
            list(entry.get("references") or ()),
            entry.get("deriver"),
            list(entry.get("signatures") or ()),
            entry.get("ca"),
        )


def _find_base_name(store: Path, hash_part: str) -> str | None:
    prefix = hash_part + "-"
    try:
        with os.scandir(store) as entries:
            for entry in entries:
                if entry.name.startswith(prefix):
                    return entry.name
    except OSError:
        return None
    return None


class LocalStore:
    """The valid paths of the Nix store under ``root`` (``/`` for the host's own)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store_dir = root / STORE_DIR.lstrip("/")
        db_path = root / "nix/var/nix/db/db.sqlite"
        self._db: NixDatabase | None = None
        self._command: PathInfoCommand | None = None
        if not self.store_dir.is_dir():
            raise ConfigError(f"--nix-local-store: {self.store_dir} is not a directory")
        try:
            self._db = NixDatabase(db_path)
            self.source = f"database {db_path} (read-only)"
        except sqlite3.Error as exc:
            nix = shutil.which("nix")
            if nix is None:
                raise ConfigError(
                    f"--nix-local-store: cannot read {db_path} ({exc}) and nix is not on PATH"
                ) from None
            self._command = PathInfoCommand(root, nix)
            self.source = f"nix path-info (database {db_path} unreadable: {exc})"

    async def lookup(self, hash_part: str) -> NarInfo | None:
        """The narinfo of the valid path with this hash part, or None (absent, or not yet valid)."""
        if self._db is not None:
            return await asyncio.to_thread(self._db.lookup, hash_part)
        assert self._command is not None
        return await self._command.lookup(hash_part)

    def listing(self, base_name: str) -> str:
        """The ``.ls`` document of a path, from its tree (no file is read); synchronous."""
        store_fd = os.open(self.store_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return nardump.listing(
                nardump.walk(store_fd, check_base_name(base_name), open_files=False)
            )
        finally:
            os.close(store_fd)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
