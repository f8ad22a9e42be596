"""The pages as people see them: rendered by a real headless Chromium (Debian's package)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from depot.core.testing import run

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)


def chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium with a fresh profile and no background traffic; return stdout."""
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
            f"--user-data-dir={tmp_path / 'profile'}", *args,
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture
def signing_key(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "signing.key"
    public = run(
        [
            sys.executable,
            "-m",
            "depot.core",
            "nix",
            "generate-key",
            "--name",
            "pages-test-1",
            "--out",
            str(key),
        ]
    ).stdout.strip()
    return key, public


def test_landing_page_shows_real_urls_and_the_nix_key(
    make_depot_server, signing_key, tmp_path: Path
) -> None:
    key, public = signing_key
    server = make_depot_server("--private-key", str(key))
    httpx.put(server.url + "/raw/files/hello.txt", content=b"hello")
    dom = chromium(tmp_path, "--dump-dom", server.url + "/")
    assert f"substituters = {server.url}/nix" in dom
    assert public in dom
    assert f"{server.url}/npm/" in dom
    assert f"{server.url}/python/simple/" in dom
    assert "hello.txt" in dom
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "landing.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1400", server.url + "/")
    assert shot.stat().st_size > 10_000


def test_search_form_finds_an_uploaded_file(depot_server, tmp_path: Path) -> None:
    for name in ("alpha-report.txt", "beta-notes.txt"):
        httpx.put(depot_server.url + f"/raw/files/{name}", content=name.encode())
    page = chromium(tmp_path, "--dump-dom", depot_server.url + "/-/browse/raw")
    assert 'name="q"' in page and "beta-notes.txt" in page
    # What the browser requests when the form is submitted (method GET, field q).
    found = chromium(tmp_path, "--dump-dom", depot_server.url + "/-/browse/raw?q=alpha")
    assert "alpha-report.txt" in found and "beta-notes.txt" not in found
    ARTIFACTS.mkdir(exist_ok=True)
    chromium(
        tmp_path,
        f"--screenshot={ARTIFACTS / 'browse.png'}",
        "--window-size=1280,900",
        depot_server.url + "/-/browse/raw?q=alpha",
    )


def test_landing_page_shows_how_to_authenticate_each_client(
    make_depot_server, make_ssh_key, tmp_path: Path
) -> None:
    auth_file = tmp_path / "auth.keys"
    auth_file.write_text(make_ssh_key().auth_line("w") + "\n")
    server = make_depot_server("--auth-file", str(auth_file))  # only w keys: pages stay readable
    dom = chromium(tmp_path, "--dump-dom", server.url + "/")
    assert "Authentication is on" in dom
    assert "netrc-file" in dom
    assert f"//127.0.0.1:{server.port}/npm/:_authToken" in dom
    assert f"http://__token__:$TOKEN@127.0.0.1:{server.port}/python/simple/" in dom
    assert "-u __token__ -p $TOKEN" in dom
    assert "eyJ" not in dom  # no token is ever printed on a page
