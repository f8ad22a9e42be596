"""Conditional requests on blobs, through the example third-party plugin (depot-raw): every
ecosystem's artifacts get the same ETag, Last-Modified, Cache-Control and 304 from the core."""

from __future__ import annotations

import hashlib
from email.utils import formatdate, parsedate_to_datetime

import httpx
import pytest

pytest.importorskip("depot_raw", reason="examples/depot-raw is not installed")

BODY = b"an immutable artifact\n"
SHA256 = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
async def stored(app_client: httpx.AsyncClient) -> httpx.Response:
    assert (await app_client.put("/raw/files/a.txt", content=BODY)).status_code == 201
    return await app_client.get("/raw/files/a.txt")


async def test_an_artifact_carries_validators_and_is_immutable(stored: httpx.Response) -> None:
    assert stored.headers["etag"] == f'"{SHA256}"'
    assert stored.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert parsedate_to_datetime(stored.headers["last-modified"]).year >= 2024


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "conditions",
    [
        {"If-None-Match": f'"{SHA256}"'},
        {"If-None-Match": f'"other", W/"{SHA256}"'},
        {"If-None-Match": "*"},
        {"If-Modified-Since": "LAST_MODIFIED"},
    ],
    ids=["etag", "weak-in-list", "star", "modified-since"],
)
async def test_a_client_holding_the_artifact_gets_304(
    method: str, conditions: dict[str, str], stored: httpx.Response, app_client: httpx.AsyncClient
) -> None:
    headers = {k: v.replace("LAST_MODIFIED", stored.headers["last-modified"])
               for k, v in conditions.items()}  # fmt: skip
    response = await app_client.request(method, "/raw/files/a.txt", headers=headers)
    assert response.status_code == 304 and response.content == b""
    assert response.headers["etag"] == stored.headers["etag"]
    assert response.headers["cache-control"] == stored.headers["cache-control"]


@pytest.mark.parametrize(
    "conditions",
    [
        {"If-None-Match": '"something-else"'},
        {"If-Modified-Since": formatdate(0, usegmt=True)},
        {"If-Modified-Since": "not a date"},
        # If-None-Match decides when both are sent (RFC 9110 section 13.2.2).
        {"If-None-Match": '"something-else"', "If-Modified-Since": "LAST_MODIFIED"},
    ],
    ids=["other-etag", "older-date", "bad-date", "etag-wins"],
)
async def test_a_stale_or_unparsable_condition_gets_the_bytes(
    conditions: dict[str, str], stored: httpx.Response, app_client: httpx.AsyncClient
) -> None:
    headers = {k: v.replace("LAST_MODIFIED", stored.headers["last-modified"])
               for k, v in conditions.items()}  # fmt: skip
    response = await app_client.get("/raw/files/a.txt", headers=headers)
    assert response.status_code == 200 and response.content == BODY


async def test_ranges_carry_the_validators_too(
    stored: httpx.Response, app_client: httpx.AsyncClient
) -> None:
    response = await app_client.get("/raw/files/a.txt", headers={"Range": "bytes=3-8"})
    assert response.status_code == 206 and response.content == BODY[3:9]
    assert response.headers["etag"] == stored.headers["etag"]
