"""Fixtures of the Python index tests: tiny projects built into wheels and sdists, a depot, clients.

The projects (built once per session, offline, with setuptools and no build isolation):

- ``alpha`` 1.0 depends on ``Beta.Pkg>=1.0`` and has an extra ``fancy`` that pulls in ``gamma``;
- ``Beta.Pkg`` 1.0 and 1.1 (a name pip must normalise to ``beta-pkg``), 1.1 depends on ``delta``;
- ``gamma`` 1.0;
- ``delta`` 1.0 (``requires-python >=3.8``) and 2.0 (``requires-python >=4``, never installable).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from depot.core.testing import DepotServer, run

VENV_BIN = Path(sys.executable).parent
PIP = [sys.executable, "-m", "pip"]
TWINE = str(VENV_BIN / "twine")
UV = str(VENV_BIN / "uv")


@dataclass(frozen=True)
class Project:
    name: str
    version: str
    dependencies: tuple[str, ...] = ()
    extras: tuple[tuple[str, tuple[str, ...]], ...] = ()
    requires_python: str | None = None

    @property
    def module(self) -> str:
        return self.name.lower().replace(".", "_").replace("-", "_")


PROJECTS = (
    Project("alpha", "1.0", ("Beta.Pkg>=1.0",), (("fancy", ("gamma",)),)),
    Project("Beta.Pkg", "1.0"),
    Project("Beta.Pkg", "1.1", ("delta",)),
    Project("gamma", "1.0"),
    Project("delta", "1.0", requires_python=">=3.8"),
    Project("delta", "2.0", requires_python=">=4"),
)


def write_project(root: Path, project: Project) -> Path:
    """A setuptools project with one module that records its name and version."""
    source = root / f"{project.module}-{project.version}"
    source.mkdir(parents=True)
    lines = [
        "[build-system]",
        'requires = ["setuptools>=61"]',
        'build-backend = "setuptools.build_meta"',
        "[project]",
        f'name = "{project.name}"',
        f'version = "{project.version}"',
        f"dependencies = {list(project.dependencies)!r}",
    ]
    if project.requires_python:
        lines.append(f'requires-python = "{project.requires_python}"')
    if project.extras:
        lines.append("[project.optional-dependencies]")
        lines += [f"{extra} = {list(deps)!r}" for extra, deps in project.extras]
    lines += ["[tool.setuptools]", f'py-modules = ["{project.module}"]']
    (source / "pyproject.toml").write_text("\n".join(lines) + "\n")
    (source / f"{project.module}.py").write_text(
        f'NAME = "{project.name}"\nVERSION = "{project.version}"\n'
    )
    return source


def build(source: Path, out: Path) -> None:
    """Build a wheel and an sdist the way a maintainer would, but offline."""
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)], env=env)


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a wheel and an sdist of every project in :data:`PROJECTS`."""
    root = tmp_path_factory.mktemp("projects")
    out = tmp_path_factory.mktemp("dists")
    for project in PROJECTS:
        build(write_project(root, project), out)
    return out


@pytest.fixture(scope="module")
def module_depot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DepotServer]:
    """One ``depot serve`` shared by a test module (uploads are idempotent)."""
    server = DepotServer(tmp_path_factory.mktemp("depot") / "store").start()
    yield server
    server.stop()


def twine_upload(depot_url: str, files: list[Path], check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(
        [
            TWINE, "upload", "--repository-url", f"{depot_url}/python/",
            "-u", "x", "-p", "y", "--non-interactive", "--disable-progress-bar",
            *map(str, files),
        ],
        check=check,
        env={**os.environ, "TWINE_CERT": "", "NO_COLOR": "1"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def published(module_depot: DepotServer, dists: Path) -> DepotServer:
    """The module's depot with every built distribution uploaded through twine."""
    twine_upload(module_depot.url, sorted(dists.iterdir()))
    return module_depot


def fresh_target(tmp_path: Path) -> Path:
    """An empty directory to install into (cheaper than a venv, as isolated for imports)."""
    target = tmp_path / "target"
    if target.exists():
        shutil.rmtree(target)
    return target


def client_env(tmp_path: Path) -> dict[str, str]:
    """No user configuration and no cache leaks into a client run."""
    return {
        **os.environ,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_CACHE_DIR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "UV_NO_CACHE": "1",
        "UV_NO_CONFIG": "1",
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "HOME": str(tmp_path / "home"),
    }


def installed(target: Path) -> dict[str, str]:
    """{normalised project name: version} of what was installed into ``target``."""
    found = {}
    for dist_info in target.glob("*.dist-info"):
        name, version = dist_info.name.removesuffix(".dist-info").rsplit("-", 1)
        found[name.lower().replace("_", "-").replace(".", "-")] = version
    return found
