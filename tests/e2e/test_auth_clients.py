"""The real clients through SSH-key auth, against a depot where every request needs a token.

The depot lists a ``w`` key (the publisher) and an ``r`` key (a reader). Each client is set up the
way the README tells a user to: nix through ``depot proxy`` and with a netrc file, npm with
``_authToken``, pip and uv with the token in the index URL, twine with ``__token__``, and depot's
own push commands minting their token from an SSH key (a key file, or ssh-agent).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from depot.core.testing import (
    DepotServer,
    SshKey,
    run,
    run_answering,
    start_depot_proxy,
    start_depot_with_auth,
)
from depot.core.tokens import mint_token

VENV_BIN = Path(sys.executable).parent
NIX_CONFIG = "\n".join(
    [
        "substituters =",
        "sandbox = false",
        "build-users-group =",  # root builds as itself: a fresh machine may lack nixbld
        "narinfo-cache-positive-ttl = 0",
        "narinfo-cache-negative-ttl = 0",
        "experimental-features = nix-command",
    ]
)


@pytest.fixture(scope="module")
def publisher(make_ssh_key) -> SshKey:
    return make_ssh_key("ed25519")


@pytest.fixture(scope="module")
def reader(make_ssh_key) -> SshKey:
    return make_ssh_key("ecdsa-p256")


@pytest.fixture(scope="module")
def closed_depot(tmp_path_factory, publisher, reader) -> Iterator[DepotServer]:
    """Reads and writes need a token: an ``r`` key is listed."""
    server = start_depot_with_auth(
        tmp_path_factory.mktemp("closed-depot"), publisher.auth_line("w"), reader.auth_line("r")
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_depot(tmp_path_factory) -> Iterator[DepotServer]:
    """A depot without auth, standing in for the public registry that ``depot ... save`` reads."""
    server = DepotServer(tmp_path_factory.mktemp("open-depot") / "store").start()
    yield server
    server.stop()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A user with an empty ~/.ssh and no ssh-agent, unless a test adds one."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("DEPOT_KEY", raising=False)
    monkeypatch.delenv("DEPOT_AUTH_TOKEN", raising=False)
    return home


def token(key: SshKey, server: DepotServer) -> str:
    return mint_token(audience=server.url, key_path=key.path)


def depot_cli(
    *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "depot.core", *args], env=env, check=check)


# -- nix -------------------------------------------------------------------------------------------

CLOSURE_NIX = """
derivation {
  name = "depot-auth-NONCE";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo NONCE > $out" ];
}
"""


@pytest.fixture
def nix_env(home) -> dict[str, str]:
    if not shutil.which("nix"):
        pytest.skip("nix is not installed")
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "NIX_CONFIG": NIX_CONFIG,
    }


@pytest.fixture
def store_path(nix_env, tmp_path) -> str:
    """A freshly built store path no cache has seen."""
    expression = tmp_path / "closure.nix"
    expression.write_text(CLOSURE_NIX.replace("NONCE", secrets.token_hex(6)))
    return run(["nix-build", str(expression), "--no-out-link"], env=nix_env).stdout.strip()


def narinfo_url(server: DepotServer, path: str) -> str:
    return f"{server.url}/nix/{Path(path).name[:32]}.narinfo"


def test_nix_copies_through_depot_proxy_and_reads_back_with_a_netrc(
    closed_depot, publisher, reader, nix_env, store_path, tmp_path
):
    refused = run(
        ["nix", "copy", "--to", f"{closed_depot.url}/nix", store_path], env=nix_env, check=False
    )
    assert refused.returncode != 0

    proxy = start_depot_proxy(
        closed_depot.url, publisher.path, env=nix_env, stderr=subprocess.DEVNULL
    )
    try:
        local = proxy.stdout.readline().strip()
        run(["nix", "copy", "--to", f"{local}/nix", store_path], env=nix_env)
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
    reader_token = token(reader, closed_depot)
    narinfo = httpx.get(
        narinfo_url(closed_depot, store_path), headers={"Authorization": f"Bearer {reader_token}"}
    )
    assert narinfo.status_code == 200 and f"StorePath: {store_path}" in narinfo.text

    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login depot password {reader_token}\n")
    fresh = tmp_path / "fresh-store"
    copy_back = [
        "nix",
        "copy",
        "--no-check-sigs",
        "--from",
        f"{closed_depot.url}/nix",
        "--to",
        str(fresh),
        store_path,
    ]
    assert run(copy_back, env=nix_env, check=False).returncode != 0  # no credentials: refused
    run([*copy_back, "--option", "netrc-file", str(netrc)], env=nix_env)
    assert (fresh / store_path.lstrip("/")).read_text() == Path(store_path).read_text()


def test_nix_copies_with_a_netrc_holding_a_write_token(
    closed_depot, publisher, nix_env, store_path, tmp_path
):
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login depot password {token(publisher, closed_depot)}\n")
    run(
        [
            "nix",
            "copy",
            "--option",
            "netrc-file",
            str(netrc),
            "--to",
            f"{closed_depot.url}/nix",
            store_path,
        ],
        env=nix_env,
    )
    headers = {"Authorization": f"Bearer {token(publisher, closed_depot)}"}
    assert httpx.get(narinfo_url(closed_depot, store_path), headers=headers).status_code == 200


def test_depot_nix_push_mints_its_token_from_the_ssh_agent(
    closed_depot, publisher, ssh_agent, nix_env, store_path
):
    ssh_agent.remove_all()
    ssh_agent.add(publisher)
    try:
        depot_cli(
            "nix",
            "push",
            closed_depot.url,
            "--store-paths",
            store_path,
            env={**nix_env, **ssh_agent.env},
        )
    finally:
        ssh_agent.remove_all()
    headers = {"Authorization": f"Bearer {token(publisher, closed_depot)}"}
    assert httpx.get(narinfo_url(closed_depot, store_path), headers=headers).status_code == 200


# -- npm -------------------------------------------------------------------------------------------


@pytest.fixture
def npm_env(home, tmp_path) -> dict[str, str]:
    if not shutil.which("npm"):
        pytest.skip("npm is not installed")
    return {
        **os.environ,
        "HOME": str(home),
        "npm_config_cache": str(tmp_path / "npm-cache"),
        "npm_config_userconfig": str(home / ".npmrc"),
        "npm_config_audit": "false",
        "npm_config_fund": "false",
        "npm_config_update_notifier": "false",
    }


def npm_package(directory: Path, name: str, version: str = "1.0.0") -> Path:
    directory.mkdir(parents=True)
    (directory / "package.json").write_text(
        json.dumps({"name": name, "version": version, "main": "index.js"})
    )
    (directory / "index.js").write_text(f"module.exports = {json.dumps(name + '@' + version)};\n")
    return directory


def npmrc(env: dict[str, str], server: DepotServer, jwt: str) -> None:
    """The one line the README tells npm users to write."""
    registry = server.url.removeprefix("http:") + "/npm/"
    Path(env["npm_config_userconfig"]).write_text(f"{registry}:_authToken={jwt}\n")


def test_npm_publishes_and_installs_with_auth_tokens(
    closed_depot, publisher, reader, npm_env, tmp_path
):
    name = f"auth-demo-{secrets.token_hex(3)}"
    package = npm_package(tmp_path / "pkg", name)
    registry = f"{closed_depot.url}/npm/"
    npmrc(npm_env, closed_depot, "not-a-token")
    refused = run(["npm", "publish", "--registry", registry], cwd=package, env=npm_env, check=False)
    assert refused.returncode != 0 and "401" in refused.stderr + refused.stdout

    npmrc(npm_env, closed_depot, token(publisher, closed_depot))
    run(["npm", "publish", "--registry", registry], cwd=package, env=npm_env)

    npmrc(npm_env, closed_depot, token(reader, closed_depot))
    republish = npm_package(tmp_path / "pkg2", name, "1.0.1")
    refused = run(
        ["npm", "publish", "--registry", registry], cwd=republish, env=npm_env, check=False
    )
    assert refused.returncode != 0 and "403" in refused.stderr + refused.stdout

    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(
        json.dumps({"name": "app", "version": "0.0.0", "private": True})
    )
    run(["npm", "install", name, "--registry", registry], cwd=app, env=npm_env)
    node = run(["node", "-p", f"require({json.dumps(name)})"], cwd=app, env=npm_env)
    assert node.stdout.strip() == f"{name}@1.0.0"


def test_npm_login_on_a_closed_depot_points_at_depot_token(
    closed_depot, publisher, npm_env, tmp_path
):
    registry = f"{closed_depot.url}/npm/"
    Path(npm_env["npm_config_userconfig"]).write_text("")
    login = run_answering(
        ["npm", "login", "--registry", registry],
        [("Username:", "ann"), ("Password:", "guess")],
        env=npm_env,
        cwd=tmp_path,
    )
    assert login.returncode != 0 and "depot token" in login.stdout, login.stdout
    assert "_authToken" not in Path(npm_env["npm_config_userconfig"]).read_text()

    npmrc(npm_env, closed_depot, token(publisher, closed_depot))
    with_token = run_answering(
        ["npm", "login", "--registry", registry],
        [("Username:", "ann"), ("Password:", "guess")],
        env=npm_env,
        cwd=tmp_path,
    )
    assert with_token.returncode != 0 and "depot token" in with_token.stdout, with_token.stdout
    whoami = run(["npm", "whoami", "--registry", registry], env=npm_env, cwd=tmp_path)
    assert whoami.stdout.strip() == key_identity(publisher)


def key_identity(key: SshKey) -> str:
    """What depot calls a key's holder: the comment of its auth-file line, else its fingerprint."""
    fields = key.public_line.split(maxsplit=2)
    return fields[2] if len(fields) > 2 else key.fingerprint


def test_depot_npm_push_mints_its_token_from_the_ssh_agent(
    closed_depot, open_depot, publisher, reader, ssh_agent, npm_env, tmp_path
):
    name = f"saved-demo-{secrets.token_hex(3)}"
    package = npm_package(tmp_path / "pkg", name)
    npmrc(
        npm_env, open_depot, "anything"
    )  # npm will not publish without some token; depot ignores it
    run(["npm", "publish", "--registry", f"{open_depot.url}/npm/"], cwd=package, env=npm_env)
    storage = tmp_path / "storage"
    depot_cli(
        "npm",
        "save",
        name,
        "--dir",
        str(storage),
        "--registry",
        f"{open_depot.url}/npm",
        env=npm_env,
    )

    ssh_agent.remove_all()
    ssh_agent.add(publisher)
    try:
        depot_cli(
            "npm", "push", closed_depot.url, "--dir", str(storage), env={**npm_env, **ssh_agent.env}
        )
    finally:
        ssh_agent.remove_all()
    headers = {"Authorization": f"Bearer {token(reader, closed_depot)}"}
    packument = httpx.get(f"{closed_depot.url}/npm/{name}", headers=headers)
    assert packument.status_code == 200 and "1.0.0" in packument.json()["versions"]


# -- Python ----------------------------------------------------------------------------------------


def build_wheel(root: Path, version: str) -> Path:
    """A tiny pure-Python wheel ``authdemo`` of ``version``, built offline."""
    root.mkdir(parents=True)
    (root / "authdemo.py").write_text('GREETING = "hello through auth"\n')
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "authdemo"\nversion = "{version}"\n'
        '[tool.setuptools]\npy-modules = ["authdemo"]\n'
    )
    out = root / "dist"
    run(
        [
            sys.executable,
            "-m",
            "build",
            "--no-isolation",
            "--wheel",
            "--outdir",
            str(out),
            str(root),
        ],
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    return next(out.glob("*.whl"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("authdemo") / "src", "1.0")


@pytest.fixture
def py_env(home, tmp_path) -> dict[str, str]:
    return {
        **os.environ,
        "HOME": str(home),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_CACHE_DIR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "UV_NO_CACHE": "1",
        "UV_NO_CONFIG": "1",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }


def twine_upload(server: DepotServer, files: list[Path], password: str, env, check=True):
    return run(
        [
            str(VENV_BIN / "twine"),
            "upload",
            "--repository-url",
            f"{server.url}/python/",
            "-u",
            "__token__",
            "-p",
            password,
            "--non-interactive",
            "--disable-progress-bar",
            *map(str, files),
        ],
        env=env,
        check=check,
    )


def index_url(server: DepotServer, jwt: str) -> str:
    return server.url.replace("http://", f"http://__token__:{jwt}@") + "/python/simple/"


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_twine_uploads_with_token_and_pip_installs_with_it_in_the_index_url(
    installer, closed_depot, publisher, reader, wheel, py_env, tmp_path
):
    refused = twine_upload(closed_depot, [wheel], "not-a-token", py_env, check=False)
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr
    twine_upload(closed_depot, [wheel], token(publisher, closed_depot), py_env)

    target = tmp_path / "target"
    url = index_url(closed_depot, token(reader, closed_depot))
    if installer == "pip":
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--target",
            str(target),
            "--index-url",
            url,
            "authdemo",
        ]
    else:
        command = [
            str(VENV_BIN / "uv"),
            "pip",
            "install",
            "--target",
            str(target),
            "--python",
            sys.executable,
            "--index-url",
            url,
            "authdemo",
        ]
    run(command, env=py_env)
    assert "hello through auth" in (target / "authdemo.py").read_text()
    assert reader_token_absent(closed_depot, url)


def reader_token_absent(server: DepotServer, url: str) -> bool:
    jwt = url.split("__token__:", 1)[1].split("@", 1)[0]
    return all(part not in server.log() for part in jwt.split("."))


def test_depot_python_push_mints_its_token_from_an_ssh_key_file(
    closed_depot, publisher, reader, py_env, home, tmp_path
):
    built = build_wheel(tmp_path / "src", "2.0")
    storage = tmp_path / "storage"
    (storage / "python" / "authdemo").mkdir(parents=True)
    shutil.copy(built, storage / "python" / "authdemo" / built.name)
    shutil.copy(publisher.path, home / ".ssh" / "id_ed25519")  # no agent: the key file is used
    depot_cli("python", "push", closed_depot.url, "--dir", str(storage), env=py_env)
    headers = {
        "Authorization": f"Bearer {token(reader, closed_depot)}",
        "Accept": "application/vnd.pypi.simple.v1+json",
    }
    page = httpx.get(f"{closed_depot.url}/python/simple/authdemo/", headers=headers)
    assert page.status_code == 200
    assert built.name in [f["filename"] for f in page.json()["files"]]


def test_no_client_token_reached_the_depot_log(closed_depot):
    """Every JWT starts with the base64 of '{"' ('eyJ'); none may be in what the depot logged."""
    log = closed_depot.log()
    assert '"status": 401' in log  # the clients above were refused at least once, and logged
    assert "eyJ" not in log
