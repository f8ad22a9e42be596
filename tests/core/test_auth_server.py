"""A real ``depot serve --auth-file``: who gets in, who is refused, and what the log keeps."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import time

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from depot.core.testing import DepotServer, start_depot_with_auth
from depot.core.tokens import (
    claims_for,
    find_signing_key,
    mint_token,
    parse_duration,
    run_sync,
    sign_token,
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def writer(make_ssh_key):
    return make_ssh_key("ed25519")


@pytest.fixture(scope="module")
def reader(make_ssh_key):
    return make_ssh_key("ecdsa-p256")


@pytest.fixture(scope="module")
def outsider(make_ssh_key):
    return make_ssh_key("rsa")


@pytest.fixture(autouse=True)
def no_user_keys(monkeypatch, tmp_path):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("DEPOT_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


def start_depot(directory, *lines):
    server = start_depot_with_auth(directory, "# team", *lines)
    server.auth_path = directory / "auth.keys"
    return server


@pytest.fixture(scope="module")
def shared_depot(tmp_path_factory, writer, reader):
    """An ``r`` key is listed: every request needs a token. Tests must not change its file."""
    server = start_depot(
        tmp_path_factory.mktemp("closed"), writer.auth_line("w"), reader.auth_line("r")
    )
    yield server
    server.stop()


@pytest.fixture
def closed_depot(tmp_path, writer, reader):
    """Like ``shared_depot``, for a test that edits the auth file or stops the server."""
    server = start_depot(tmp_path, writer.auth_line("w"), reader.auth_line("r"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def write_only_depot(tmp_path_factory, writer):
    server = start_depot(tmp_path_factory.mktemp("write-only"), writer.auth_line("w"))
    yield server
    server.stop()


def token_for(key, server=None, **claims_override):
    signing_key = run_sync(find_signing_key(key.path))
    claims = claims_for(signing_key, server.url if server else None, parse_duration("1h"))
    claims.update(claims_override)
    return run_sync(sign_token(signing_key, claims))


def forged(writer) -> dict[str, str]:
    """Tokens an attacker could make without the private key, by name."""
    fp = writer.fingerprint
    now = int(time.time())
    payload = b64url(json.dumps({"key_fingerprint": fp, "iat": now, "exp": now + 3600}).encode())
    unsigned = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + payload
    hs_input = (
        b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + payload
    ).encode()
    pem = writer.public_path.read_bytes()
    public = serialization.load_ssh_public_key(pem).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "alg none": unsigned + ".",
        "HS256 keyed with the OpenSSH public key": hs_input.decode()
        + "."
        + b64url(hmac.new(pem.strip(), hs_input, hashlib.sha256).digest()),
        "HS256 keyed with the PEM public key": hs_input.decode()
        + "."
        + b64url(hmac.new(public, hs_input, hashlib.sha256).digest()),
    }


REFUSALS = [
    "no token",
    "alg none",
    "HS256 keyed with the OpenSSH public key",
    "HS256 keyed with the PEM public key",
    "tampered payload",
    "expired",
    "unknown key",
    "garbage bearer",
    "garbage basic",
    "three garbage parts",
    "other server's audience",
    "other scheme",
    "issued in the future",
    "no expiry",
]


def refused_headers(case, server, writer, outsider) -> dict[str, str]:
    if case == "no token":
        return {}
    if case in forged(writer):
        return bearer(forged(writer)[case])
    if case == "tampered payload":
        header, payload, signature = token_for(writer, server).split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["exp"] += 10 * 365 * 86400
        return bearer(".".join([header, b64url(json.dumps(claims).encode()), signature]))
    if case == "expired":
        old = int(time.time()) - 7200
        return bearer(token_for(writer, server, iat=old, exp=old + 3600))
    if case == "issued in the future":
        later = int(time.time()) + 3600
        return bearer(token_for(writer, server, iat=later, exp=later + 3600))
    if case == "no expiry":
        signing_key = run_sync(find_signing_key(writer.path))
        claims = claims_for(signing_key, server.url, parse_duration("1h"))
        del claims["exp"]
        return bearer(run_sync(sign_token(signing_key, claims)))
    if case == "unknown key":
        return bearer(token_for(outsider, server))
    if case == "other server's audience":
        return bearer(token_for(writer, None, aud="http://elsewhere.test:8080"))
    return {
        "garbage bearer": {"Authorization": "Bearer not-a-token"},
        "garbage basic": {"Authorization": "Basic !!!notbase64"},
        "three garbage parts": {"Authorization": "Bearer e30.e30.e30"},
        "other scheme": {"Authorization": "Digest username=x"},
    }[case]


@pytest.mark.parametrize("case", REFUSALS)
def test_refused_with_401_and_a_challenge(case, shared_depot, writer, outsider):
    headers = refused_headers(case, shared_depot, writer, outsider)
    for method in ("GET", "PUT"):
        response = httpx.request(method, shared_depot.url + "/", headers=headers)
        assert response.status_code == 401, (method, response.text)
        assert "Bearer" in response.headers["www-authenticate"]
        assert "\n" not in response.text.strip()


@pytest.mark.parametrize("scheme", ["bearer", "basic anyuser", "basic __token__"])
def test_a_listed_key_is_let_in_by_bearer_or_basic(scheme, shared_depot, reader):
    token = token_for(reader, shared_depot)
    headers = bearer(token) if scheme == "bearer" else basic(scheme.split()[1], token)
    response = httpx.get(shared_depot.url + "/", headers=headers)
    assert response.status_code == 200


def test_a_token_without_audience_is_accepted(shared_depot, reader):
    token = mint_token(key_path=reader.path)
    assert httpx.get(shared_depot.url + "/", headers=bearer(token)).status_code == 200


def test_a_read_key_may_not_write(shared_depot, reader, writer):
    response = httpx.put(
        shared_depot.url + "/nix/nix-cache-info",
        headers=bearer(token_for(reader, shared_depot)),
        content=b"x",
    )
    assert response.status_code == 403
    assert reader.fingerprint in response.text
    write = httpx.put(
        shared_depot.url + "/nix/nix-cache-info",
        headers=bearer(token_for(writer, shared_depot)),
        content=b"x",
    )
    assert write.status_code not in (401, 403)


def test_with_only_write_keys_reads_are_open_and_writes_are_not(write_only_depot, writer):
    assert httpx.get(write_only_depot.url + "/").status_code == 200
    assert (
        httpx.get(write_only_depot.url + "/", headers={"Authorization": "Bearer junk"}).status_code
        == 200
    )
    assert httpx.put(write_only_depot.url + "/nix/x.narinfo", content=b"x").status_code == 401
    allowed = httpx.put(
        write_only_depot.url + "/nix/x.narinfo",
        content=b"x",
        headers=bearer(token_for(writer, write_only_depot)),
    )
    assert allowed.status_code not in (401, 403)


def test_health_needs_no_token(shared_depot):
    assert httpx.get(shared_depot.url + "/-/health").status_code == 200


def test_a_key_removed_from_the_file_stops_working_at_once(
    closed_depot, writer, reader, make_ssh_key
):
    other_reader = make_ssh_key("ecdsa-p384")
    closed_depot.auth_path.write_text(
        f"{writer.auth_line('w')}\n{reader.auth_line('r')}\n{other_reader.auth_line('r')}\n"
    )
    headers = bearer(token_for(reader, closed_depot))
    assert httpx.get(closed_depot.url + "/", headers=headers).status_code == 200
    closed_depot.auth_path.write_text(f"{writer.auth_line('w')}\n{other_reader.auth_line('r')}\n")
    assert httpx.get(closed_depot.url + "/", headers=headers).status_code == 401
    assert (
        httpx.get(
            closed_depot.url + "/", headers=bearer(token_for(other_reader, closed_depot))
        ).status_code
        == 200
    )


def test_sighup_rereads_the_file(shared_depot):
    shared_depot.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "auth file reloaded" not in shared_depot.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "auth file reloaded" in shared_depot.log()
    assert shared_depot.process.poll() is None
    assert httpx.get(shared_depot.url + "/-/health").status_code == 200


@pytest.mark.parametrize(
    "content, logged",
    [("r ssh-ed25519 AAAA-half-pasted\n", "line 1: "), ("", "lists no keys")],
    ids=["bad line", "emptied"],
)
def test_a_broken_file_while_running_closes_the_depot(closed_depot, reader, content, logged):
    """Neither the old keys (one may have been removed) nor open reads: 503 until it is fixed."""
    headers = bearer(token_for(reader, closed_depot))
    assert httpx.get(closed_depot.url + "/", headers=headers).status_code == 200
    closed_depot.auth_path.write_text(content)
    assert httpx.get(closed_depot.url + "/", headers=headers).status_code == 503
    assert httpx.get(closed_depot.url + "/").status_code == 503
    assert logged in closed_depot.log()


def test_tokens_never_reach_the_log(closed_depot, writer, reader, outsider):
    sent = [
        token_for(reader, closed_depot),
        token_for(writer, closed_depot),
        token_for(outsider, closed_depot),
    ]
    sent += list(forged(writer).values())
    for token in sent:
        httpx.get(closed_depot.url + "/", headers=bearer(token))
        httpx.put(closed_depot.url + "/nix/x", headers=basic("__token__", token))
    httpx.get(closed_depot.url + "/?token=" + sent[0])
    closed_depot.stop()
    log = closed_depot.log()
    assert '"status": 401' in log and '"status": 403' in log
    for token in sent:
        for part in token.split("."):
            if len(part) > 16:
                assert part not in log


def test_sighup_with_workers_reloads_every_worker_and_stops_none(tmp_path, writer, reader):
    auth = tmp_path / "auth.keys"
    auth.write_text(f"{writer.auth_line('w')}\n{reader.auth_line('r')}\n")
    server = DepotServer(tmp_path / "store", "--auth-file", str(auth), "--workers", "2").start()
    try:
        deadline = time.monotonic() + 30
        while server.log().count("depot started") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # the schema check in the supervisor, then each worker
        server.process.send_signal(signal.SIGHUP)
        while server.log().count("auth file reloaded") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.log().count("auth file reloaded") == 2
        assert server.process.poll() is None
        assert (
            httpx.get(server.url + "/", headers=bearer(token_for(reader, server))).status_code
            == 200
        )
    finally:
        assert server.stop() == 0


async def test_an_embedded_depot_checks_tokens_under_its_mount_prefix(tmp_path, reader, writer):
    """Mounted inside another app (no lifespan): lazy start-up picks the SSH-key authenticator."""
    from depot.core import create_app
    from starlette.applications import Starlette
    from starlette.routing import Mount

    auth = tmp_path / "auth.keys"
    auth.write_text(f"{writer.auth_line('w')}\n{reader.auth_line('r')}\n")
    depot_app = create_app(store_path=tmp_path / "store", auth_file=auth)
    outer = Starlette(routes=[Mount("/depot", app=depot_app)])
    transport = httpx.ASGITransport(app=outer)
    signing_key = await find_signing_key(reader.path)

    async def token_with_aud(aud: str) -> dict[str, str]:
        claims = claims_for(signing_key, aud, parse_duration("5m"))
        return bearer(await sign_token(signing_key, claims))

    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://depot.test") as client:
            assert (await client.get("/depot/-/health")).status_code == 200
            assert (await client.get("/depot/")).status_code == 401
            ours = await token_with_aud("http://depot.test/depot")
            assert (await client.get("/depot/", headers=ours)).status_code == 200
            below = await token_with_aud("http://depot.test/depot/npm/")
            assert (await client.get("/depot/", headers=below)).status_code == 200
            beside = await token_with_aud("http://depot.test/elsewhere")
            assert (await client.get("/depot/", headers=beside)).status_code == 401
    finally:
        await depot_app.state.depot.shutdown()
