"""Telling a backing-service outage (database, object store) or a store that refuses writes
from a bug.

An outage is answered 503 with ``Retry-After`` and logged with its cause; the server keeps running
and recovers when the service returns. A store that cannot take a write (a full disk, a quota, a
read-only file system, lost permissions, SQLite's "database or disk is full") is answered 507
Insufficient Storage (:func:`storage_refusal`): reads keep working, and the operator has
something to act on. Anything else is a 500.

The drivers' exception types are imported when installed (asyncpg comes with depot-core's
PostgreSQL support, botocore with the ``s3`` backend) so that the app can register a handler for
each type; :func:`is_backend_outage` then decides per exception, because one type (botocore's
``ClientError``) covers both "the store is down" and "no such key".
"""

from __future__ import annotations

import errno
import sqlite3

_BASE_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    sqlite3.OperationalError,
)


def _asyncpg_types() -> tuple[type[BaseException], ...]:
    try:
        import asyncpg
    except ImportError:  # asyncpg is optional when only SQLite is used
        return ()
    return (
        asyncpg.PostgresConnectionError,  # class 08: the connection failed or was lost
        asyncpg.InterfaceError,  # "connection is closed" after the server went away
        asyncpg.exceptions.OperatorInterventionError,  # class 57: shutdown, cannot connect now
        asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
    )


def _botocore_types() -> tuple[type[BaseException], ...]:
    try:
        from botocore import exceptions
    except ImportError:  # botocore comes with the s3 backend only
        return ()
    return (
        exceptions.ConnectionError,  # endpoint unreachable, connect timeout
        exceptions.HTTPClientError,  # connection closed or read timeout mid-request
        exceptions.ClientError,  # decided by code below
    )


#: Exception types that may mean an outage; the app registers its 503 handler for each.
OUTAGE_TYPES: tuple[type[BaseException], ...] = _BASE_TYPES + _asyncpg_types() + _botocore_types()

#: S3 error codes that mean "the store cannot serve now", whatever their HTTP status.
_S3_OUTAGE_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        # Credentials revoked or expired while running: unusable until an operator acts.
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "NoSuchBucket",
    }
)


def _is_s3_outage(exc: BaseException) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return status >= 500 or code in _S3_OUTAGE_CODES


def is_backend_outage(exc: BaseException) -> bool:
    """True when ``exc`` means a backing service is unreachable or overloaded."""
    if not isinstance(exc, OUTAGE_TYPES):
        return False
    try:
        from botocore.exceptions import ClientError
    except ImportError:
        return True
    if isinstance(exc, ClientError):
        return _is_s3_outage(exc)
    return True


#: ``errno`` values of a write the store refuses, with the cause as the log names it.
_STORAGE_ERRNOS = {
    errno.ENOSPC: "full",
    errno.EDQUOT: "quota",
    errno.EFBIG: "file too large",
    errno.EROFS: "read-only",
    errno.EACCES: "permission",
    errno.EPERM: "permission",
}
#: SQLite's extended result codes (primary code in the low byte) for the same conditions.
_SQLITE_CODES = {13: "full", 8: "read-only", 3: "permission"}  # SQLITE_FULL, _READONLY, _PERM


def storage_refusal(exc: BaseException) -> str | None:
    """The cause (``full``, ``quota``, ``read-only``, ...) when ``exc`` means the blob store or
    the database cannot take a write; None for anything else."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return None if code is None else _SQLITE_CODES.get(code & 0xFF)
    if isinstance(exc, OSError) and not isinstance(exc, (ConnectionError, TimeoutError)):
        return _STORAGE_ERRNOS.get(exc.errno or 0)
    return None
