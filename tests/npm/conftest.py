"""Fixtures for the npm tests: a real npm 11 with its own cache and config per test, packages."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from depot.core.testing import run, run_answering

NPM = shutil.which("npm")


@dataclass
class Npm:
    """The npm client, isolated: its own cache, userconfig and global prefix under ``home``."""

    home: Path

    def env(self, registry: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_config_")}
        env.update(
            NPM_CONFIG_CACHE=str(self.home / "cache"),
            NPM_CONFIG_USERCONFIG=str(self.home / "npmrc"),
            NPM_CONFIG_GLOBALCONFIG=str(self.home / "global-npmrc"),
            NPM_CONFIG_PREFIX=str(self.home / "prefix"),
            NPM_CONFIG_REGISTRY=registry,
            NPM_CONFIG_UPDATE_NOTIFIER="false",
            NPM_CONFIG_FUND="false",
            NPM_CONFIG_AUDIT="false",
            NPM_CONFIG_FETCH_RETRIES="0",
            HOME=str(self.home),
        )
        return env

    def login(self, registry: str) -> None:
        """npm publish wants a token for the registry even when the server is open."""
        parts = urlsplit(registry.rstrip("/") + "/")
        line = f"//{parts.netloc}{parts.path}:_authToken=test-token\n"
        with open(self.home / "npmrc", "a") as f:
            f.write(line)

    def __call__(
        self, registry: str, *args: str, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        assert NPM is not None
        cwd = cwd or self.home
        return run(
            [NPM, *args, "--registry", registry], cwd=cwd, env=self.env(registry), check=check
        )

    def answer(
        self, registry: str, *args: str, prompts: list[tuple[str, str]]
    ) -> subprocess.CompletedProcess[str]:
        """Run npm and type each reply once its prompt shows (``npm login`` asks on stdin)."""
        assert NPM is not None
        return run_answering(
            [NPM, *args, "--registry", registry], prompts, cwd=self.home, env=self.env(registry)
        )


@pytest.fixture
def npm(tmp_path: Path) -> Npm:
    if NPM is None:
        pytest.skip("npm is not installed")
    home = tmp_path / "npm-home"
    home.mkdir()
    (home / "npmrc").write_text("")
    return Npm(home)


@pytest.fixture
def make_package(tmp_path: Path) -> Callable[..., Path]:
    """Write a tiny package directory: ``make_package("@s/a", "1.0.0", dependencies={...})``."""

    count = iter(range(1_000_000))

    def make(name: str, version: str, **fields: Any) -> Path:
        folder = tmp_path / "src" / f"{next(count)}-{name.replace('/', '__')}-{version}"
        folder.mkdir(parents=True)
        manifest = {"name": name, "version": version, "main": "index.js", **fields}
        (folder / "package.json").write_text(json.dumps(manifest))
        (folder / "index.js").write_text(f"module.exports = {json.dumps(name + '@' + version)};\n")
        return folder

    return make


def make_tgz(
    name: str, version: str, *, manifest: dict[str, Any] | None = None, root: str = "package"
) -> bytes:
    """A gzipped npm tarball built in memory (for bad-input tests that bypass npm)."""
    body = json.dumps(
        manifest if manifest is not None else {"name": name, "version": version}
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path, data in (
            (f"{root}/package.json", body),
            (f"{root}/index.js", b"module.exports = 1;\n"),
        ):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def publish_body(name: str, version: str, tgz: bytes, **overrides: Any) -> dict[str, Any]:
    """The JSON ``npm publish`` sends, for a tarball built by :func:`make_tgz`."""
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    dist = {"integrity": integrity, "shasum": hashlib.sha1(tgz).hexdigest(), "tarball": "x"}  # noqa: S324
    body: dict[str, Any] = {
        "_id": name,
        "name": name,
        "dist-tags": {"latest": version},
        "versions": {version: {"name": name, "version": version, "dist": dist}},
        "_attachments": {
            f"{name}-{version}.tgz": {
                "content_type": "application/octet-stream",
                "data": base64.b64encode(tgz).decode(),
                "length": len(tgz),
            }
        },
    }
    body.update(overrides)
    return body
