"""Tarball integrity: Subresource Integrity strings (``sha512-<base64>``) and legacy shasums.

npm records ``dist.integrity`` (SRI, normally sha512) and ``dist.shasum`` (hex sha1). A tarball is
accepted when it matches the strongest algorithm named in ``integrity`` that we computed, and the
``shasum`` when one is given. See the W3C SRI spec (strongest-algorithm rule) and npm's ``ssri``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping

#: Weakest first: SRI says to compare only against the strongest algorithm present.
_STRENGTH = ("sha1", "sha256", "sha384", "sha512")
#: The digests depot computes for every tarball it receives.
ALGORITHMS = ("sha1", "sha512")


class IntegrityError(ValueError):
    """The bytes do not match what their metadata claims; the message says which hash."""


def parse_sri(integrity: str) -> dict[str, list[bytes]]:
    """``{"sha512": [digest, ...]}`` for each well-formed entry; unknown options are ignored."""
    found: dict[str, list[bytes]] = {}
    for entry in integrity.split():
        algorithm, sep, rest = entry.partition("-")
        if not sep or algorithm not in _STRENGTH:
            continue
        encoded = rest.split("?", 1)[0]
        try:
            digest = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(digest) == hashlib.new(algorithm).digest_size:
            found.setdefault(algorithm, []).append(digest)
    return found


def sri(algorithm: str, digest: bytes) -> str:
    return f"{algorithm}-{base64.b64encode(digest).decode()}"


def strongest(integrity: str) -> str | None:
    """The strongest algorithm named in an SRI string, or None if it names none we know."""
    parsed = parse_sri(integrity)
    for algorithm in reversed(_STRENGTH):
        if algorithm in parsed:
            return algorithm
    return None


def verify(digests: Mapping[str, bytes], integrity: str | None, shasum: str | None) -> None:
    """Raise :class:`IntegrityError` unless ``digests`` match ``integrity`` and ``shasum``.

    ``digests`` maps algorithm names to raw digests of the bytes. At least one of ``integrity``
    or ``shasum`` must be given: an unverifiable tarball is refused.
    """
    if not integrity and not shasum:
        raise IntegrityError("no dist.integrity or dist.shasum to verify the tarball against")
    if integrity:
        parsed = parse_sri(integrity)
        usable = [a for a in reversed(_STRENGTH) if a in parsed and a in digests]
        if not usable:
            raise IntegrityError(f"integrity {integrity[:40]!r} names no supported hash")
        algorithm = usable[0]
        if digests[algorithm] not in parsed[algorithm]:
            raise IntegrityError(
                f"tarball {algorithm} is {sri(algorithm, digests[algorithm])}, "
                f"not the integrity given"
            )
    if shasum:
        if "sha1" not in digests:
            raise IntegrityError("cannot check shasum: sha1 not computed")
        if digests["sha1"].hex() != shasum.strip().lower():
            raise IntegrityError(f"tarball sha1 is {digests['sha1'].hex()}, not shasum {shasum}")


def sri_digest(integrity: str) -> bytes:
    """The raw digest of a single-entry SRI string such as ``sha512-<base64>``."""
    return base64.b64decode(integrity.split("-", 1)[1])
