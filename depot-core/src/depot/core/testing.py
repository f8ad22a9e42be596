"""Pytest fixtures for depot and its plugins: a real ``depot serve`` and an in-process app.

Plugin test suites load these with ``pytest_plugins = ["depot.core.testing"]``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DepotServer:
    """A ``depot serve`` subprocess on a free loopback port, logging to ``<store>/server.log``."""

    def __init__(
        self,
        store_path: Path,
        *args: str,
        env: dict[str, str] | None = None,
        python: str | Path = sys.executable,
    ) -> None:
        self.store_path = store_path
        self.python = str(python)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.log_path = store_path.parent / f"{store_path.name}-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> DepotServer:
        self.store_path.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        cmd = [
            self.python, "-m", "depot.core", "serve",
            "--listen-addr", f"127.0.0.1:{self.port}",
            "--store-path", str(self.store_path),
            *self.args,
        ]  # fmt: skip
        self.process = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"depot serve exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/-/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"depot serve did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@pytest.fixture
def make_depot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., DepotServer]]:
    """Start ``depot serve`` with extra flags: ``make_depot_server("--private-key", key)``."""
    servers: list[DepotServer] = []

    def make(*args: str, store_path: Path | None = None, env: dict[str, str] | None = None) -> DepotServer:
        store = store_path or tmp_path_factory.mktemp("depot") / "store"
        server = DepotServer(store, *args, env=env).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def depot_server(make_depot_server: Callable[..., DepotServer]) -> DepotServer:
    """A running ``depot serve`` with an empty store and default settings."""
    return make_depot_server()


@pytest.fixture
async def app_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to an in-process depot (no lifespan, as when mounted)."""
    from depot.core import create_app

    app = create_app(store_path=tmp_path / "store")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://depot.test") as client:
        yield client
    await app.state.depot.shutdown()


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a client command, failing the test with its output if it fails."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 300)
    check = kwargs.pop("check", True)
    result = subprocess.run(cmd, **kwargs)  # noqa: S603 - tests run their own commands
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result
