"""The landing page, browse pages and /metrics, through the example plugin's catalog."""

from __future__ import annotations

import httpx
from depot.core.testing import metric


def test_counters_move_by_what_was_done(depot_server) -> None:
    url = depot_server.url
    before = httpx.get(url + "/metrics").text
    stored = httpx.put(url + "/raw/files/one.bin", content=b"a" * 1000)
    fetched = httpx.get(url + "/raw/files/one.bin")
    refused = httpx.put(
        url + "/raw/files/bad.bin", content=b"x", headers={"X-Checksum-Sha256": "0" * 64}
    )
    assert (stored.status_code, fetched.status_code, refused.status_code) == (201, 200, 400)
    body_bytes = sum(len(r.content) for r in (stored, fetched, refused))
    after = httpx.get(url + "/metrics").text
    for name, labels, delta in [
        ("depot_http_requests_total", {"ecosystem": "raw", "method": "PUT", "status": "201"}, 1),
        ("depot_http_requests_total", {"ecosystem": "raw", "method": "GET", "status": "200"}, 1),
        ("depot_bytes_received_total", {"ecosystem": "raw"}, 1001),
        ("depot_bytes_served_total", {"ecosystem": "raw"}, body_bytes),
        ("depot_upload_verification_failures_total", {"ecosystem": "raw"}, 1),
        ("depot_artifacts_stored_total", {"ecosystem": "raw"}, 1),
    ]:
        assert metric(after, name, **labels) - metric(before, name, **labels) == delta, (
            name,
            labels,
        )
    assert metric(after, "depot_stored_objects", ecosystem="raw") == 1
    assert metric(after, "depot_stored_bytes", ecosystem="raw") == 1000
    assert metric(after, "depot_http_request_duration_seconds_count", ecosystem="raw") >= 3


def test_metrics_on_a_separate_port(make_depot_server) -> None:
    from depot.core.testing import free_port

    port = free_port()
    server = make_depot_server("--metrics-listen-addr", f"127.0.0.1:{port}")
    assert httpx.get(server.url + "/metrics").status_code == 404
    assert "depot_http_requests_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text


def test_landing_page_shows_counts_and_newest(depot_server) -> None:
    httpx.put(depot_server.url + "/raw/files/report.pdf", content=b"%PDF" * 256)
    page = httpx.get(depot_server.url + "/").text
    assert "1 stored, 1.0 KiB" in page
    assert f'href="{depot_server.url}/raw/files/report.pdf"' in page


def test_browse_search_finds_and_escapes(depot_server) -> None:
    for name in ("alpha.txt", "beta.txt"):
        httpx.put(depot_server.url + f"/raw/files/{name}", content=name.encode())
    found = httpx.get(depot_server.url + "/-/browse/raw", params={"q": "alph"}).text
    assert "alpha.txt" in found and "beta.txt" not in found
    hostile = httpx.get(depot_server.url + "/-/browse/raw", params={"q": "<script>"}).text
    assert "<script>" not in hostile and "&lt;script&gt;" in hostile
    assert httpx.get(depot_server.url + "/-/browse/nothing").status_code == 404


async def test_two_depots_in_one_process_count_apart(tmp_path) -> None:
    from depot.core import create_app

    apps = [create_app(store_path=tmp_path / name) for name in ("one", "two")]
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://depot.test")
        for app in apps
    ]
    try:
        for _ in range(3):
            assert (await clients[0].get("/-/health")).status_code == 200
        texts = [(await client.get("/metrics")).text for client in clients]
    finally:
        for client, app in zip(clients, apps, strict=True):
            await client.aclose()
            await app.state.depot.shutdown()
    assert metric(texts[0], "depot_http_requests_total", route="health") == 3
    assert metric(texts[1], "depot_http_requests_total", route="health") == 0
