"""Fixtures for the Nix cache tests: the real nix 2.8 client, offline, against a real depot.

Closures are built from ``derivation { builder = "/bin/sh"; ... }`` (no nixpkgs), each with a
nonce so every test run makes paths no cache has seen. Every nix command gets its own HOME and
XDG_CACHE_HOME, so nix's narinfo cache never answers for depot.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from depot.core.testing import DepotServer, run
from depot.nix.signing import SecretKey

NIX_CONFIG = "\n".join(
    [
        "substituters =",
        "sandbox = false",
        # Root builds as itself: a fresh machine may have no nixbld group (Debian's nix-bin
        # leaves it to the administrator), and without a sandbox build users add nothing.
        "build-users-group =",
        "narinfo-cache-positive-ttl = 0",
        "narinfo-cache-negative-ttl = 0",
        "experimental-features = nix-command flakes",
        "require-sigs = true",
    ]
)

# Two outputs: `lib` holds a regular file, an executable and a symlink; `app` refers to `lib`.
CLOSURE_NIX = """
let
  lib = derivation {
    name = "depot-test-lib-NONCE";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ''
      echo "building lib NONCE"
      /bin/mkdir -p $out/bin $out/share/doc
      echo "data NONCE" > $out/share/doc/README
      printf '#!/bin/sh\\necho hello from lib\\n' > $out/bin/hello
      /bin/chmod +x $out/bin/hello
      /bin/ln -s bin/hello $out/hello-link
    '' ];
  };
in derivation {
  name = "depot-test-app-NONCE";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  inherit lib;
  args = [ "-c" "echo building app NONCE; /bin/mkdir $out; echo $lib > $out/lib-path" ];
}
"""


@dataclass
class Closure:
    """A built two-path closure: ``app`` (depends on ``lib``) and its derivation file."""

    expression: Path
    app: str
    lib: str
    app_drv: str

    @property
    def paths(self) -> list[str]:
        return [self.lib, self.app]


class Nix:
    """Runs the real nix client with an isolated HOME and depot-friendly settings."""

    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.env = {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "NIX_CONFIG": NIX_CONFIG,
        }

    def __call__(
        self, *args: str, check: bool = True, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        return run(list(args), env={**self.env, **kwargs.pop("env", {})}, check=check, **kwargs)  # type: ignore[arg-type]

    def build(self, tmp: Path) -> Closure:
        nonce = secrets.token_hex(6)
        expression = tmp / f"closure-{nonce}.nix"
        expression.write_text(CLOSURE_NIX.replace("NONCE", nonce))
        app = self("nix-build", str(expression), "--no-out-link").stdout.strip()
        app_drv = self("nix-instantiate", str(expression)).stdout.strip()
        lib = (Path(app) / "lib-path").read_text().strip()
        return Closure(expression, app, lib, app_drv)

    def path_info(self, path: str, store: str | None = None) -> dict[str, object]:
        args = ["nix", "path-info", "--json", path]
        if store:
            args += ["--store", store]
        return json.loads(self(*args).stdout)[0]


@pytest.fixture(scope="session")
def nix_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nix-home")


@pytest.fixture
def nix(tmp_path: Path) -> Nix:
    """A nix runner with a HOME of this test's own."""
    return Nix(tmp_path / "home")


@pytest.fixture(scope="session")
def make_closure(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Closure]:
    """Build a fresh closure (new store paths) in the machine's /nix/store."""
    tmp = tmp_path_factory.mktemp("closures")
    return lambda: Nix(tmp / "home").build(tmp)


@pytest.fixture(scope="session")
def closure(make_closure: Callable[[], Closure]) -> Closure:
    return make_closure()


@pytest.fixture(scope="session")
def signing_key() -> SecretKey:
    return SecretKey.generate("depot-test-1")


@pytest.fixture(scope="module")
def nix_depot(
    tmp_path_factory: pytest.TempPathFactory, signing_key: SecretKey
) -> Iterator[DepotServer]:
    """A ``depot serve --private-key`` shared by the tests of one module."""
    server = start_signing_depot(tmp_path_factory.mktemp("nix-depot"), signing_key)
    yield server
    server.stop()


def start_signing_depot(directory: Path, signing_key: SecretKey, *args: str) -> DepotServer:
    """``depot serve ARGS --private-key KEY`` on ``directory / "store"``, the key written to
    ``directory / "secret.key"``. The caller stops it."""
    key_file = directory / "secret.key"
    key_file.write_text(str(signing_key))
    return DepotServer(directory / "store", *args, "--private-key", str(key_file)).start()


def stored_files(server: DepotServer) -> set[str]:
    """The blobs a depot holds (temporary files excluded)."""
    root = server.store_path / "blobs"
    return {
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts
    }
