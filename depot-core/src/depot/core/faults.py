"""Telling a backing-service outage (database, object store) from a bug.

An outage is answered 503 with ``Retry-After`` and logged with its cause; the server keeps running
and recovers when the service returns. Anything else is a 500.
"""

from __future__ import annotations

import sqlite3

OUTAGE_TYPES: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, sqlite3.OperationalError)


def is_backend_outage(exc: BaseException) -> bool:
    """True when ``exc`` means a backing service is unreachable or overloaded."""
    if isinstance(exc, OUTAGE_TYPES):
        return True
    try:
        import asyncpg
    except ImportError:  # asyncpg is optional when only SQLite is used
        return False
    return isinstance(exc, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError))
