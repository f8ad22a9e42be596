"""Loading the signing key named by ``--private-key``."""

from __future__ import annotations

from pathlib import Path

from depot.core.errors import ConfigError
from depot.nix.signing import SecretKey


def load_secret_key(path: Path) -> SecretKey:
    """Read a Nix secret key file; ConfigError with one line if it is unreadable or malformed."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read private key {path}: {exc.strerror or exc}") from None
    try:
        return SecretKey.parse(text)
    except ValueError as exc:
        raise ConfigError(f"private key {path}: {exc}") from None


class Signer:
    """The depot's signing key, read once on first use (None without ``--private-key``)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._key: SecretKey | None = None

    @property
    def key(self) -> SecretKey | None:
        if self.path is None:
            return None
        if self._key is None:
            self._key = load_secret_key(self.path)
        return self._key
