"""Fixtures of the Python index tests: tiny projects built into wheels and sdists, a depot, clients.

The projects (built once per session, offline, with setuptools and no build isolation):

- ``alpha`` 1.0 depends on ``Beta.Pkg>=1.0`` and has an extra ``fancy`` that pulls in ``gamma``;
- ``Beta.Pkg`` 1.0 and 1.1 (a name pip must normalise to ``beta-pkg``), 1.1 depends on ``delta``;
- ``gamma`` 1.0;
- ``delta`` 1.0 (``requires-python >=3.8``) and 2.0 (``requires-python >=4``, never installable).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
    run(
        [
            sys.executable,
            "-m",
            "build",
            "--no-isolation",
            "--skip-dependency-check",
            "--outdir",
            str(out),
            str(source),
        ],
        env=env,
    )


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a wheel and an sdist of every project in :data:`PROJECTS`."""
    root = tmp_path_factory.mktemp("projects")
    out = tmp_path_factory.mktemp("dists")
    sources = [write_project(root, project) for project in PROJECTS]
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda source: build(source, out), sources))
    return out


@pytest.fixture(scope="module")
def module_depot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DepotServer]:
    """One ``depot serve`` shared by a test module (uploads are idempotent)."""
    server = DepotServer(tmp_path_factory.mktemp("depot") / "store").start()
    yield server
    server.stop()


class Clients:
    """pip, uv and twine from the test venv, run with no user config and no cache."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_NO_CACHE_DIR": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            # Machine-wide sources and pins in the environment would leak into every client run;
            # pip splits list settings on whitespace, so one space empties them.
            "PIP_FIND_LINKS": " ",
            "PIP_EXTRA_INDEX_URL": " ",
            "PIP_CONSTRAINT": " ",
            "UV_NO_CACHE": "1",
            "UV_NO_CONFIG": "1",
            "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "NO_COLOR": "1",
        }

    def twine_upload(
        self, depot_url: str, files: list[Path | str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(
            [
                TWINE, "upload", "--repository-url", f"{depot_url}/python/",
                "-u", "x", "-p", "y", "--non-interactive", "--disable-progress-bar",
                *map(str, files),
            ],
            check=check, env=self.env,
        )  # fmt: skip

    def pip_install(
        self, index: str, *requirements: str, check: bool = True
    ) -> tuple[Path, subprocess.CompletedProcess[str]]:
        """``pip install --target`` into a new directory: a fresh environment for imports."""
        target = Path(tempfile.mkdtemp(dir=self.tmp_path, prefix="pip-target-"))
        result = run(
            [*PIP, "install", "--no-cache-dir", "--target", str(target), "--index-url", index,
             *requirements],
            check=check, env=self.env,
        )  # fmt: skip
        return target, result

    def pip_download(self, index: str, *requirements: str) -> Path:
        dest = Path(tempfile.mkdtemp(dir=self.tmp_path, prefix="pip-download-"))
        run([*PIP, "download", "--no-cache-dir", "-d", str(dest), "--index-url", index, *requirements],
            env=self.env)  # fmt: skip
        return dest

    def uv_install(self, index: str, *requirements: str) -> Path:
        target = Path(tempfile.mkdtemp(dir=self.tmp_path, prefix="uv-target-"))
        run([UV, "pip", "install", "--no-cache", "--target", str(target), "--python", sys.executable,
             "--index-url", index, *requirements], env=self.env)  # fmt: skip
        return target

    def depot(
        self, *args: str, check: bool = True, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, "-m", "depot.core", *args], check=check, env=self.env, **kwargs)


def installed(target: Path) -> dict[str, str]:
    """{normalised project name: version} of what was installed into ``target``."""
    found = {}
    for dist_info in target.glob("*.dist-info"):
        name, version = dist_info.name.removesuffix(".dist-info").rsplit("-", 1)
        found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


@pytest.fixture
def clients(tmp_path: Path) -> Clients:
    return Clients(tmp_path)


@pytest.fixture(scope="module")
def published(
    module_depot: DepotServer, dists: Path, tmp_path_factory: pytest.TempPathFactory
) -> DepotServer:
    """The module's depot with every built distribution uploaded through twine."""
    Clients(tmp_path_factory.mktemp("twine")).twine_upload(
        module_depot.url, sorted(dists.iterdir())
    )
    return module_depot


@pytest.fixture
def list_installed() -> Callable[[Path], dict[str, str]]:
    return installed


def make_wheel(
    path: Path,
    name: str,
    version: str,
    metadata_name: str | None = None,
    metadata_version: str | None = None,
    requires_python: str | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    """A minimal wheel written by hand (for bad-input tests and large benchmarks)."""
    dist_info = f"{name.replace('-', '_')}-{version}.dist-info"
    metadata = (
        f"Metadata-Version: 2.1\nName: {metadata_name or name}\n"
        f"Version: {metadata_version or version}\n"
        + (f"Requires-Python: {requires_python}\n" if requires_python else "")
    )
    wheel = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    target = path / wheel
    with zipfile.ZipFile(target, "w") as archive:
        for member, text in (files or {f"{name.replace('-', '_')}.py": ""}).items():
            archive.writestr(member, text)
        archive.writestr(f"{dist_info}/METADATA", metadata)
        archive.writestr(
            f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{dist_info}/RECORD", "")
    return target


@pytest.fixture
def wheel_factory(tmp_path: Path) -> Callable[..., Path]:
    """``wheel_factory("name", "1.0", metadata_name=..., ...)`` -> path of a hand-made wheel."""

    def make(*args: object, **kwargs: object) -> Path:
        out = Path(tempfile.mkdtemp(dir=tmp_path, prefix="wheel-"))
        return make_wheel(out, *args, **kwargs)  # type: ignore[arg-type]

    return make
