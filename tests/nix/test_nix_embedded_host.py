"""examples/embedded under a real hypercorn process: after ``nix copy`` into the mounted depot,
the host exits promptly on SIGTERM, with the documented ``lifespan=`` line and without it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from depot.core.testing import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embedded"

# The example's routes in a host that has no lifespan at all: depot starts on the first request.
LAZY_HOST = """
from app import routes
from starlette.applications import Starlette

app = Starlette(routes=routes)
"""


def start_host(tmp_path: Path, module: str) -> tuple[subprocess.Popen[bytes], str]:
    (tmp_path / "lazy_host.py").write_text(LAZY_HOST)
    port = free_port()
    log = open(tmp_path / "host.log", "ab")  # noqa: SIM115 - owned by the process
    process = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", f"{module}:app"],
        stdout=log,
        stderr=log,
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": f"{EXAMPLE}:{tmp_path}",
            "EMBEDDED_DEPOT_STORE": str(tmp_path / "store"),
        },
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "host.log").read_text()
        try:
            httpx.get(url + "/", timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    pytest.fail("the host app did not start")


@pytest.mark.parametrize("module", ["app", "lazy_host"], ids=["lifespan-line", "mount-only"])
def test_host_exits_after_sigterm_once_depot_served_a_nix_copy(
    tmp_path: Path, nix: Callable[..., subprocess.CompletedProcess[str]], closure, module: str
) -> None:
    process, url = start_host(tmp_path, module)
    try:
        cache = f"{url}/pkgs/nix"
        nix("nix", "copy", "--to", cache, closure.app)
        hash_part = Path(closure.app).name[:32]
        assert httpx.get(f"{cache}/{hash_part}.narinfo").status_code == 200
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("the host was still running 10 s after SIGTERM")
        log = (tmp_path / "host.log").read_text()
        assert "Traceback" not in log, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
