"""The auth file: what a valid one looks like, and how a bad line stops ``depot serve``."""

from __future__ import annotations

import subprocess
import sys

import pytest
from depot.core.sshauth import AuthFileError, parse_auth_file


@pytest.fixture(scope="module")
def keys(make_ssh_key):
    return {
        kind: make_ssh_key(kind)
        for kind in ("ed25519", "rsa", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521")
    }


def test_every_supported_key_type_is_read_with_its_fingerprint(keys):
    text = "\n".join(
        ["# deploy keys", ""]
        + [key.auth_line("w" if i % 2 else "r") for i, key in enumerate(keys.values())]
    )
    parsed = parse_auth_file(text)
    assert sorted(parsed.keys) == sorted(k.fingerprint for k in keys.values())
    ecdsa = parsed.keys[keys["ecdsa-p521"].fingerprint]
    assert (ecdsa.algorithm, ecdsa.permission, ecdsa.comment) == (
        "ES512",
        "r",
        "ecdsa-p521@depot-test",
    )
    assert parsed.reads_need_token


def test_only_write_keys_leave_reads_open(keys):
    assert not parse_auth_file(keys["ed25519"].auth_line("w")).reads_need_token


def _bad_lines(keys):
    ed = keys["ed25519"].public_line.split()
    rsa = keys["rsa"].public_line.split()
    return {
        "permission": (f"x {ed[0]} {ed[1]}", "permission must be r or w"),
        "missing key": ("w ssh-ed25519", "expected '<r|w> <ssh-keytype> <base64-key>"),
        "key type": (f"w ssh-dss {ed[1]}", "unsupported key type 'ssh-dss'"),
        "base64": ("w ssh-ed25519 not*base64", "not valid base64"),
        "type mismatch": (f"w ssh-ed25519 {rsa[1]}", "not an ssh-ed25519 key"),
        "truncated": (f"w ssh-ed25519 {ed[1][:-12]}", "cannot be read"),
        "duplicate": (f"w {ed[0]} {ed[1]}\nr {ed[0]} {ed[1]} again", "already listed on line 2"),
    }


@pytest.mark.parametrize(
    "case",
    ["permission", "missing key", "key type", "base64", "type mismatch", "truncated", "duplicate"],
)
def test_a_bad_line_is_named_with_its_number_and_problem(keys, case):
    line, problem = _bad_lines(keys)[case]
    text = "# keys\n" + line
    with pytest.raises(AuthFileError) as raised:
        parse_auth_file(text, source="auth.keys")
    number = 3 if case == "duplicate" else 2
    assert str(raised.value).startswith(f"auth.keys line {number}: ")
    assert problem in str(raised.value)


def test_short_rsa_keys_are_refused(tmp_path):
    path = tmp_path / "short"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", str(path)], check=True
    )
    with pytest.raises(AuthFileError, match="line 1: RSA key of 1024 bits is too short"):
        parse_auth_file("w " + path.with_suffix(".pub").read_text())


@pytest.mark.parametrize(
    "content", ["w ssh-ed25519 AAAA\n", None], ids=["bad line", "missing file"]
)
def test_serve_refuses_to_start_with_one_line(tmp_path, content):
    auth = tmp_path / "auth.keys"
    if content is not None:
        auth.write_text("# team\n\n" + content)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "depot.core",
            "serve",
            "--listen-addr",
            "127.0.0.1:0",
            "--store-path",
            str(tmp_path / "store"),
            "--auth-file",
            str(auth),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "Traceback" not in message
    if content is None:
        assert f"cannot read auth file {auth}" in message
    else:
        assert f"{auth} line 3: " in message


@pytest.mark.parametrize("text", ["", "# nobody yet\n\n"])
def test_a_file_without_keys_is_refused_not_read_as_open(text):
    with pytest.raises(AuthFileError, match="auth.keys lists no keys"):
        parse_auth_file(text, source="auth.keys")
