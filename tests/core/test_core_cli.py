"""The `depot` command: discovery of plugin commands, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEPOT = [sys.executable, "-m", "depot.core"]


def depot(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*DEPOT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_installed_ecosystem_commands() -> None:
    result = depot("--help")
    assert result.returncode == 0
    for command in ("serve", "plugins", "version", "nix", "npm", "python"):
        assert f"  {command} " in result.stdout


def test_version_and_plugins() -> None:
    assert depot("version").stdout.strip() == "0.1.0"
    listing = depot("plugins").stdout
    assert "depot-nix 0.1.0" in listing and "depot-core 0.1.0" in listing


def test_unknown_storage_type(tmp_path: Path) -> None:
    result = depot("serve", "--store-path", str(tmp_path / "s"), "--storage-type", "tape")
    assert_one_line_error(result, "unknown storage type 'tape'", "fs")


def test_unwritable_store_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = depot("serve", "--store-path", str(blocker / "store"))
    assert_one_line_error(result, "store path", "not writable")


@pytest.mark.parametrize("url", ["mysql://db/x", "sqlite://", "not a url"])
def test_malformed_database_url(tmp_path: Path, url: str) -> None:
    result = depot("serve", "--store-path", str(tmp_path / "s"), "--database-url", url)
    assert_one_line_error(result, "database URL")


def test_bad_listen_addr_from_environment(tmp_path: Path) -> None:
    result = depot(
        "serve", "--store-path", str(tmp_path / "s"), env={"DEPOT_LISTEN_ADDR": "localhost"}
    )
    assert_one_line_error(result, "--listen-addr 'localhost'")


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    result = depot(
        "--verbose", "serve", "--store-path", str(tmp_path / "s"), "--storage-type", "tape"
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr


@pytest.fixture
def broken_plugin_path(tmp_path: Path) -> Path:
    """A site directory holding an installed distribution whose plugin module does not import."""
    site = tmp_path / "site"
    dist_info = site / "depot_broken-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: depot-broken\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[depot]\nbroken = depot_broken_missing.plugin\n")
    return site


def test_plugin_that_fails_to_import_is_reported_and_others_work(broken_plugin_path: Path) -> None:
    result = depot("plugins", env={"PYTHONPATH": str(broken_plugin_path)})
    assert result.returncode == 0
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert "plugin 'broken' (depot-broken) failed to load: ModuleNotFoundError" in result.stderr
    assert "broken" in result.stdout and "FAILED" in result.stdout
    assert "depot-nix" in result.stdout


def test_server_runs_with_a_broken_plugin_installed(
    make_depot_server, broken_plugin_path: Path
) -> None:
    import httpx

    server = make_depot_server(env={"PYTHONPATH": str(broken_plugin_path)})
    assert httpx.get(server.url + "/nix/nix-cache-info").status_code == 200
    assert '"plugin": "broken"' in server.log()
