"""`depot serve` as users run it: real HTTP, access logs, graceful shutdown, links."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import threading
import time

import httpx


def test_health_and_index_list_installed_ecosystems(depot_server) -> None:
    health = httpx.get(depot_server.url + "/-/health").json()
    assert health["status"] == "ok"
    assert {"nix", "npm", "pypi"} <= set(health["ecosystems"])
    page = httpx.get(depot_server.url + "/").text
    assert f'href="{depot_server.url}/nix/"' in page
    assert httpx.get(depot_server.url + "/no/such/thing").status_code == 404


def test_one_json_access_line_per_request(depot_server) -> None:
    httpx.get(depot_server.url + "/nix/nix-cache-info")
    log = depot_server.wait_for_log('"path": "/nix/nix-cache-info"')
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "depot.access"]
    assert any(a["path"] == "/nix/nix-cache-info" and a["status"] == 200 for a in access)
    assert all({"time", "level", "message"} <= set(line) for line in lines)


def test_plugin_blob_round_trip_with_ranges(depot_server) -> None:
    data = os.urandom(3 * 1024 * 1024)
    url = depot_server.url + "/raw/files/data.bin"
    put = httpx.put(
        url, content=data, headers={"X-Checksum-Sha256": hashlib.sha256(data).hexdigest()}
    )
    assert put.status_code == 201, put.text
    got = httpx.get(url)
    assert got.content == data and got.headers["content-length"] == str(len(data))
    assert got.headers["accept-ranges"] == "bytes"
    part = httpx.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    head = httpx.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    assert httpx.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416


def test_bad_upload_is_refused_and_nothing_stored(depot_server) -> None:
    url = depot_server.url + "/raw/files/bad.bin"
    refused = httpx.put(url, content=b"abc", headers={"X-Checksum-Sha256": "0" * 64})
    assert refused.status_code == 400
    assert "sha256" in refused.text and refused.text.count("\n") == 1
    assert httpx.get(url).status_code == 404
    blobs = depot_server.store_path / "blobs" / "raw"
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))


def test_sigterm_lets_the_request_in_flight_finish(depot_server) -> None:
    size = 4 * 1024 * 1024
    conn = http.client.HTTPConnection("127.0.0.1", depot_server.port, timeout=30)
    conn.putrequest("PUT", "/raw/files/slow.bin")
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    conn.send(b"x" * (size // 2))
    time.sleep(0.5)
    assert depot_server.process is not None
    depot_server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    conn.send(b"x" * (size // 2))
    response = conn.getresponse()
    assert response.status == 201
    assert depot_server.process.wait(timeout=30) == 0


def test_links_follow_the_host_the_client_used(depot_server) -> None:
    page = httpx.get(depot_server.url + "/", headers={"Host": "depot.example:9000"}).text
    assert 'href="http://depot.example:9000/nix/"' in page


def test_forwarded_headers_only_when_trusted(make_depot_server) -> None:
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "cache.example",
        "X-Forwarded-Prefix": "/d",
    }
    untrusted = make_depot_server()
    assert "https://cache.example" not in httpx.get(untrusted.url + "/", headers=headers).text
    trusted = make_depot_server("--trust-proxy-headers")
    assert (
        'href="https://cache.example/d/nix/"' in httpx.get(trusted.url + "/", headers=headers).text
    )


def test_base_url_overrides_request(make_depot_server) -> None:
    server = make_depot_server("--base-url", "https://pkgs.example/depot/")
    assert 'href="https://pkgs.example/depot/nix/"' in httpx.get(server.url + "/").text


def test_workers_share_one_port(make_depot_server) -> None:
    server = make_depot_server("--workers", "2")
    results: list[int] = []

    def fetch() -> None:
        results.append(httpx.get(server.url + "/-/health").status_code)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8


def test_a_client_gone_mid_upload_is_a_400_line_and_nothing_stored(depot_server) -> None:
    """Hanging up mid-body is the client's doing: no 500, no traceback, no file."""
    import socket

    with socket.create_connection(("127.0.0.1", depot_server.port)) as sock:
        sock.sendall(
            b"PUT /raw/files/cut.bin HTTP/1.1\r\nHost: depot\r\nContent-Length: 1000000\r\n\r\n"
            + b"x" * 1000
        )
    line = depot_server.wait_for_log('"path": "/raw/files/cut.bin"')
    access = [json.loads(x) for x in line.splitlines() if "/raw/files/cut.bin" in x]
    assert access[-1]["status"] == 400
    assert "Traceback" not in depot_server.log()
    assert httpx.get(depot_server.url + "/raw/files/cut.bin").status_code == 404
