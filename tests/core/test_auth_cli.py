"""``depot token`` and ``depot proxy`` as a user runs them."""

from __future__ import annotations

import asyncio
import os
import sys

import httpx
import pytest
from depot.core.proxy import proxy_in_thread, running_proxy
from depot.core.sshauth import parse_auth_file, token_from_headers, verify_token
from depot.core.testing import run, start_depot_proxy, start_depot_with_auth

CHUNK = 256 * 1024


@pytest.fixture(scope="module")
def writer(make_ssh_key):
    return make_ssh_key("ed25519")


@pytest.fixture(scope="module")
def reader(make_ssh_key):
    return make_ssh_key("ecdsa-p384")


@pytest.fixture(scope="module")
def closed_depot(tmp_path_factory, writer, reader):
    server = start_depot_with_auth(
        tmp_path_factory.mktemp("closed"), writer.auth_line("w"), reader.auth_line("r")
    )
    yield server
    server.stop()


@pytest.fixture
def user_env(tmp_path, monkeypatch):
    """A user with no ssh-agent and an empty ~/.ssh, for commands run as subprocesses."""
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("DEPOT_KEY", raising=False)
    return {k: v for k, v in os.environ.items()}


def depot(*args: str, **kwargs):
    return run([sys.executable, "-m", "depot.core", *args], **kwargs)


def test_depot_token_prints_the_token_and_nothing_else(closed_depot, reader, user_env):
    result = depot("token", "--key", str(reader.path), "--audience", closed_depot.url, env=user_env)
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].count(".") == 2
    assert result.stderr == ""
    headers = {"Authorization": f"Bearer {lines[0]}"}
    assert httpx.get(closed_depot.url + "/", headers=headers).status_code == 200


def test_depot_token_uses_the_agent(closed_depot, writer, ssh_agent, user_env):
    ssh_agent.remove_all()
    ssh_agent.add(writer)
    token = depot("token", "--expires", "5m", env={**user_env, **ssh_agent.env}).stdout.strip()
    ssh_agent.remove_all()
    assert (
        httpx.get(closed_depot.url + "/", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )


def test_depot_token_without_a_key_is_a_one_line_error(user_env):
    result = depot("token", env=user_env, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no SSH key to sign a token with" in result.stderr


def test_depot_proxy_prints_its_port_and_adds_a_token(closed_depot, reader, user_env):
    assert httpx.get(closed_depot.url + "/").status_code == 401
    proxy = start_depot_proxy(closed_depot.url, reader.path, env=user_env)
    try:
        local = proxy.stdout.readline().strip()
        assert local.startswith("http://127.0.0.1:") and not local.endswith(":0")
        response = httpx.get(
            local + "/", headers={"Authorization": "Bearer whatever-the-client-sent"}
        )
        assert response.status_code == 200
        assert "depot" in response.text
        assert httpx.put(local + "/nix/x.narinfo", content=b"x").status_code == 403  # a read key
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
    assert proxy.returncode == 0


def test_proxy_for_synchronous_callers(closed_depot, writer, user_env):
    with proxy_in_thread(closed_depot.url, key_path=writer.path) as local:
        assert httpx.get(local + "/").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(local + "/")


async def test_proxy_streams_both_ways_with_a_fresh_token(writer, user_env):
    """Bodies pass chunk by chunk: each side waits for the other to see the first chunk first."""
    from aiohttp import ClientSession, web

    auth_keys = parse_auth_file(writer.auth_line("w"))
    upstream_got_first = asyncio.Event()
    client_got_first = asyncio.Event()
    seen: dict[str, object] = {}

    async def upstream_handler(request: web.Request) -> web.StreamResponse:
        token = token_from_headers(request.headers.get("Authorization"))
        seen["key"] = verify_token(token, auth_keys, [f"http://{request.host}"]).fingerprint
        if request.method == "PUT":
            received = 0
            async for chunk in request.content.iter_any():
                received += len(chunk)
                if received >= CHUNK:
                    upstream_got_first.set()
            seen["uploaded"] = received
            return web.Response(text="stored")
        response = web.StreamResponse(headers={"Content-Length": str(4 * CHUNK)})
        await response.prepare(request)
        await response.write(b"a" * CHUNK)
        await client_got_first.wait()  # only a streaming proxy lets the client see this first
        await response.write(b"b" * (3 * CHUNK))
        return response

    runner = web.AppRunner(web.Application(handler_args={}, client_max_size=1 << 30))
    runner.app.router.add_route("*", "/{tail:.*}", upstream_handler)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/depot"

    async def upload():
        yield b"x" * CHUNK
        await upstream_got_first.wait()  # only a streaming proxy delivers this before the rest
        for _ in range(3):
            yield b"y" * CHUNK

    try:
        async with (
            running_proxy(upstream, key_path=writer.path) as local,
            ClientSession() as client,
        ):
            put = client.put(
                local + "/nar/abc.nar", data=upload(), headers={"Content-Length": str(4 * CHUNK)}
            )
            async with await asyncio.wait_for(put, 60) as response:
                assert response.status == 200 and await response.text() == "stored"
            assert seen == {"key": writer.fingerprint, "uploaded": 4 * CHUNK}

            async with await asyncio.wait_for(client.get(local + "/nar/abc.nar"), 60) as response:
                assert response.headers["Content-Length"] == str(4 * CHUNK)
                first = await asyncio.wait_for(response.content.readexactly(CHUNK), 60)
                client_got_first.set()
                rest = await asyncio.wait_for(response.content.read(), 60)
            assert first == b"a" * CHUNK and rest == b"b" * (3 * CHUNK)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://127.0.0.1:9", "no SSH key to sign a token with"),
        ("ftp://depot.example.com", "is not an http(s) URL"),
    ],
)
def test_depot_proxy_fails_before_listening_with_one_line(url, message, user_env):
    result = depot("proxy", url, "--port", "0", env=user_env, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_an_upstream_that_breaks_off_is_never_passed_on_as_complete(
    framing, writer, user_env
):
    from aiohttp import ClientPayloadError, ClientSession, web

    async def upstream_handler(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Length": str(4 * CHUNK)} if framing == "content-length" else {}
        response = web.StreamResponse(headers=headers)
        if framing == "chunked":
            response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"a" * CHUNK)
        request.transport.close()  # the depot dies mid-download
        return response

    runner = web.AppRunner(web.Application())
    runner.app.router.add_route("*", "/{tail:.*}", upstream_handler)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    try:
        async with (
            running_proxy(upstream, key_path=writer.path) as local,
            ClientSession() as client,
            client.get(local + "/nar/big.nar") as response,
        ):
            assert response.status == 200
            with pytest.raises(ClientPayloadError):
                await asyncio.wait_for(response.read(), 60)
    finally:
        await runner.cleanup()
