"""Garbage collection and deletion with the real nix client: a NAR left by a ``nix copy`` that
failed before its narinfo is collected after the grace period and not before; an upload that
runs while a collection runs completes and is served; ``depot nix delete`` makes nix see the
path as missing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from depot.core.testing import DepotServer, run
from depot.nix.signing import SecretKey

from .conftest import Closure, Nix, start_signing_depot, stored_files

TWO_HOURS_AGO = time.time() - 7200


@pytest.fixture
def depot(tmp_path: Path, signing_key: SecretKey) -> Iterator[DepotServer]:
    (tmp_path / "depot").mkdir()
    server = start_signing_depot(tmp_path / "depot", signing_key)
    yield server
    server.stop()


def depot_cli(
    server: DepotServer, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``depot ARGS`` with the server's store in the environment, as an operator runs it."""
    env = {**os.environ, "DEPOT_STORE_PATH": str(server.store_path)}
    return run([sys.executable, "-m", "depot.core", *args], env=env, check=check)


def nar_files(server: DepotServer) -> set[str]:
    return {f for f in stored_files(server) if f.startswith("nix/nar/")}


def backdate(server: DepotServer, keys: set[str]) -> None:
    for key in keys:
        os.utime(server.store_path / "blobs" / key, (TWO_HOURS_AGO, TWO_HOURS_AGO))


def copy_from(
    nix: Nix, server: DepotServer, key: SecretKey, path: str, to: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return nix(
        "nix", "copy", "--option", "trusted-public-keys", str(key.public_key()),
        "--from", f"{server.url}/nix", "--to", str(to), path, check=check,
    )  # fmt: skip


def test_orphan_nar_of_an_interrupted_nix_copy_is_collected_after_the_grace_period(
    depot: DepotServer,
    make_closure: Callable[[], Closure],
    nix: Nix,
    signing_key: SecretKey,
    tmp_path: Path,
) -> None:
    closure = make_closure()
    # A signature under the depot's key name that does not verify: the depot refuses the narinfo
    # after nix has uploaded the NAR, as if nix copy had died between the two.
    impostor = tmp_path / "impostor.key"
    impostor.write_text(str(SecretKey.generate(signing_key.name)))
    nix("nix", "store", "sign", "--key-file", str(impostor), closure.lib)
    failed = nix("nix", "copy", "--to", f"{depot.url}/nix", closure.app, check=False)
    assert failed.returncode != 0
    (orphan,) = nar_files(depot)

    kept = depot_cli(depot, "gc", "--grace", "1h")
    assert "nix: removed 0 blobs" in kept.stdout
    assert nar_files(depot) == {orphan}

    backdate(depot, {orphan})
    dry = depot_cli(depot, "gc", "--grace", "1h", "--dry-run")
    assert "nix: would remove 1 blob" in dry.stdout and nar_files(depot) == {orphan}

    done = depot_cli(depot, "gc", "--grace", "1h")
    assert "nix: removed 1 blob" in done.stdout
    assert nar_files(depot) == set()


def test_an_upload_while_a_collection_runs_completes_and_is_served(
    depot: DepotServer,
    make_closure: Callable[[], Closure],
    nix: Nix,
    signing_key: SecretKey,
    tmp_path: Path,
) -> None:
    orphans = depot.store_path / "blobs" / "nix" / "nar"
    orphans.mkdir(parents=True, exist_ok=True)
    for i in range(3000):
        orphan = orphans / f"{i:052d}.nar"
        orphan.write_bytes(b"orphan")
        os.utime(orphan, (TWO_HOURS_AGO, TWO_HOURS_AGO))
    closure = make_closure()
    env = {**os.environ, "DEPOT_STORE_PATH": str(depot.store_path)}
    collection = subprocess.Popen(
        [sys.executable, "-m", "depot.core", "gc", "--grace", "1h"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        nix("nix", "copy", "--to", f"{depot.url}/nix", closure.app)
    finally:
        out, err = collection.communicate(timeout=120)
    assert collection.returncode == 0, err
    assert "nix: removed 3,000 blobs" in out
    assert len(nar_files(depot)) == 2  # the closure's, nothing else

    copy_from(nix, depot, signing_key, closure.app, tmp_path / "fresh")


def test_depot_nix_delete_makes_nix_see_the_path_missing(
    depot: DepotServer,
    make_closure: Callable[[], Closure],
    nix: Nix,
    signing_key: SecretKey,
    tmp_path: Path,
) -> None:
    closure = make_closure()
    nix("nix", "copy", "--to", f"{depot.url}/nix", closure.app)
    before = nar_files(depot)
    assert len(before) == 2

    dry = depot_cli(depot, "nix", "delete", depot.url, closure.app, "--dry-run")
    assert f"would delete {closure.app}" in dry.stdout
    assert nar_files(depot) == before
    copy_from(nix, depot, signing_key, closure.app, tmp_path / "still-there")

    deleted = depot_cli(depot, "nix", "delete", depot.url, closure.app)
    assert f"deleted {closure.app} (2 blob(s)" in deleted.stdout
    assert len(nar_files(depot)) == 1

    missing = copy_from(nix, depot, signing_key, closure.app, tmp_path / "fresh", check=False)
    assert missing.returncode != 0
    assert f"path '{closure.app}' is required, but there is no substituter" in missing.stderr
    # Its reference was not deleted and is still served.
    copy_from(nix, depot, signing_key, closure.lib, tmp_path / "lib-only")

    again = depot_cli(depot, "nix", "delete", depot.url, closure.app, check=False)
    assert again.returncode == 1 and "HTTP 404" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
