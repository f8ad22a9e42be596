"""Depot's Python index side by side with pypiserver, holding the same files.

Measures, in one run:

1. request rate of ``/simple/<project>/`` for a project with 2,000 files (pip's Accept header,
   a bounded number of requests over a few keep-alive connections);
2. wall time of ``pip install`` of a 20-package closure into an empty target, with no cache.

pypiserver is installed from PyPI into a temporary venv with waitress (the WSGI server its
``auto`` choice prefers) and watchdog (for its ``cached-dir`` backend, which caches listings and
digests instead of hashing files per request): its fastest configuration. Everything listens on 127.0.0.1. Usage::

    .venv/bin/python benchmarks/pypi/bench_pypi.py [--files 2000] [--requests 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import aiohttp
import httpx

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
BIG = "bigproject"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_wheel(
    out: Path, name: str, version: str, requires: list[str], payload: int = 2000
) -> Path:
    """A small but complete wheel (METADATA, WHEEL, RECORD with hashes) pip installs."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    members = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n# {'x' * payload}\n",
        f"{dist_info}/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\nRequires-Python: >=3.8\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in members.items():
        digest = (
            base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        )
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    members[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    target = out / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in members.items():
            archive.writestr(path, text)
    return target


def make_files(root: Path, files: int) -> tuple[Path, list[str]]:
    """``root/flat`` (pypiserver's layout) and ``root/storage/python/<project>/`` (depot push's)."""
    flat = root / "flat"
    flat.mkdir(parents=True)
    for i in range(files):
        write_wheel(flat, BIG, f"{i // 100}.{i % 100}.0", [], payload=200)
    # 20 packages: bench-pkg-00 depends on 01..04, each of those on four more, and so on.
    closure = [f"bench-pkg-{i:02d}" for i in range(20)]
    for i, name in enumerate(closure):
        children = [closure[c] for c in range(4 * i + 1, min(4 * i + 5, len(closure)))]
        write_wheel(flat, name, "1.0.0", children, payload=20000)
    storage = root / "storage" / "python"
    for wheel in flat.iterdir():
        project = wheel.name.split("-", 1)[0].replace("_", "-")
        (storage / project).mkdir(parents=True, exist_ok=True)
        os.link(wheel, storage / project / wheel.name)
    return flat, closure


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early: {url}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server not ready: {url}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def install_pypiserver(root: Path) -> Path:
    venv = root / "pypiserver-venv"
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "-q",
            "--python",
            str(venv / "bin" / "python"),
            "pypiserver[cache]",
            "waitress",
        ],
        check=True,
    )
    return venv / "bin" / "pypi-server"


async def request_rate(url: str, total: int, connections: int) -> float:
    """Requests per second for ``total`` GETs of ``url`` over ``connections`` keep-alive streams."""
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url, headers={"Accept": PIP_ACCEPT}) as response:  # warm up
            assert response.status == 200, (url, response.status)
            await response.read()
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with session.get(url, headers={"Accept": PIP_ACCEPT}) as response:
                    assert response.status == 200
                    await response.read()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return total / (time.perf_counter() - start)


def pip_install_time(index: str, requirement: str, root: Path) -> float:
    target = Path(tempfile.mkdtemp(dir=root, prefix="target-"))
    env = {
        **os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_FIND_LINKS": " ", "PIP_EXTRA_INDEX_URL": " ", "PIP_CONSTRAINT": " ",
    }  # fmt: skip
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-cache-dir", "--no-compile",
         "--target", str(target), "--index-url", index, requirement],
        check=True, env=env,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    installed = len(list(target.glob("*.dist-info")))
    assert installed == 20, f"installed {installed} packages from {index}"
    shutil.rmtree(target)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-pypi-"))
    processes: list[subprocess.Popen] = []
    try:
        print(
            f"generating {args.files} files of {BIG} and a 20-package closure in {root}", flush=True
        )
        flat, closure = make_files(root, args.files)
        pypi_server = install_pypiserver(root)

        depot_port, peer_port = free_port(), free_port()
        log = open(root / "depot.log", "wb")  # noqa: SIM115
        depot = subprocess.Popen(
            [sys.executable, "-m", "depot.core", "serve", "--listen-addr", f"127.0.0.1:{depot_port}",
             "--store-path", str(root / "depot-store")],
            stdout=log, stderr=log,
        )  # fmt: skip
        processes.append(depot)
        peer = subprocess.Popen(
            [str(pypi_server), "run", "-p", str(peer_port), "-i", "127.0.0.1", "-a", ".", "-P", ".",
             "--disable-fallback", "--backend", "cached-dir", str(flat)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        processes.append(peer)
        depot_url, peer_url = f"http://127.0.0.1:{depot_port}", f"http://127.0.0.1:{peer_port}"
        wait_ready(depot_url + "/-/health", depot)
        wait_ready(peer_url + "/simple/", peer)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "depot.core", "python", "push", depot_url, "--dir", str(root / "storage")],
            check=True, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        print(
            f"pushed {args.files + 20} files into depot in {time.perf_counter() - start:.1f} s",
            flush=True,
        )

        depot_index, peer_index = f"{depot_url}/python/simple/", f"{peer_url}/simple/"
        rates = {"depot": [], "pypiserver": []}
        installs = {"depot": [], "pypiserver": []}
        for _ in range(args.rounds):
            for name, index in (("depot", depot_index), ("pypiserver", peer_index)):
                rate = asyncio.run(request_rate(f"{index}{BIG}/", args.requests, args.connections))
                rates[name].append(rate)
        for _ in range(args.rounds):
            for name, index in (("depot", depot_index), ("pypiserver", peer_index)):
                installs[name].append(pip_install_time(index, closure[0], root))

        rate_d, rate_p = statistics.median(rates["depot"]), statistics.median(rates["pypiserver"])
        time_d, time_p = (
            statistics.median(installs["depot"]),
            statistics.median(installs["pypiserver"]),
        )
        print()
        print(
            f"/simple/{BIG}/ with {args.files} files, {args.requests} requests x {args.rounds} rounds, "
            f"{args.connections} connections (median):"
        )
        print(f"  depot       {rate_d:8.1f} req/s")
        print(f"  pypiserver  {rate_p:8.1f} req/s")
        print(f"  ratio depot/pypiserver: {rate_d / rate_p:.2f}x (higher is better)")
        print(f"pip install of a 20-package closure, no cache, median of {args.rounds}:")
        print(f"  depot       {time_d:6.2f} s")
        print(f"  pypiserver  {time_p:6.2f} s")
        print(f"  ratio pypiserver/depot: {time_p / time_d:.2f}x (higher is better)")
    finally:
        for process in processes:
            stop(process)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
