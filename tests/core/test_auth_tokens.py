"""Minting tokens from SSH keys (key files and a real ssh-agent), verified as the server does."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time

import pytest
from depot.core.errors import DepotError
from depot.core.sshauth import TokenRejected, parse_auth_file, verify_token
from depot.core.testing import SSH_KEY_KINDS
from depot.core.tokens import (
    TokenSource,
    claims_for,
    find_signing_key,
    mint_token,
    mint_token_async,
    parse_duration,
    run_sync,
    sign_token,
)

ALGORITHMS = {
    "ed25519": "EdDSA",
    "rsa": "RS256",
    "ecdsa-p256": "ES256",
    "ecdsa-p384": "ES384",
    "ecdsa-p521": "ES512",
}


@pytest.fixture(scope="module")
def keys(make_ssh_key):
    return {kind: make_ssh_key(kind) for kind in SSH_KEY_KINDS}


@pytest.fixture(scope="module")
def auth_keys(keys):
    return parse_auth_file("\n".join(k.auth_line("w") for k in keys.values()))


@pytest.fixture
def no_agent_no_home(monkeypatch, tmp_path):
    """Nothing of the user's own: an empty HOME and no ssh-agent."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("DEPOT_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def agent(ssh_agent, monkeypatch, no_agent_no_home):
    monkeypatch.setenv("SSH_AUTH_SOCK", str(ssh_agent.socket_path))
    ssh_agent.remove_all()
    yield ssh_agent
    ssh_agent.remove_all()


def header_and_claims(token):
    header, payload, _ = token.split(".")
    decode = lambda s: json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))  # noqa: E731
    return decode(header), decode(payload)


@pytest.mark.parametrize("kind", list(SSH_KEY_KINDS))
def test_a_key_file_mints_a_token_the_server_accepts(kind, keys, auth_keys, no_agent_no_home):
    token = mint_token(audience="http://depot.test:8080", key_path=keys[kind].path)
    header, claims = header_and_claims(token)
    assert header["alg"] == ALGORITHMS[kind]
    assert claims["key_fingerprint"] == keys[kind].fingerprint
    assert claims["exp"] - claims["iat"] == 24 * 3600
    assert (
        verify_token(token, auth_keys, ["http://depot.test:8080"]).fingerprint
        == keys[kind].fingerprint
    )


@pytest.mark.parametrize("kind", list(SSH_KEY_KINDS))
async def test_ssh_agent_signs_tokens_the_server_accepts(kind, keys, auth_keys, agent):
    agent.add(keys[kind])
    token = await mint_token_async(audience="http://depot.test:8080/npm/")
    assert header_and_claims(token)[0]["alg"] == ALGORITHMS[kind]
    assert (
        verify_token(token, auth_keys, ["http://depot.test:8080"]).fingerprint
        == keys[kind].fingerprint
    )


def test_the_agent_is_asked_before_key_files(keys, agent, no_agent_no_home):
    (no_agent_no_home / ".ssh").mkdir()
    shutil.copy(keys["rsa"].path, no_agent_no_home / ".ssh" / "id_rsa")
    agent.add(keys["ecdsa-p384"])
    _, claims = header_and_claims(mint_token())
    assert claims["key_fingerprint"] == keys["ecdsa-p384"].fingerprint


def test_without_an_agent_an_id_file_without_passphrase_is_used(
    keys, make_ssh_key, no_agent_no_home
):
    ssh = no_agent_no_home / ".ssh"
    ssh.mkdir()
    shutil.copy(make_ssh_key("ed25519", passphrase="secret").path, ssh / "id_ed25519")
    shutil.copy(keys["rsa"].path, ssh / "id_rsa")
    _, claims = header_and_claims(mint_token())
    assert claims["key_fingerprint"] == keys["rsa"].fingerprint


def test_no_usable_key_says_what_was_tried(make_ssh_key, no_agent_no_home):
    ssh = no_agent_no_home / ".ssh"
    ssh.mkdir()
    shutil.copy(make_ssh_key("ed25519", passphrase="secret").path, ssh / "id_ed25519")
    with pytest.raises(
        DepotError, match=r"no SSH key .*id_ed25519 need a passphrase: add them to ssh-agent"
    ):
        mint_token()


def test_a_passphrase_protected_key_is_used_through_the_agent(make_ssh_key, agent, tmp_path):
    protected = make_ssh_key("ecdsa-p256", passphrase="secret")
    lonely = tmp_path / "lonely"  # the private key alone, no .pub beside it
    shutil.copy(protected.path, lonely)
    with pytest.raises(DepotError, match="needs a passphrase: add it to ssh-agent"):
        mint_token(key_path=lonely)
    with pytest.raises(DepotError, match="is not in ssh-agent"):
        mint_token(key_path=protected.path)
    add_with_passphrase(agent, protected, "secret")
    _, claims = header_and_claims(mint_token(key_path=protected.path))
    assert claims["key_fingerprint"] == protected.fingerprint


def add_with_passphrase(agent, key, passphrase):
    """ssh-add reads the passphrase through SSH_ASKPASS when it has no terminal."""
    askpass = key.path.with_name("askpass.sh")
    askpass.write_text(f"#!/bin/sh\necho {passphrase}\n")
    askpass.chmod(0o700)
    env = {
        **os.environ,
        **agent.env,
        "SSH_ASKPASS": str(askpass),
        "SSH_ASKPASS_REQUIRE": "force",
        "DISPLAY": ":0",
    }
    subprocess.run(
        ["ssh-add", "-q", str(key.path)],
        env=env,
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def test_a_public_key_file_selects_that_key_in_the_agent(keys, agent):
    agent.add(keys["ed25519"])
    agent.add(keys["ecdsa-p521"])
    _, claims = header_and_claims(mint_token(key_path=keys["ecdsa-p521"].public_path))
    assert claims["key_fingerprint"] == keys["ecdsa-p521"].fingerprint


@pytest.mark.parametrize(
    "aud, accepted",
    [
        ("http://depot.test:8080", True),
        ("http://DEPOT.test:8080/npm/", True),
        ("https://depot.test:8080/python/simple", True),  # TLS ended at a proxy
        (["http://other", "http://depot.test:8080"], True),
        ("http://depot.test:8081", False),
        ("http://depot.test", False),
        ("http://evil.test:8080", False),
        ("not a url", False),
    ],
)
def test_audience_must_name_this_server(aud, accepted, keys, auth_keys, no_agent_no_home):
    key = run_sync(find_signing_key(keys["ed25519"].path))
    claims = claims_for(key, None, parse_duration("1h"))
    claims["aud"] = aud
    token = run_sync(sign_token(key, claims))
    if accepted:
        verify_token(token, auth_keys, ["http://depot.test:8080"])
    else:
        with pytest.raises(TokenRejected, match="another server"):
            verify_token(token, auth_keys, ["http://depot.test:8080"])


def test_token_source_renews_before_expiry(keys, no_agent_no_home):
    now = [time.time()]
    source = TokenSource(
        "http://depot.test", key_path=keys["ed25519"].path, lifetime="1h", clock=lambda: now[0]
    )

    async def tokens():
        first = await source.token()
        same = await source.token()
        now[0] += 3600 - 600  # ten minutes before expiry
        renewed = await source.token()
        return first, same, renewed

    first, same, renewed = asyncio.run(tokens())
    assert first == same != renewed
    assert header_and_claims(renewed)[1]["exp"] > header_and_claims(first)[1]["exp"]


@pytest.mark.parametrize(
    "text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800)]
)
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "1y", "-5m", "0"])
def test_bad_durations_are_one_line_errors(text):
    with pytest.raises(DepotError):
        parse_duration(text)


def test_a_push_mints_a_token_for_its_depot_after_a_401(keys, agent):
    from depot.core.client import PushAuth

    agent.add(keys["rsa"])
    auth = PushAuth("http://depot.test:8080")
    assert auth.headers() == {} and auth.can_mint()
    auth.mint()
    scheme, token = auth.headers()["Authorization"].split()
    claims = header_and_claims(token)[1]
    assert scheme == "Bearer" and claims["aud"] == "http://depot.test:8080"
    assert not auth.can_mint()  # one retry only


def test_a_push_without_any_key_says_how_to_authenticate(no_agent_no_home):
    from depot.core.client import PushAuth

    with pytest.raises(
        DepotError, match="requires authentication: pass --token, set DEPOT_AUTH_TOKEN"
    ):
        PushAuth("http://depot.test:8080").mint()


@pytest.mark.parametrize("kind", ["not a key", "dsa"])
def test_a_key_that_cannot_sign_is_a_one_line_error(kind, tmp_path, no_agent_no_home):
    path = tmp_path / "key"
    if kind == "dsa":
        made = subprocess.run(
            ["ssh-keygen", "-q", "-t", "dsa", "-N", "", "-f", str(path)], capture_output=True
        )
        if made.returncode != 0:
            pytest.skip("this ssh-keygen no longer makes DSA keys")
        message = "this key type cannot sign tokens"
    else:
        path.write_text("hello\n")
        message = "is not an SSH private key"
    with pytest.raises(DepotError, match=message):
        mint_token(key_path=path)
