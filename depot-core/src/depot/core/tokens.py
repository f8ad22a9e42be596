"""Minting tokens: a JWT signed by one of the user's SSH keys.

Keys are looked for in this order: ``--key PATH`` (or ``DEPOT_KEY``) when given; otherwise the
first key ssh-agent holds (``SSH_AUTH_SOCK``, through asyncssh), then ``~/.ssh/id_*`` files that
have no passphrase. ``--key`` may name a private key file, or a public one (``.pub``) whose
private half is in ssh-agent; a private key with a passphrase is used through ssh-agent too.

Claims: ``key_fingerprint`` (``SHA256:...`` as ``ssh-keygen -l`` prints it), ``iat``, ``exp`` and,
when the client knows which server it talks to, ``aud``. The algorithm follows the key type
(:data:`depot.core.sshauth.ALGORITHM_FOR_KEY_TYPE`); the server accepts no other.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import threading
import time
import warnings
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from depot.core.errors import DepotError
from depot.core.sshauth import (
    ALGORITHM_FOR_KEY_TYPE,
    FINGERPRINT_CLAIM,
    JsonWebToken,  # imported there without authlib's warning
    fingerprint,
)

T = TypeVar("T")

DEFAULT_EXPIRES = timedelta(hours=24)
#: Files tried under ~/.ssh, most modern first; DSA and FIDO (``_sk``) keys cannot sign JWTs.
DEFAULT_KEY_FILES = ("id_ed25519", "id_ecdsa", "id_rsa")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CURVE_KEY_TYPES = {
    "secp256r1": "ecdsa-sha2-nistp256",
    "secp384r1": "ecdsa-sha2-nistp384",
    "secp521r1": "ecdsa-sha2-nistp521",
}
_EC_SIGNATURE_BYTES = {"ES256": 32, "ES384": 48, "ES512": 66}


def parse_duration(text: str | float | timedelta) -> timedelta:
    """``90``, ``90s``, ``30m``, ``24h``, ``7d`` or ``2w`` as a timedelta (must be positive)."""
    if isinstance(text, timedelta):
        value = text
    elif isinstance(text, int | float):
        value = timedelta(seconds=text)
    else:
        m = _DURATION.match(text)
        if not m:
            raise DepotError(f"cannot read duration {text!r}: use e.g. 90s, 30m, 24h or 7d")
        value = timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    if value.total_seconds() <= 0:
        raise DepotError("a token's lifetime must be positive")
    return value


@dataclass(frozen=True)
class SigningKey:
    """A key that can sign tokens: a private key loaded from a file, or one held by ssh-agent."""

    key_type: str
    fingerprint: str
    source: str  # "ssh-agent" or the file's path, for messages
    private_key: Any = None  # a cryptography private key; None when ssh-agent signs
    agent_path: str | None = None

    @property
    def algorithm(self) -> str:
        return ALGORITHM_FOR_KEY_TYPE[self.key_type]

    def describe(self) -> str:
        return f"{self.key_type} {self.fingerprint} ({self.source})"


# -- finding keys -------------------------------------------------------------------------------


def _public_blob(public_key: Any) -> bytes:
    line = public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return base64.b64decode(line.split()[1])


def _key_type(public_key: Any) -> str | None:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ssh-ed25519"
    if isinstance(public_key, rsa.RSAPublicKey):
        return "ssh-rsa"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _CURVE_KEY_TYPES.get(public_key.curve.name)
    return None


class PassphraseProtected(Exception):
    """The key file is encrypted; its private half can only be used through ssh-agent."""


def load_private_key_file(path: Path) -> SigningKey:
    """Load an unencrypted OpenSSH or PEM private key; raise PassphraseProtected or DepotError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DepotError(f"cannot read key {path}: {exc.strerror or exc}") from None
    private_key = None
    for loader in (serialization.load_ssh_private_key, serialization.load_pem_private_key):
        try:
            with warnings.catch_warnings():
                # DSA keys load with a deprecation warning; they are refused just below anyway.
                warnings.simplefilter("ignore")
                private_key = loader(data, None)
            break
        except TypeError:  # "private key is encrypted" from either loader
            raise PassphraseProtected(str(path)) from None
        except (ValueError, UnsupportedAlgorithm):
            continue
    if private_key is None:
        raise DepotError(f"{path} is not an SSH private key")
    public = private_key.public_key()
    key_type = _key_type(public)
    if key_type is None:
        raise DepotError(f"{path}: this key type cannot sign tokens (use ed25519, RSA or ECDSA)")
    return SigningKey(key_type, fingerprint(_public_blob(public)), str(path), private_key)


def _public_key_file(path: Path) -> tuple[str, str] | None:
    """(key type, fingerprint) of an OpenSSH public key file, or None if it is not one."""
    try:
        fields = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeError):
        return None
    if len(fields) < 2 or fields[0] not in ALGORITHM_FOR_KEY_TYPE:
        return None
    try:
        return fields[0], fingerprint(base64.b64decode(fields[1], validate=True))
    except ValueError:
        return None


def _asyncssh() -> Any:
    """asyncssh, imported on first use (only the agent needs it) and without the
    CryptographyDeprecationWarning its DSA support raises under cryptography 48 and newer: a
    warning of a library on stderr would turn a CLI's one-line error into a dozen lines."""
    from cryptography.utils import CryptographyDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        import asyncssh
        import asyncssh.packet
    return asyncssh


async def _agent_keys(agent_path: str | None = None) -> list[SigningKey]:
    """The usable keys ssh-agent holds, in its order; empty when there is no agent."""
    asyncssh = _asyncssh()

    path = agent_path or os.environ.get("SSH_AUTH_SOCK")
    if not path:
        return []
    try:
        agent = await asyncssh.connect_agent(path)
    except (OSError, asyncssh.Error):
        return []
    try:
        pairs = await agent.get_keys()
    except (OSError, asyncssh.Error):
        return []
    finally:
        agent.close()
    keys = []
    for pair in pairs:
        key_type = pair.algorithm.decode("ascii", "replace")
        if key_type in ALGORITHM_FOR_KEY_TYPE:
            keys.append(
                SigningKey(key_type, fingerprint(pair.public_data), "ssh-agent", None, path)
            )
    return keys


async def find_signing_key(key_path: str | Path | None = None) -> SigningKey:
    """The key tokens will be signed with (see the module docstring for the order)."""
    if key_path is None and os.environ.get("DEPOT_KEY"):
        key_path = os.environ["DEPOT_KEY"]
    if key_path is not None:
        return await _named_key(Path(key_path).expanduser())
    agent = await _agent_keys()
    if agent:
        return agent[0]
    protected = []
    ssh_dir = Path.home() / ".ssh"
    for name in DEFAULT_KEY_FILES:
        path = ssh_dir / name
        if not path.is_file():
            continue
        try:
            return load_private_key_file(path)
        except PassphraseProtected:
            protected.append(str(path))
        except DepotError:
            continue
    hint = (
        f"; {', '.join(protected)} need a passphrase: add them to ssh-agent with ssh-add"
        if protected
        else ""
    )
    where = "ssh-agent has no key" if os.environ.get("SSH_AUTH_SOCK") else "SSH_AUTH_SOCK is unset"
    raise DepotError(f"no SSH key to sign a token with ({where}, no usable ~/.ssh/id_* file{hint})")


async def _named_key(path: Path) -> SigningKey:
    public = _public_key_file(path)
    if public is None:
        try:
            return load_private_key_file(path)
        except PassphraseProtected:
            public = _public_key_file(path.with_name(path.name + ".pub"))
            if public is None:
                raise DepotError(
                    f"{path} needs a passphrase: add it to ssh-agent (ssh-add {path})"
                ) from None
    for key in await _agent_keys():
        if key.fingerprint == public[1]:
            return key
    raise DepotError(f"the private key of {path} ({public[1]}) is not in ssh-agent: ssh-add it")


# -- signing ------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claims_for(
    key: SigningKey, audience: str | None, expires: timedelta, now: float | None = None
) -> dict[str, Any]:
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        FINGERPRINT_CLAIM: key.fingerprint,
        "iat": issued,
        "exp": issued + max(1, int(expires.total_seconds())),
    }
    if audience:
        claims["aud"] = audience.rstrip("/")
    return claims


async def sign_token(key: SigningKey, claims: dict[str, Any]) -> str:
    """A compact JWS of ``claims`` signed by ``key``."""
    header = {"alg": key.algorithm, "typ": "JWT"}
    if key.private_key is not None:
        token = JsonWebToken([key.algorithm]).encode(header, claims, key.private_key)
        return token.decode("ascii")
    # ssh-agent signs the JWS signing input itself; only the signature's encoding differs.
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = await _agent_sign(key, signing_input.encode("ascii"))
    return signing_input + "." + _b64url(signature)


async def _agent_sign(key: SigningKey, data: bytes) -> bytes:
    asyncssh = _asyncssh()
    SSHPacket = asyncssh.packet.SSHPacket

    try:
        agent = await asyncssh.connect_agent(key.agent_path or "")
    except (OSError, asyncssh.Error) as exc:
        raise DepotError(f"cannot reach ssh-agent: {exc}") from None
    try:
        for pair in await agent.get_keys():
            if fingerprint(pair.public_data) != key.fingerprint:
                continue
            if key.key_type == "ssh-rsa":
                pair.set_sig_algorithm(b"rsa-sha2-256")  # RS256 (RFC 8332), not SHA-1
            blob = await pair.sign_async(data)
            break
        else:
            raise DepotError(f"ssh-agent no longer holds {key.fingerprint}")
    except asyncssh.Error as exc:
        raise DepotError(f"ssh-agent refused to sign: {exc}") from None
    finally:
        agent.close()
    # An SSH signature is string(algorithm) + string(signature) (RFC 4253 6.6).
    packet = SSHPacket(blob)
    packet.get_string()
    raw = packet.get_string()
    if key.algorithm in _EC_SIGNATURE_BYTES:
        # SSH carries ECDSA as mpint r, mpint s (RFC 5656 3.1.2); JWS wants fixed-width r || s.
        inner = SSHPacket(raw)
        r, s = inner.get_mpint(), inner.get_mpint()
        size = _EC_SIGNATURE_BYTES[key.algorithm]
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return raw


async def mint_token_async(
    audience: str | None = None,
    key_path: str | Path | None = None,
    expires: str | float | timedelta = DEFAULT_EXPIRES,
    key: SigningKey | None = None,
) -> str:
    """A fresh token; ``key`` skips the key search (the proxy finds its key once)."""
    lifetime = parse_duration(expires)
    key = key or await find_signing_key(key_path)
    return await sign_token(key, claims_for(key, audience, lifetime))


def mint_token(
    audience: str | None = None,
    key_path: str | Path | None = None,
    expires: str | float | timedelta = DEFAULT_EXPIRES,
) -> str:
    """Synchronous :func:`mint_token_async`, callable whether or not an event loop is running."""
    return run_sync(mint_token_async(audience=audience, key_path=key_path, expires=expires))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="depot-mint-token")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class TokenSource:
    """Hands out a token for one server and mints a new one well before the old one expires.

    Used by ``depot proxy``: each request gets a token with at least ``renew_before`` left
    (a fifth of the lifetime, at most ten minutes), so a long ``nix copy`` never sends an
    expired one.
    """

    def __init__(
        self,
        audience: str | None,
        key_path: str | Path | None = None,
        lifetime: str | float | timedelta = timedelta(hours=1),
        clock: Any = time.time,
    ) -> None:
        self.audience = audience
        self.key_path = key_path
        self.lifetime = parse_duration(lifetime)
        self.renew_before = min(self.lifetime.total_seconds() / 5, 600.0)
        self.clock = clock
        self.key: SigningKey | None = None
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        async with self._lock:
            now = self.clock()
            if self._token is None or now >= self._expires_at - self.renew_before:
                if self.key is None:
                    self.key = await find_signing_key(self.key_path)
                claims = claims_for(self.key, self.audience, self.lifetime, now=now)
                self._token = await sign_token(self.key, claims)
                self._expires_at = claims["exp"]
            return self._token
