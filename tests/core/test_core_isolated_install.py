"""Each distribution installs on its own: depot-core + depot-nix is a depot for Nix alone.

The test builds a fresh virtual environment holding only the distributions it names. Third-party
dependencies come from this test run's environment through a directory of links that leaves out
every depot distribution, so the check needs no network and sees no other depot plugin.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import httpx
import pytest
from depot.core.testing import DepotServer, run

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _is_depot(name: str) -> bool:
    normalised = name.lower().lstrip("_").replace("-", "_")
    return normalised.startswith(("depot", "editable__.depot", "editable___depot"))


@pytest.fixture(scope="module")
def isolated_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("isolated")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    deps = base / "deps"
    deps.mkdir()
    outer_site = Path(sysconfig.get_paths()["purelib"])
    for entry in outer_site.iterdir():
        if not _is_depot(entry.name) and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    inner_site = next((venv / "lib").glob("python3*/site-packages"))
    (inner_site / "third_party_deps.pth").write_text(f"{deps}\n")
    return venv


def pip_install(venv: Path, *paths: Path) -> None:
    run([
        sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
        "--no-deps", "--no-build-isolation", "--no-index", *map(str, paths),
    ])  # fmt: skip


def test_core_and_nix_alone_then_a_third_party_plugin(isolated_venv: Path, tmp_path: Path) -> None:
    pip_install(isolated_venv, ROOT / "depot-core", ROOT / "depot-nix")
    depot = str(isolated_venv / "bin" / "depot")

    help_text = run([depot, "--help"]).stdout
    assert "  nix " in help_text
    assert "  npm " not in help_text and "  python " not in help_text
    plugins = run([depot, "plugins"]).stdout
    assert "depot-nix" in plugins and "depot-npm" not in plugins

    server = DepotServer(tmp_path / "store", python=isolated_venv / "bin" / "python").start()
    try:
        assert httpx.get(server.url + "/nix/nix-cache-info").status_code == 200
        assert httpx.get(server.url + "/npm/-/ping").status_code == 404
        assert httpx.get(server.url + "/python/simple/").status_code == 404
    finally:
        server.stop()

    pip_install(isolated_venv, ROOT / "examples" / "depot-raw")
    assert "  raw " in run([depot, "--help"]).stdout
    server = DepotServer(tmp_path / "store", python=isolated_venv / "bin" / "python").start()
    try:
        assert httpx.put(server.url + "/raw/files/hello.txt", content=b"hi").status_code == 201
        assert httpx.get(server.url + "/raw/files/hello.txt").content == b"hi"
        listing = run([depot, "raw", "list", server.url]).stdout
        assert "hello.txt" in listing
    finally:
        server.stop()
