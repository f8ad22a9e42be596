"""A running ``depot serve`` on PostgreSQL when the database stops and starts again.

The database is a throwaway cluster of the test's own (``pg_ctl`` on a free port), so stopping it
touches nothing else on the machine. Requests go through depot-raw's ``/raw`` routes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx


def put_file(url: str, name: str, data: bytes) -> httpx.Response:
    return httpx.put(
        f"{url}/raw/files/{name}",
        content=data,
        headers={"X-Checksum-Sha256": hashlib.sha256(data).hexdigest()},
        timeout=60,
    )


def test_database_outage_answers_503_then_recovers(
    make_postgres_instance: Any, make_depot_server: Any
) -> None:
    postgres = make_postgres_instance()
    server = make_depot_server("--database-url", postgres.url)
    assert put_file(server.url, "before.bin", b"before").status_code == 201

    postgres.stop()
    health = httpx.get(f"{server.url}/-/health")
    assert health.status_code == 503
    read = httpx.get(f"{server.url}/raw/files/before.bin")
    assert read.status_code == 503 and read.headers["retry-after"]
    assert "temporarily unavailable" in read.text
    assert put_file(server.url, "during.bin", b"during").status_code == 503
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(line["message"] == "backing service unavailable" for line in lines)
    assert "Traceback" not in server.log(), "an outage is one log line per request, no traceback"
    assert server.process.poll() is None, "depot serve must keep running"

    postgres.start()
    # The pool reconnects by itself: the very next requests succeed, no restart of depot.
    assert httpx.get(f"{server.url}/-/health").status_code == 200
    assert httpx.get(f"{server.url}/raw/files/before.bin").content == b"before"
    assert put_file(server.url, "after.bin", b"after").status_code == 201
    names = [f["name"] for f in httpx.get(f"{server.url}/raw/").json()]
    assert names == ["after.bin", "before.bin"], "the write during the outage left no row"
