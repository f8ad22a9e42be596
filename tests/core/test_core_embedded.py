"""Depot mounted inside another Starlette app, as examples/embedded does it."""

from __future__ import annotations

import runpy
from pathlib import Path

import httpx
import pytest
from depot.core import create_app
from depot.core.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embedded" / "app.py"


@pytest.fixture
async def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EMBEDDED_DEPOT_STORE", str(tmp_path / "store"))
    app = runpy.run_path(str(EXAMPLE))["app"]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://host.test"
    ) as client:
        yield client


async def test_host_routes_still_work(embedded: httpx.AsyncClient) -> None:
    assert (await embedded.get("/")).text.startswith("host application")


async def test_depot_serves_under_the_prefix_without_a_lifespan(
    embedded: httpx.AsyncClient,
) -> None:
    info = await embedded.get("/pkgs/nix/nix-cache-info")
    assert info.status_code == 200 and "StoreDir: /nix/store" in info.text
    assert (await embedded.get("/nix/nix-cache-info")).status_code == 404


async def test_links_carry_the_mount_prefix(embedded: httpx.AsyncClient) -> None:
    page = (await embedded.get("/pkgs/")).text
    assert 'href="http://host.test/pkgs/nix/"' in page


async def test_uploads_work_mounted(embedded: httpx.AsyncClient) -> None:
    put = await embedded.put("/pkgs/raw/files/a.txt", content=b"mounted")
    assert put.status_code == 201
    assert (await embedded.get("/pkgs/raw/files/a.txt")).content == b"mounted"


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        create_app(store_path=tmp_path, storage_tyep="fs")
