"""Store path names: ``<hash part>-<name>`` under ``/nix/store`` (``src/libstore/path.cc``)."""

from __future__ import annotations

import re

from depot.nix.nixbase32 import is_nix32

STORE_DIR = "/nix/store"
HASH_PART_LENGTH = 32
#: Nix limits a name to 211 characters from ``[A-Za-z0-9+-._?=]``, not starting with a dot.
_NAME = re.compile(r"^[A-Za-z0-9+\-_?=][A-Za-z0-9+\-._?=]{0,210}$")


def is_hash_part(text: str) -> bool:
    """True when ``text`` is the 32-character nix32 hash part of a store path."""
    return is_nix32(text, HASH_PART_LENGTH)


def check_base_name(base_name: str) -> str:
    """Return ``base_name`` (``<hash>-<name>``) if Nix would accept it, else raise ValueError."""
    hash_part, dash, name = base_name.partition("-")
    if not dash or not is_hash_part(hash_part):
        raise ValueError(f"{base_name!r} is not a store path base name (<32-char hash>-<name>)")
    if not _NAME.match(name):
        raise ValueError(f"store path name {name!r} has characters Nix does not allow")
    return base_name


def base_name_of(path: str, store_dir: str = STORE_DIR) -> str:
    """The checked base name of a full store path; ValueError if not directly in the store."""
    prefix = store_dir.rstrip("/") + "/"
    if not path.startswith(prefix) or "/" in path[len(prefix) :]:
        raise ValueError(f"{path!r} is not a path directly under {store_dir}")
    return check_base_name(path[len(prefix) :])


def hash_part_of(base_name: str) -> str:
    """The hash part of a checked base name."""
    return base_name.split("-", 1)[0]
