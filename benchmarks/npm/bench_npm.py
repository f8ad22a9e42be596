"""depot vs Verdaccio 6.8.0, side by side, holding the same packages.

1. Packument request rate for a package with 1,000 versions (the abbreviated form npm install
   asks for, and the full form), fixed number of requests at fixed concurrency.
2. Wall time of ``npm install`` of a 60-package tree with an empty npm cache (median of runs,
   the two servers alternating, after one untimed install each).

Verdaccio is installed from the npm registry into a temporary directory (or --verdaccio-dir to
reuse one), with ``"overrides": {"node-fetch": "2.7.0"}`` as this machine needs. Everything else
is generated locally and served on loopback. Run: ``.venv/bin/python benchmarks/npm/bench_npm.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ABBREVIATED = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
VERDACCIO_VERSION = "6.8.0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tgz(name: str, version: str, manifest: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        files = {
            "package/package.json": json.dumps(manifest).encode(),
            "package/index.js": f"module.exports = {json.dumps(name + '@' + version)};\n".encode(),
            "package/README.md": (f"# {name}\n\n" + "Some documentation. " * 50).encode(),
        }
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 499162500
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def publish_document(name: str, version: str, fields: dict[str, Any]) -> dict[str, Any]:
    manifest = {
        "name": name,
        "version": version,
        "description": f"{name} for the benchmark",
        "main": "index.js",
        "license": "MIT",
        **fields,
    }
    data = tgz(name, version, manifest)
    dist = {
        "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
        "shasum": hashlib.sha1(data).hexdigest(),  # noqa: S324 - npm's shasum
        "tarball": f"http://placeholder/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz",
    }
    return {
        "_id": name,
        "name": name,
        "description": manifest["description"],
        "dist-tags": {"latest": version},
        "versions": {version: {**manifest, "_id": f"{name}@{version}", "dist": dist}},
        "_attachments": {
            f"{name}-{version}.tgz": {
                "content_type": "application/octet-stream",
                "data": base64.b64encode(data).decode(),
                "length": len(data),
            }
        },
    }


def tree_packages() -> list[tuple[str, str, dict[str, Any]]]:
    """60 packages: a root, 11 mid-level packages (some scoped) with 4 leaves each, 4 shared."""
    packages: list[tuple[str, str, dict[str, Any]]] = []
    shared = [f"bench-shared-{i}" for i in range(4)]
    for name in shared:
        packages.append((name, "1.2.3", {}))
    mids = []
    for m in range(11):
        mid = f"@bench/mid-{m}" if m % 3 == 0 else f"bench-mid-{m}"
        leaves = [f"bench-leaf-{m}-{i}" for i in range(4)]
        for leaf in leaves:
            packages.append((leaf, "0.4.1", {"dependencies": {shared[m % 4]: "^1.0.0"}}))
        packages.append((mid, "2.1.0", {"dependencies": {leaf: "~0.4.0" for leaf in leaves}}))
        mids.append(mid)
    packages.append(("bench-root", "1.0.0", {"dependencies": {mid: "^2.0.0" for mid in mids}}))
    assert len(packages) == 60, len(packages)
    return packages


def big_package(count: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (
            "bench-big",
            f"{i // 100}.{(i // 10) % 10}.{i % 10}",
            {
                "dependencies": {"bench-shared-0": "^1.0.0"},
                "scripts": {"test": "node test.js"},
                "keywords": ["benchmark", "depot"],
                "repository": "github:example/bench-big",
            },
        )
        for i in range(count)
    ]


def process_cpu_seconds(pid: int) -> float:
    """A process's user and system CPU so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(*pids: int, quiet: float = 0.5, timeout: float = 20.0) -> None:
    """Until the processes used (almost) no CPU for ``quiet`` seconds, at most ``timeout``: a
    depot that just served a cold install is still committing its last writes, and an install
    timed meanwhile would measure them too."""
    deadline = time.monotonic() + timeout
    before = sum(process_cpu_seconds(pid) for pid in pids)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = sum(process_cpu_seconds(pid) for pid in pids)
        if now - before < 0.02:
            return
        before = now


class Server:
    def __init__(
        self, name: str, registry: str, process: subprocess.Popen[bytes], health: str
    ) -> None:
        self.name, self.registry, self.process, self.health = name, registry, process, health

    def wait(self, timeout: float = 60) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early")
            try:
                if httpx.get(self.health, timeout=1).status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start")

    def cpu_seconds(self) -> float:
        """The server process's user and system CPU so far."""
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_depot(work: Path) -> Server:
    port = free_port()
    log = open(work / "depot.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "depot.core",
            "serve",
            "--listen-addr",
            f"127.0.0.1:{port}",
            "--store-path",
            str(work / "depot-store"),
        ],
        stdout=log,
        stderr=log,
    )
    return Server(
        "depot", f"http://127.0.0.1:{port}/npm", process, f"http://127.0.0.1:{port}/-/health"
    ).wait()


def install_verdaccio(directory: Path) -> Path:
    binary = directory / "node_modules" / ".bin" / "verdaccio"
    if binary.exists():
        return binary
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "package.json").write_text(
        json.dumps(
            {
                "name": "verdaccio-bench",
                "version": "0.0.0",
                "private": True,
                "dependencies": {"verdaccio": VERDACCIO_VERSION},
                "overrides": {"node-fetch": "2.7.0"},
            }
        )
    )
    print(f"installing verdaccio {VERDACCIO_VERSION} into {directory} ...", file=sys.stderr)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--cache", str(directory / ".cache")],
        cwd=directory,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return binary


def start_verdaccio(binary: Path, work: Path) -> Server:
    port = free_port()
    config = work / "verdaccio.yaml"
    config.write_text(
        f"storage: {work / 'verdaccio-storage'}\n"
        "auth:\n  htpasswd:\n    file: ./htpasswd\n    max_users: -1\n"
        "uplinks: {}\n"
        "packages:\n  '**':\n    access: $all\n    publish: $all\n    unpublish: $all\n"
        "max_body_size: 100mb\n"
        "server:\n  keepAliveTimeout: 60\n"
        "log: { type: stdout, format: pretty, level: error }\n"
    )
    log = open(work / "verdaccio.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(binary), "--config", str(config), "--listen", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=log,
    )
    return Server(
        "verdaccio", f"http://127.0.0.1:{port}", process, f"http://127.0.0.1:{port}/-/ping"
    ).wait()


async def publish_all(
    registry: str, packages: list[tuple[str, str, dict[str, Any]]], concurrency: int
) -> None:
    limit = asyncio.Semaphore(concurrency)
    headers = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:

        async def one(name: str, version: str, fields: dict[str, Any]) -> None:
            async with limit:
                body = json.dumps(publish_document(name, version, fields))
                async with session.put(
                    f"{registry}/{name.replace('/', '%2f')}", data=body, headers=headers
                ) as r:
                    if r.status >= 300:
                        raise RuntimeError(
                            f"publish {name}@{version} to {registry}: {r.status} {await r.text()}"
                        )

        await asyncio.gather(*(one(*p) for p in packages))


async def request_rate(url: str, accept: str, requests: int, concurrency: int) -> tuple[float, int]:
    """Requests per second for ``requests`` GETs of ``url``; also the body size."""
    limit = asyncio.Semaphore(concurrency)
    size = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one() -> None:
            nonlocal size
            async with limit, session.get(url, headers={"Accept": accept}) as r:
                body = await r.read()
                assert r.status == 200, r.status
                size = len(body)

        await asyncio.gather(*(one() for _ in range(concurrency)))  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        return requests / (time.perf_counter() - started), size


def npm_install(registry: str, work: Path, label: str) -> float:
    project = work / f"project-{label}"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir()
    (project / "package.json").write_text(
        json.dumps({"name": "p", "version": "0.0.0", "dependencies": {"bench-root": "1.0.0"}})
    )
    cache = work / f"npm-cache-{label}"
    shutil.rmtree(cache, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_config_")}
    env.update(
        NPM_CONFIG_CACHE=str(cache),
        NPM_CONFIG_USERCONFIG=str(work / "npmrc"),
        NPM_CONFIG_AUDIT="false",
        NPM_CONFIG_FUND="false",
        NPM_CONFIG_UPDATE_NOTIFIER="false",
    )
    started = time.perf_counter()
    subprocess.run(
        ["npm", "install", "--registry", registry + "/"],
        cwd=project,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    count = len(
        [p for p in json.loads((project / "package-lock.json").read_text())["packages"] if p]
    )
    assert count == 60, count
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verdaccio-dir", type=Path, help="reuse a Verdaccio install here")
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--installs", type=int, default=7)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="depot-npm-bench-"))
    binary = install_verdaccio(args.verdaccio_dir or work / "verdaccio")
    servers = [start_depot(work), start_verdaccio(binary, work)]
    try:
        packages = tree_packages() + big_package(args.versions)
        for server in servers:
            started = time.perf_counter()
            # Verdaccio rewrites one JSON file per publish: publish to it one at a time.
            asyncio.run(publish_all(server.registry, packages, 8 if server.name == "depot" else 1))
            print(
                f"{server.name}: published {len(packages)} versions "
                f"in {time.perf_counter() - started:.1f}s",
                file=sys.stderr,
            )

        results: dict[str, dict[str, float]] = {s.name: {} for s in servers}
        for form, accept in (("abbreviated", ABBREVIATED), ("full", "application/json")):
            for server in servers:
                rate, size = asyncio.run(
                    request_rate(
                        f"{server.registry}/bench-big", accept, args.requests, args.concurrency
                    )
                )
                results[server.name][f"packument_{form}_rps"] = rate
                print(
                    f"{server.name}: {form} packument ({size / 1e3:.0f} kB): {rate:.1f} req/s",
                    file=sys.stderr,
                )

        # One untimed install each first: the first npm run of the session also pays for
        # loading npm itself from a cold disk cache, whichever server it happens to hit.
        for server in servers:
            npm_install(server.registry, work, server.name)
        times: dict[str, list[float]] = {s.name: [] for s in servers}
        for run in range(args.installs):
            for server in servers if run % 2 == 0 else reversed(servers):
                times[server.name].append(npm_install(server.registry, work, server.name))
        for server in servers:
            results[server.name]["install_s"] = statistics.median(times[server.name])
            print(
                f"{server.name}: npm install of 60 packages, empty cache: "
                f"{', '.join(f'{t:.2f}' for t in times[server.name])} s",
                file=sys.stderr,
            )

        depot, verdaccio = results["depot"], results["verdaccio"]
        print(
            "\nmetric                               depot    verdaccio   ratio (depot better > 1)"
        )
        for key in ("packument_abbreviated_rps", "packument_full_rps"):
            print(
                f"{key:<34} {depot[key]:>8.1f} {verdaccio[key]:>10.1f}   "
                f"{depot[key] / verdaccio[key]:.2f}x"
            )
        key = "install_s"
        print(
            f"{'npm install 60 pkgs, median s':<34} {depot[key]:>8.2f} {verdaccio[key]:>10.2f}   "
            f"{verdaccio[key] / depot[key]:.2f}x"
        )
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
