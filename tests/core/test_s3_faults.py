"""A running ``depot serve`` on S3 when the object store goes away, comes back, or an upload is cut.

The store is a private moto server that the test kills (every connection drops) and starts again
on the same port. Requests go through depot-raw's ``/raw`` routes (blob + row per file).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from typing import Any

import httpx
from depot.core.testing_services import MotoServer, S3Bucket


def put_file(url: str, name: str, data: bytes) -> httpx.Response:
    return httpx.put(
        f"{url}/raw/files/{name}",
        content=data,
        headers={"X-Checksum-Sha256": hashlib.sha256(data).hexdigest()},
        timeout=120,
    )


def log_records(server: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def test_store_outage_answers_503_then_recovers(
    make_moto_server: Any, make_depot_server: Any
) -> None:
    moto: MotoServer = make_moto_server()
    bucket = S3Bucket(moto, "outage", moto.client()).create()
    server = make_depot_server(*bucket.serve_args)
    assert put_file(server.url, "before.bin", b"before").status_code == 201

    moto.stop()
    read = httpx.get(f"{server.url}/raw/files/before.bin", timeout=120)
    assert read.status_code == 503 and read.headers["retry-after"]
    write = put_file(server.url, "during.bin", b"during")
    assert write.status_code == 503
    assert "during.bin" not in [f["name"] for f in httpx.get(f"{server.url}/raw/").json()]
    outages = [r for r in log_records(server) if r["message"] == "backing service unavailable"]
    assert outages and "EndpointConnectionError" in outages[0]["error"]
    assert "Traceback" not in server.log(), "an outage is one log line per request, no traceback"
    assert server.process.poll() is None, "depot serve must keep running"
    health = httpx.get(f"{server.url}/-/health", timeout=120)
    assert health.status_code == 503, "a load balancer must take this replica out of rotation"
    assert health.json()["reason"].startswith("blob store: ")

    # The store comes back (moto restarts empty, so the bucket is created again).
    moto.start()
    bucket.create()
    assert put_file(server.url, "after.bin", b"after").status_code == 201
    assert httpx.get(f"{server.url}/raw/files/after.bin").content == b"after"
    assert httpx.get(f"{server.url}/-/health").json()["status"] == "ok"


def test_upload_cut_off_midway_leaves_no_object_and_no_row(
    s3_bucket: S3Bucket, postgres_url: str, make_depot_server: Any
) -> None:
    server = make_depot_server(*s3_bucket.serve_args, "--database-url", postgres_url)
    declared, sent = 40 * 1024 * 1024, 20 * 1024 * 1024  # past two multipart parts
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"PUT /raw/files/cut.bin HTTP/1.1\r\nHost: depot\r\n"
            + f"Content-Length: {declared}\r\n\r\n".encode()
        )
        chunk = os.urandom(1024 * 1024)
        for _ in range(sent // len(chunk)):
            sock.sendall(chunk)
    # The server notices the disconnect and aborts; its access line comes after the abort.
    for _ in range(300):
        if any(r.get("path") == "/raw/files/cut.bin" for r in log_records(server)):
            break
        time.sleep(0.1)
    assert s3_bucket.pending_multipart_uploads() == []
    assert s3_bucket.object_keys() == []
    assert httpx.get(f"{server.url}/raw/").json() == []
    assert httpx.get(f"{server.url}/raw/files/cut.bin").status_code == 404
    assert server.process.poll() is None
