"""Nix's ed25519 narinfo signatures (``src/libstore/crypto.cc``, ``path-info.cc``).

A secret key file holds ``<name>:<base64 of 64 bytes>`` (libsodium's seed followed by the public
key), a public key is ``<name>:<base64 of 32 bytes>`` and a signature ``<name>:<base64 of 64
bytes>`` over the path's fingerprint ``1;<store path>;<NarHash>;<NarSize>;<references>``.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from depot.nix.storepath import STORE_DIR

_KEY_NAME = re.compile(r"^[^\s:]+$")


def fingerprint(
    store_path: str,
    nar_hash: str,
    nar_size: int,
    references: Iterable[str],
    store_dir: str = STORE_DIR,
) -> bytes:
    """What Nix signs for a store path; ``references`` are base names, ``nar_hash`` nix32 form.

    References are sorted because Nix keeps them in an ordered set of base names.
    """
    full = ",".join(f"{store_dir}/{r}" for r in sorted(set(references)))
    return f"1;{store_path};{nar_hash};{nar_size};{full}".encode()


def _split(text: str, size: int, what: str) -> tuple[str, bytes]:
    name, sep, encoded = text.strip().partition(":")
    if not sep or not _KEY_NAME.match(name):
        raise ValueError(f"{what} is not <name>:<base64>")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError(f"{what} {name!r} is not valid base64") from None
    if len(raw) != size:
        raise ValueError(f"{what} {name!r} holds {len(raw)} bytes, expected {size}")
    return name, raw


def _join(name: str, raw: bytes) -> str:
    """``<name>:<base64>``, the text ``_split`` reads back."""
    return f"{name}:{base64.b64encode(raw).decode()}"


@dataclass(frozen=True)
class Signature:
    """One ``Sig:`` value of a narinfo."""

    key_name: str
    raw: bytes

    @classmethod
    def parse(cls, text: str) -> Signature:
        name, raw = _split(text, 64, "signature")
        return cls(name, raw)

    def __str__(self) -> str:
        return _join(self.key_name, self.raw)


@dataclass(frozen=True)
class PublicKey:
    """A verifying key as ``trusted-public-keys`` lists it."""

    name: str
    raw: bytes

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        name, raw = _split(text, 32, "public key")
        return cls(name, raw)

    def verify(self, signature: Signature, message: bytes) -> bool:
        """True when ``signature`` is by this key (same name) over ``message``."""
        if signature.key_name != self.name:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature.raw, message)
        except InvalidSignature:
            return False
        return True

    def __str__(self) -> str:
        return _join(self.name, self.raw)


@dataclass(frozen=True)
class SecretKey:
    """A signing key in ``nix key generate-secret``'s format."""

    name: str
    seed: bytes

    @classmethod
    def generate(cls, name: str) -> SecretKey:
        if not _KEY_NAME.match(name):
            raise ValueError(f"key name {name!r} must be non-empty, without spaces or ':'")
        return cls(name, secrets.token_bytes(32))

    @classmethod
    def parse(cls, text: str) -> SecretKey:
        """Parse a secret key file's text; checks that its public half matches its seed."""
        name, raw = _split(text, 64, "secret key")
        key = cls(name, raw[:32])
        if key.public_key().raw != raw[32:]:
            raise ValueError(f"secret key {name!r} is corrupt: its public half does not match")
        return key

    def _private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    def public_key(self) -> PublicKey:
        raw = self._private().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return PublicKey(self.name, raw)

    def sign(self, message: bytes) -> Signature:
        return Signature(self.name, self._private().sign(message))

    def __str__(self) -> str:
        """The key file's text (without newline), seed followed by public key as libsodium does."""
        return _join(self.name, self.seed + self.public_key().raw)
