"""The real nix client against two depot replicas sharing one S3 bucket and one PostgreSQL database.

Store paths are built offline from ``derivation { builder = "/bin/sh"; }`` with a nonce, so every
run makes paths no cache has seen; each nix command gets its own HOME so nix's narinfo cache never
answers for depot.
"""

from __future__ import annotations

import filecmp
import secrets
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from depot.core.testing import run

pytest.importorskip("depot.nix.signing", reason="depot-nix is not installed")
from depot.nix.signing import SecretKey  # noqa: E402

NIX_CONFIG = "\n".join(
    [
        "substituters =",
        "sandbox = false",
        "build-users-group =",  # root builds as itself: a fresh machine may lack nixbld
        "narinfo-cache-positive-ttl = 0",
        "narinfo-cache-negative-ttl = 0",
        "experimental-features = nix-command",
        "require-sigs = true",
    ]
)

# A shared library path and two applications that both refer to it: overlapping closures.
CLOSURES_NIX = """
let
  lib = derivation {
    name = "replica-lib-NONCE";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir -p $out/bin; echo NONCE > $out/README; /bin/ln -s README $out/l" ];
  };
  app = n: derivation {
    name = "replica-app${n}-NONCE";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    inherit lib;
    args = [ "-c" "/bin/mkdir $out; echo $lib >$out/lib-path;/bin/head -c 9999 /dev/zero >$out/z" ];
  };
in { app1 = app "1"; app2 = app "2"; }
"""


def nix(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "NIX_CONFIG": NIX_CONFIG,
    }
    return run(list(args), env=env)


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(a / d, b / d) for d in cmp.common_dirs)


@pytest.fixture
def signed_replicas(make_replicas: Any, tmp_path: Path) -> tuple[list[Any], SecretKey]:
    """Two replicas signing narinfo with one key, as a deployment would configure them."""
    key = SecretKey.generate("depot-replicas-1")
    key_file = tmp_path / "secret.key"
    key_file.write_text(str(key))
    return make_replicas(2, "--private-key", str(key_file)), key


@pytest.fixture
def closures(tmp_path: Path) -> dict[str, str]:
    """Build app1 and app2 (sharing lib); returns their store paths and lib's."""
    expression = tmp_path / "closures.nix"
    expression.write_text(CLOSURES_NIX.replace("NONCE", secrets.token_hex(6)))
    home = tmp_path / "build-home"
    built = nix(home, "nix-build", str(expression), "--no-out-link").stdout.split()
    app1, app2 = sorted(built, key=lambda p: "app2" in p)
    lib = (Path(app1) / "lib-path").read_text().strip()
    return {"app1": app1, "app2": app2, "lib": lib}


def test_nix_copy_to_one_replica_and_from_the_other(
    signed_replicas: tuple[list[Any], SecretKey], closures: dict[str, str], tmp_path: Path
) -> None:
    (a, b), key = signed_replicas
    home = tmp_path / "home"
    nix(home, "nix", "copy", "--to", f"{a.url}/nix?compression=xz", closures["app1"])

    fresh = tmp_path / "fresh"
    trusted = ["--option", "trusted-public-keys", str(key.public_key())]
    nix(
        home,
        "nix",
        "copy",
        *trusted,
        "--from",
        f"{b.url}/nix",
        "--to",
        str(fresh),
        closures["app1"],
    )
    for name in ("app1", "lib"):
        assert same_tree(Path(closures[name]), fresh / closures[name].lstrip("/"))


def test_concurrent_nix_copy_of_overlapping_closures_through_both(
    signed_replicas: tuple[list[Any], SecretKey], closures: dict[str, str], tmp_path: Path
) -> None:
    (a, b), key = signed_replicas
    uploads = [
        (a, closures["app1"], tmp_path / "home-a"),
        (b, closures["app2"], tmp_path / "home-b"),
    ]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda u: nix(u[2], "nix", "copy", "--to", f"{u[0].url}/nix", u[1]), uploads))

    for replica in (a, b):
        for path in closures.values():
            narinfo = httpx.get(f"{replica.url}/nix/{Path(path).name[:32]}.narinfo")
            assert narinfo.status_code == 200, (replica.url, path)
            assert f"StorePath: {path}" in narinfo.text
    # Each closure comes back whole through the replica it was not uploaded to.
    trusted = ["--option", "trusted-public-keys", str(key.public_key())]
    for replica, app in ((b, "app1"), (a, "app2")):
        fresh = tmp_path / f"fresh-{app}"
        nix(tmp_path / "home-c", "nix", "copy", *trusted, "--from", f"{replica.url}/nix",
            "--to", str(fresh), closures[app])  # fmt: skip
        for name in (app, "lib"):
            assert same_tree(Path(closures[name]), fresh / closures[name].lstrip("/"))
