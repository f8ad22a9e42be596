"""Nix's base-32 encoding and its hash strings (``sha256:<nix32>``).

Nix writes hashes in its own base 32 (``src/libutil/hash.cc``): the alphabet omits e, o, u and t,
and the digits run from the most significant end of the little-endian integer of the bytes.
Store path hash parts (20 bytes, 32 characters) and narinfo hashes (32 bytes, 52 characters) both
use it.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"
_DIGITS = {c: i for i, c in enumerate(ALPHABET)}
# One C-level scan instead of a Python loop: every narinfo request checks its hash part.
_NIX32_RUN = re.compile(f"[{ALPHABET}]*")

#: Digest sizes of the algorithms Nix accepts in hash strings.
HASH_SIZES = {"md5": 16, "sha1": 20, "sha256": 32, "sha512": 64}


def encoded_length(size: int) -> int:
    """Characters of the nix32 form of ``size`` bytes."""
    return (size * 8 - 1) // 5 + 1


def encode(data: bytes) -> str:
    """The nix32 text of ``data``."""
    value = int.from_bytes(data, "little")
    length = encoded_length(len(data)) if data else 0
    return "".join(ALPHABET[(value >> (5 * n)) & 0x1F] for n in range(length - 1, -1, -1))


def decode(text: str, size: int) -> bytes:
    """The ``size`` bytes whose nix32 text is ``text``; ValueError if it is not exactly that."""
    if len(text) != encoded_length(size):
        raise ValueError(
            f"nix32 string {text!r} has length {len(text)}, expected {encoded_length(size)}"
        )
    value = 0
    for c in text:
        digit = _DIGITS.get(c)
        if digit is None:
            raise ValueError(f"invalid character {c!r} in nix32 string")
        value = (value << 5) | digit
    if value >> (8 * size):
        raise ValueError(f"nix32 string {text!r} does not fit in {size} bytes")
    return value.to_bytes(size, "little")


def is_nix32(text: str, length: int) -> bool:
    """True when ``text`` is ``length`` characters of the nix32 alphabet."""
    return len(text) == length and _NIX32_RUN.fullmatch(text) is not None


@dataclass(frozen=True)
class Hash:
    """A digest with its algorithm, as a narinfo's NarHash or FileHash."""

    algorithm: str
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> Hash:
        """Parse ``<algo>:<hash>`` in nix32, base16 or base64 (Nix tells them apart by length).

        Also accepts the SRI form ``<algo>-<base64>``.
        """
        algorithm, sep, rest = text.partition(":")
        sri = False
        if not sep:
            algorithm, sep, rest = text.partition("-")
            sri = True
        size = HASH_SIZES.get(algorithm)
        if not sep or size is None:
            raise ValueError(f"hash {text!r} does not start with a known algorithm (sha256:...)")
        if not sri and len(rest) == 2 * size:
            try:
                return cls(algorithm, bytes.fromhex(rest))
            except ValueError:
                raise ValueError(f"hash {text!r} is not valid base16") from None
        if not sri and len(rest) == encoded_length(size):
            return cls(algorithm, decode(rest, size))
        if len(rest) == len(base64.b64encode(bytes(size))):
            try:
                digest = base64.b64decode(rest, validate=True)
            except binascii.Error:
                raise ValueError(f"hash {text!r} is not valid base64") from None
            if len(digest) == size:
                return cls(algorithm, digest)
        raise ValueError(f"hash {text!r} has the wrong length for {algorithm}")

    def nix32(self) -> str:
        """The digest alone in nix32 (how NAR file names spell it)."""
        return encode(self.digest)

    def __str__(self) -> str:
        """``<algo>:<nix32>``, Nix's canonical form in narinfo files and fingerprints."""
        return f"{self.algorithm}:{self.nix32()}"
