"""twine, pip, uv against two depot replicas sharing one S3 bucket and a PostgreSQL database."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from depot.core.testing import run

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A wheel and an sdist of ``replica-demo`` 1.0, built offline."""
    source = tmp_path_factory.mktemp("replica-demo")
    (source / "pyproject.toml").write_text(
        "[build-system]\nrequires = ['setuptools>=61']\nbuild-backend = 'setuptools.build_meta'\n"
        "[project]\nname = 'Replica.Demo'\nversion = '1.0'\n"
        "[tool.setuptools]\npy-modules = ['replica_demo']\n"
    )
    (source / "replica_demo.py").write_text("VERSION = '1.0'\n")
    out = tmp_path_factory.mktemp("dist")
    run(
        [sys.executable, "-m", "build", "--no-isolation", "--skip-dependency-check",
         "--outdir", str(out), str(source)],
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )  # fmt: skip
    return sorted(out.iterdir())


def client_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_CACHE_DIR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "UV_NO_CACHE": "1",
        "UV_NO_CONFIG": "1",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }


def test_pip_installs_from_one_replica_what_twine_uploaded_to_the_other(
    make_replicas: Any, dists: list[Path], tmp_path: Path
) -> None:
    a, b = make_replicas(2)
    env = client_env(tmp_path)
    assert httpx.get(f"{b.url}/python/simple/replica-demo/").status_code == 404  # B has looked
    twine_upload(a.url, dists, env)
    target = tmp_path / "pip-target"
    run(
        [sys.executable, "-m", "pip", "install", "--target", str(target),
         "--index-url", f"{b.url}/python/simple/", "replica.demo==1.0"],
        env=env,
    )  # fmt: skip
    assert (target / "replica_demo.py").read_text() == "VERSION = '1.0'\n"
    page = httpx.get(f"{b.url}/python/simple/replica-demo/").text
    assert all(d.name in page for d in dists)


def twine_upload(url: str, files: list[Path], env: dict[str, str]) -> None:
    run(
        [str(VENV_BIN / "twine"), "upload", "--repository-url", f"{url}/python/",
         "-u", "x", "-p", "y", "--non-interactive", "--disable-progress-bar", *map(str, files)],
        env=env,
    )  # fmt: skip


def test_concurrent_uploads_through_both_then_uv_installs(
    make_replicas: Any, dists: list[Path], tmp_path: Path
) -> None:
    """The sdist through A and the wheel through B at once: both files listed by both replicas."""
    a, b = make_replicas(2)
    env = client_env(tmp_path)
    sdist = next(d for d in dists if d.name.endswith(".tar.gz"))
    wheel = next(d for d in dists if d.name.endswith(".whl"))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda u: twine_upload(u[0].url, [u[1]], env), [(a, sdist), (b, wheel)]))
    for replica in (a, b):
        page = httpx.get(f"{replica.url}/python/simple/replica-demo/").text
        assert sdist.name in page and wheel.name in page
    target = tmp_path / "uv-target"
    run(
        [str(VENV_BIN / "uv"), "pip", "install", "--target", str(target),
         "--index-url", f"{a.url}/python/simple/", "replica.demo==1.0"],
        env=env,
    )  # fmt: skip
    assert (target / "replica_demo.py").read_text() == "VERSION = '1.0'\n"


def test_project_page_served_by_one_replica_follows_uploads_through_the_other(
    make_replicas: Any, dists: list[Path], tmp_path: Path
) -> None:
    """B renders (maybe caches) the page with the sdist; the wheel uploaded via A shows at once."""
    a, b = make_replicas(2)
    env = client_env(tmp_path)
    sdist = next(d for d in dists if d.name.endswith(".tar.gz"))
    wheel = next(d for d in dists if d.name.endswith(".whl"))
    twine_upload(a.url, [sdist], env)
    formats = ("text/html", "application/vnd.pypi.simple.v1+json")
    etags = {}
    for accept in formats:
        first = httpx.get(f"{b.url}/python/simple/replica-demo/", headers={"Accept": accept})
        assert sdist.name in first.text and wheel.name not in first.text
        etags[accept] = first.headers.get("etag", "")
    twine_upload(a.url, [wheel], env)
    for accept in formats:
        again = httpx.get(
            f"{b.url}/python/simple/replica-demo/",
            headers={"Accept": accept, "If-None-Match": etags[accept]},
        )
        assert again.status_code == 200 and wheel.name in again.text
