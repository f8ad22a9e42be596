"""SSH-key authentication: the auth file, JWT verification, and the authenticator behind the hook.

The auth file lists SSH public keys, one a line: ``<r|w> <ssh-keytype> <base64-key> [comment]``.
A client proves it holds one of the private keys with a JWT it signed itself (see
:mod:`depot.core.tokens`); the token names the key by its SHA256 fingerprint (``SHA256:...``, as
``ssh-keygen -l`` prints it, claim ``key_fingerprint`` as in the original depot). The server
verifies it with that key and only with the one algorithm that key type allows, so a token can
never choose ``none``, HMAC or another key's algorithm.

Rules, as users of the original depot expect: any ``r`` key makes every request need a token;
with only ``w`` keys, reads are open and writes need a ``w`` key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import signal
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from depot.core.auth import ALLOW, AuthDecision
from depot.core.errors import ConfigError
from depot.core.hookspecs import hookimpl
from depot.core.http import depot_root_path, external_base

with warnings.catch_warnings():
    # authlib.jose (what the brief names) warns that joserfc succeeds it, and its deprecate
    # module installs an "always" filter on import: both stay inside this block.
    import authlib.deprecate  # noqa: F401

    warnings.simplefilter("ignore")
    from authlib.jose import ECKey, JsonWebToken, OKPKey, RSAKey
    from authlib.jose.errors import JoseError

if TYPE_CHECKING:
    from depot.core.settings import Settings
    from starlette.requests import HTTPConnection

log = logging.getLogger("depot.core.auth")

#: The JWS algorithm each SSH key type signs with (RFC 8037 for EdDSA, RFC 7518 for the rest).
#: ECDSA's hash is fixed by the curve in SSH (RFC 5656 6.2.1), so P-521 means ES512.
ALGORITHM_FOR_KEY_TYPE: Mapping[str, str] = {
    "ssh-ed25519": "EdDSA",
    "ssh-rsa": "RS256",
    "ecdsa-sha2-nistp256": "ES256",
    "ecdsa-sha2-nistp384": "ES384",
    "ecdsa-sha2-nistp521": "ES512",
}
_CURVE_FOR_KEY_TYPE = {
    "ecdsa-sha2-nistp256": "secp256r1",
    "ecdsa-sha2-nistp384": "secp384r1",
    "ecdsa-sha2-nistp521": "secp521r1",
}
MIN_RSA_BITS = 2048
#: Clock skew tolerated on ``exp``, ``iat`` and ``nbf``.
LEEWAY_SECONDS = 60
#: The claim that names the signing key (the original depot's name for it).
FINGERPRINT_CLAIM = "key_fingerprint"
#: Paths that never need a token: load balancers and ``depot serve``'s own start-up probe.
UNAUTHENTICATED_PATHS = frozenset({"/-/health"})
#: How many verified tokens an authenticator remembers (see ``SshKeyAuthenticator._verify``).
VERIFIED_CACHE_SIZE = 4096


def fingerprint(key_blob: bytes) -> str:
    """The key's SHA256 fingerprint exactly as ``ssh-keygen -l`` prints it (``SHA256:...``)."""
    digest = hashlib.sha256(key_blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class AuthorizedKey:
    """One line of the auth file."""

    permission: str  # "r" or "w"
    key_type: str
    fingerprint: str
    comment: str
    line: int
    jwk: Any  # the authlib key object, imported once

    @property
    def algorithm(self) -> str:
        return ALGORITHM_FOR_KEY_TYPE[self.key_type]

    @property
    def can_write(self) -> bool:
        return self.permission == "w"


@dataclass(frozen=True)
class AuthKeys:
    """The parsed auth file: keys by fingerprint."""

    keys: Mapping[str, AuthorizedKey]

    @property
    def reads_need_token(self) -> bool:
        """Any ``r`` key closes reads too (the original depot's rule)."""
        return any(k.permission == "r" for k in self.keys.values())


class AuthFileError(ConfigError):
    """A line of the auth file cannot be used; the message names the line."""


def parse_public_key(key_type: str, key_b64: str) -> tuple[bytes, Any]:
    """Decode one SSH public key; return its wire blob and the matching authlib key.

    Raises ValueError with a short reason a person can act on.
    """
    if key_type not in ALGORITHM_FOR_KEY_TYPE:
        raise ValueError(
            f"unsupported key type {key_type!r} (supported: {', '.join(ALGORITHM_FOR_KEY_TYPE)})"
        )
    try:
        blob = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key is not valid base64") from None
    # The blob starts with its own type name (RFC 4253 6.6); a mismatch means a pasting error.
    if len(blob) < 4 or blob[4 : 4 + int.from_bytes(blob[:4], "big")] != key_type.encode():
        raise ValueError(f"the key data is not an {key_type} key")
    try:
        public = load_ssh_public_key(f"{key_type} {key_b64}".encode())
    except (ValueError, TypeError) as exc:  # cryptography's reasons are one line
        raise ValueError(f"the key cannot be read: {exc}") from None
    if isinstance(public, ed25519.Ed25519PublicKey):
        return blob, OKPKey.import_key(public)
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise ValueError(
                f"RSA key of {public.key_size} bits is too short (at least {MIN_RSA_BITS})"
            )
        return blob, RSAKey.import_key(public)
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.name != _CURVE_FOR_KEY_TYPE[key_type]:
            raise ValueError(f"the key's curve {public.curve.name} does not match {key_type}")
        return blob, ECKey.import_key(public)
    raise ValueError(f"unsupported key type {key_type!r}")  # pragma: no cover


def parse_auth_file(text: str, source: str = "auth file") -> AuthKeys:
    """Parse the auth file's text; raise :class:`AuthFileError` naming the first bad line."""
    keys: dict[str, AuthorizedKey] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 3)

        def bad(problem: str, number: int = number) -> AuthFileError:
            return AuthFileError(f"{source} line {number}: {problem}")

        if fields[0] not in ("r", "w"):
            raise bad(f"permission must be r or w, not {fields[0][:20]!r}")
        if len(fields) < 3:
            raise bad("expected '<r|w> <ssh-keytype> <base64-key> [comment]'")
        permission, key_type, key_b64 = fields[:3]
        comment = fields[3] if len(fields) > 3 else ""
        try:
            blob, jwk = parse_public_key(key_type, key_b64)
        except ValueError as exc:
            raise bad(str(exc)) from None
        fp = fingerprint(blob)
        if fp in keys:
            raise bad(f"key {fp} is already listed on line {keys[fp].line}")
        keys[fp] = AuthorizedKey(permission, key_type, fp, comment, number, jwk)
    if not keys:
        # Refused rather than read as "open reads, no writers": an editor that truncates before
        # writing must not open a closed depot, even for one request.
        raise AuthFileError(
            f"{source} lists no keys (to turn authentication off, drop --auth-file)"
        )
    return AuthKeys(keys)


class TokenRejected(Exception):
    """A token that does not prove anything; the message is safe to show (never the token)."""


def _b64url_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def _claimed_fingerprint(token: str) -> str:
    """Read the fingerprint claim before verification: it only selects the key to verify with."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise TokenRejected("malformed token")
    try:
        payload = _b64url_json(parts[1])
    except (ValueError, UnicodeError):
        raise TokenRejected("malformed token") from None
    claimed = payload.get(FINGERPRINT_CLAIM) if isinstance(payload, dict) else None
    if not isinstance(claimed, str):
        raise TokenRejected(f"token has no {FINGERPRINT_CLAIM} claim")
    return claimed


def check_token(
    token: str, auth_keys: AuthKeys, now: float | None = None
) -> tuple[AuthorizedKey, Any]:
    """Verify signature, ``exp``, ``iat`` and ``nbf``; return the signing key and the claims."""
    claimed = _claimed_fingerprint(token)
    key = auth_keys.keys.get(claimed)
    if key is None:
        raise TokenRejected(f"key {claimed[:60]} is not in the auth file")
    # One algorithm, fixed by the key's type: the header's "alg" only has to agree with it.
    jwt = JsonWebToken([key.algorithm])
    options = {
        "exp": {"essential": True},
        "iat": {"essential": True},
        FINGERPRINT_CLAIM: {"essential": True, "value": key.fingerprint},
    }
    try:
        claims = jwt.decode(token, key.jwk, claims_options=options)
        claims.validate(now=int(now if now is not None else time.time()), leeway=LEEWAY_SECONDS)
    except JoseError as exc:
        raise TokenRejected(f"token refused: {exc.error}") from None
    except (ValueError, TypeError, UnicodeError):
        raise TokenRejected("malformed token") from None
    return key, claims


def check_audience(claims: Mapping[str, Any], audiences: Iterable[str]) -> None:
    """A token with an ``aud`` claim must name one of ``audiences`` (or a URL below one)."""
    aud = claims.get("aud")
    if aud is not None and not _audience_matches(aud, audiences):
        raise TokenRejected("token was made for another server (aud)")


def verify_token(
    token: str,
    auth_keys: AuthKeys,
    audiences: Iterable[str] = (),
    now: float | None = None,
) -> AuthorizedKey:
    """Check a token against the auth file and return the key that signed it.

    ``audiences`` are the URLs this server answers to; a token with an ``aud`` claim must name
    one of them (or a URL below one), a token without one is accepted.
    """
    key, claims = check_token(token, auth_keys, now)
    check_audience(claims, audiences)
    return key


def _origin(url: str) -> tuple[str, str] | None:
    """(host[:port] with the scheme's default port dropped, path without trailing slash)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname.lower()
    netloc = host if port in (None, default) else f"{host}:{port}"
    return netloc, parts.path.rstrip("/")


def _audience_matches(aud: Any, audiences: Iterable[str]) -> bool:
    """True when ``aud`` (a string or a list) names this server, or a URL below it.

    The scheme is not compared: behind a TLS-terminating proxy the client says https and the
    server sees http, yet both name the same depot.
    """
    claimed = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    ours = [o for o in (_origin(a) for a in audiences) if o is not None]
    for value in claimed:
        theirs = _origin(value) if isinstance(value, str) else None
        if theirs is None:
            continue
        for netloc, root in ours:
            if theirs[0] == netloc and (theirs[1] == root or theirs[1].startswith(root + "/")):
                return True
    return False


def token_from_headers(authorization: str | None) -> str | None:
    """The JWT in ``Bearer <jwt>`` or ``Basic base64(<any user>:<jwt>)``, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        _user, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


class SshKeyAuthenticator:
    """Judges requests against the auth file, re-reading it when it changes or on SIGHUP.

    The file is checked with one ``os.stat`` per request (inode, size, mtime, ctime), so a key
    removed from the file stops working on the next request, in every worker process, without a
    restart. If the file becomes unreadable or invalid, every request that needs a token is
    refused until it is fixed: a half-edited file must not keep a removed key alive.
    """

    def __init__(self, path: Path, settings: Settings | None = None) -> None:
        self.path = path
        self.settings = settings
        self._stamp: tuple[int, ...] | None = None
        self._keys: AuthKeys | None = None
        self._broken: str | None = None
        self._hup_installed = False
        self._verified: OrderedDict[bytes, tuple[AuthKeys, AuthorizedKey, Any]] = OrderedDict()
        self._load(strict=True)
        self._install_sighup()

    # -- the file ---------------------------------------------------------------------------

    def _file_stamp(self) -> tuple[int, ...]:
        st = os.stat(self.path)
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _load(self, strict: bool = False) -> None:
        try:
            stamp = self._file_stamp()
            text = self.path.read_text(encoding="utf-8")
            keys = parse_auth_file(text, source=str(self.path))
        except (OSError, UnicodeError, AuthFileError) as exc:
            reason = (
                str(exc)
                if isinstance(exc, AuthFileError)
                else f"cannot read auth file {self.path}: {getattr(exc, 'strerror', None) or exc}"
            )
            if strict:
                raise ConfigError(reason) from None
            if reason != self._broken:
                log.error(
                    "auth file invalid; refusing authenticated requests", extra={"reason": reason}
                )
            self._broken = reason
            self._stamp = None
            return
        if self._keys is not None or self._broken:
            log.info(
                "auth file reloaded",
                extra={"path": str(self.path), "keys": len(keys.keys)},
            )
        self._keys, self._stamp, self._broken = keys, stamp, None

    def _refresh(self) -> None:
        """Re-read the file when its stat differs from what was loaded (cheap per request)."""
        try:
            stamp = self._file_stamp()
        except OSError:
            stamp = None
        if stamp is None or stamp != self._stamp:
            self._load()

    def reload(self) -> None:
        """Re-read the file now (SIGHUP)."""
        self._stamp = None
        self._load()

    def _install_sighup(self) -> None:
        try:
            if signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN, None):
                return  # an application embedding depot handles SIGHUP itself: leave it alone
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        except (RuntimeError, NotImplementedError, ValueError, AttributeError):
            return  # no loop, not the main thread, or no SIGHUP here: the stat check suffices
        self._hup_installed = True

    # -- requests ---------------------------------------------------------------------------

    def _audiences(self, request: HTTPConnection) -> list[str]:
        urls = [external_base(request, self.settings)] if self.settings else []  # type: ignore[arg-type]
        host = request.headers.get("host")
        if host:
            urls.append(f"{request.url.scheme}://{host}{depot_root_path(request)}")  # type: ignore[arg-type]
        return urls

    async def authorize(self, request: HTTPConnection, write: bool) -> AuthDecision:
        path = request.scope.get("path", "")
        root = request.scope.get("depot.root_path", "")
        if path[len(root) :] in UNAUTHENTICATED_PATHS and not write:
            return ALLOW
        self._refresh()
        keys = self._keys
        if self._broken or keys is None:
            return AuthDecision(503, "authentication is misconfigured on this server; see its log")
        if not write and not keys.reads_need_token:
            return ALLOW
        token = token_from_headers(request.headers.get("authorization"))
        if token is None:
            return AuthDecision(401, "authentication required: send a token from `depot token`")
        try:
            key = self._verify(token, keys, self._audiences(request))
        except TokenRejected as exc:
            log.info("token refused", extra={"reason": str(exc), "path": path})
            return AuthDecision(401, str(exc))
        if write and not key.can_write:
            return AuthDecision(403, f"key {key.fingerprint} may read but not write")
        return AuthDecision(identity=key.comment or key.fingerprint)

    def _verify(self, token: str, keys: AuthKeys, audiences: list[str]) -> AuthorizedKey:
        """:func:`verify_token`, remembering tokens already verified against this very file.

        A client sends the same token on every request; verifying an ECDSA signature through
        authlib costs about a millisecond. An entry is used only while ``keys`` is the same
        parsed file (a reload empties the cache in effect) and the token has not expired; the
        audience is checked every time because it depends on the request.
        """
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = time.time()
        cached = self._verified.get(digest)
        if cached is not None and cached[0] is keys and cached[2]["exp"] >= now - LEEWAY_SECONDS:
            key, claims = cached[1], cached[2]
        else:
            key, claims = check_token(token, keys, now)
            self._verified[digest] = (keys, key, claims)
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        check_audience(claims, audiences)
        return key

    async def close(self) -> None:
        if self._hup_installed:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._hup_installed = False


@hookimpl(trylast=True)
def depot_authenticator(settings: Settings) -> SshKeyAuthenticator | None:
    """The built-in SSH-key authenticator, when ``--auth-file`` is given."""
    if settings.auth_file is None:
        return None
    return SshKeyAuthenticator(settings.auth_file, settings)
