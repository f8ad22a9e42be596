"""``depot nix push`` and the key commands, run as a user runs them."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from depot.core.testing import DepotServer
from depot.nix.signing import SecretKey

from .conftest import Closure, Nix  # noqa: TID252

FLAKE = """{
  outputs = { self }: {
    packages.SYSTEM.default = derivation {
      name = "depot-flake-NONCE";
      system = "SYSTEM";
      builder = "/bin/sh";
      args = [ "-c" "echo flake NONCE > $out" ];
    };
  };
}
"""


def depot(nix: Nix, *args: str, check: bool = True, stdin: str | None = None) -> object:
    return nix(sys.executable, "-m", "depot.core", *args, check=check, input=stdin)


def published(server: DepotServer, path: str) -> bool:
    return httpx.get(f"{server.url}/nix/{Path(path).name[:32]}.narinfo").status_code == 200


def test_push_a_closure_by_store_path(
    nix: Nix, make_closure: Callable[[], Closure], nix_depot: DepotServer, tmp_path: Path
) -> None:
    built = make_closure()
    result_link = tmp_path / "result"
    result_link.symlink_to(built.app)
    result = depot(nix, "nix", "push", nix_depot.url, "--store-paths", str(result_link))
    assert published(nix_depot, built.app) and published(nix_depot, built.lib)
    assert "2 path(s) in the closure, 2 uploaded" in result.stdout  # type: ignore[attr-defined]
    again = depot(nix, "nix", "push", f"{nix_depot.url}/nix", "--stdin", stdin=built.app + "\n")
    assert "0 uploaded, 2 already there" in again.stdout  # type: ignore[attr-defined]


def test_push_a_local_flake_with_its_source(
    nix: Nix, nix_depot: DepotServer, tmp_path: Path
) -> None:
    system = nix("nix", "eval", "--impure", "--raw", "--expr", "builtins.currentSystem").stdout
    flake = tmp_path / "flake"
    flake.mkdir()
    (flake / "flake.nix").write_text(
        FLAKE.replace("SYSTEM", system).replace("NONCE", tmp_path.name)
    )
    ref = f"path:{flake}"
    result = depot(nix, "nix", "push", nix_depot.url, "--flake-refs", f"{ref}#default")
    assert "1 flake source(s)" in result.stdout  # type: ignore[attr-defined]
    output = json.loads(nix("nix", "build", "--no-link", "--json", f"{ref}#default").stdout)[0][
        "outputs"
    ]["out"]
    source = json.loads(nix("nix", "flake", "metadata", "--json", ref).stdout)["path"]
    assert published(nix_depot, output)
    assert published(nix_depot, source)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store-paths", "/tmp/not-in-the-store"], "is not a Nix store path"),
        (["--store-paths", f"/nix/store/{'0' * 32}-missing"], "is not a valid store path"),
        ([], "nothing to push"),
        (["--flake-refs", "path:/nonexistent-flake#default"], "cannot build"),
    ],
)
def test_push_errors_are_one_line(
    args: list[str], message: str, nix: Nix, nix_depot: DepotServer
) -> None:
    result = depot(nix, "nix", "push", nix_depot.url, *args, check=False)
    assert result.returncode == 1  # type: ignore[attr-defined]
    stderr = result.stderr.strip()  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    # Progress lines may come first; the error is the one last line.
    assert stderr.splitlines()[-1].startswith("Error: ") and message in stderr.splitlines()[-1]


def test_push_without_nix_says_so(nix: Nix, nix_depot: DepotServer, closure: Closure) -> None:
    result = nix(
        sys.executable, "-m", "depot.core", "nix", "push", nix_depot.url, "--store-paths", closure.app,
        check=False, env={"PATH": "/nonexistent"},
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "Error: nix is not installed or not on PATH; depot nix push runs `nix copy`"
    )


def test_push_to_an_unreachable_depot_says_so(nix: Nix, closure: Closure) -> None:
    from depot.core.testing import free_port

    result = depot(
        nix,
        "nix",
        "push",
        f"http://127.0.0.1:{free_port()}",
        "--store-paths",
        closure.app,
        check=False,
    )
    assert result.returncode == 1  # type: ignore[attr-defined]
    assert "cannot reach" in result.stderr  # type: ignore[attr-defined]


def test_generate_key_and_public_key(nix: Nix, tmp_path: Path) -> None:
    key_file = tmp_path / "secret.key"
    printed = depot(nix, "nix", "generate-key", "--name", "cache.example-1", "--out", str(key_file))
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = SecretKey.parse(key_file.read_text())
    assert printed.stdout.strip() == str(key.public_key())  # type: ignore[attr-defined]
    public = depot(nix, "nix", "public-key", "--private-key", str(key_file)).stdout.strip()  # type: ignore[attr-defined]
    assert (
        public
        == nix("nix", "key", "convert-secret-to-public", input=key_file.read_text()).stdout.strip()
    )
    refused = depot(
        nix, "nix", "generate-key", "--name", "x-1", "--out", str(key_file), check=False
    )
    assert refused.returncode == 1 and "exists" in refused.stderr  # type: ignore[attr-defined]
    to_stdout = depot(nix, "nix", "generate-key", "--name", "x-1").stdout  # type: ignore[attr-defined]
    assert SecretKey.parse(to_stdout).name == "x-1"
    broken = tmp_path / "broken.key"
    broken.write_text("x-1:nonsense")
    bad = depot(nix, "nix", "public-key", "--private-key", str(broken), check=False)
    assert bad.returncode == 1 and "private key" in bad.stderr  # type: ignore[attr-defined]


def test_push_into_a_depot_that_requires_auth(
    nix: Nix,
    make_closure: Callable[[], Closure],
    make_ssh_key: Callable[..., object],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    key = make_ssh_key()
    auth_file = tmp_path / "auth"
    auth_file.write_text(key.auth_line("w") + "\n")  # type: ignore[attr-defined]
    server = DepotServer(
        tmp_path_factory.mktemp("auth-depot") / "store", "--auth-file", str(auth_file)
    ).start()
    try:
        first, second = make_closure(), make_closure()
        # No token and no SSH key: one line saying so.
        refused = depot(nix, "nix", "push", server.url, "--store-paths", first.app, check=False)
        assert refused.returncode == 1 and "no SSH key" in refused.stderr  # type: ignore[attr-defined]
        assert not published(server, first.app)
        # A token (what `depot token` prints) reaches nix as netrc credentials.
        token = depot(nix, "token", "--key", str(key.path), "--audience", server.url).stdout.strip()  # type: ignore[attr-defined]
        depot(nix, "nix", "push", server.url, "--store-paths", first.app, "--token", token)
        assert published(server, first.app) and published(server, first.lib)
        # Without a token, the push signs through depot's in-process proxy with the SSH key.
        nix(sys.executable, "-m", "depot.core", "nix", "push", server.url, "--store-paths", second.app,
            env={"DEPOT_KEY": str(key.path)})  # type: ignore[attr-defined]  # fmt: skip
        assert published(server, second.app) and published(server, second.lib)
    finally:
        server.stop()
