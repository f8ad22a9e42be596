"""Mixed load on one ``depot serve``: 32 clients, 20% writes, for a fixed time.

Reads: npm abbreviated packuments and tarballs, PEP 691 project pages and wheels. Writes: npm
publishes of new versions (a base64 tarball in a JSON body, verified and stored) and wheel
uploads through the push API (hashed, opened, verified, stored). Prints the request rate, read
and write latency percentiles, and the ratios against the figures issue 19 measured before its
work (one worker: 234 requests/s, read p99 253 ms, write p50 289 ms).

Run: ``.venv/bin/python benchmarks/mixed/bench_mixed.py [--seconds 20] [--workers 1]``. The load
generator runs on the same machine and takes CPU of its own; ``DEPOT_BENCH_PYTHON_ARGS="-m cProfile
-o FILE"`` profiles the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx

BASELINE_RATE = 234.0
BASELINE_READ_P99 = 0.253
BASELINE_WRITE_P50 = 0.289
ABBREVIATED = "application/vnd.npm.install-v1+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def npm_publish(name: str, version: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path, data in (
            ("package/package.json", json.dumps({"name": name, "version": version}).encode()),
            ("package/data.bin", os.urandom(4096)),
        ):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tgz = out.getvalue()
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    return json.dumps(
        {
            "_id": name,
            "name": name,
            "dist-tags": {"latest": version},
            "versions": {
                version: {"name": name, "version": version, "dist": {"integrity": integrity}}
            },
            "_attachments": {
                f"{name}-{version}.tgz": {
                    "data": base64.b64encode(tgz).decode(),
                    "length": len(tgz),
                }
            },
        }
    ).encode()


def wheel(name: str, version: str) -> bytes:
    out = io.BytesIO()
    dist_info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(f"{name}/data.bin", os.urandom(4096))
        archive.writestr(
            f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        archive.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n")
        archive.writestr(f"{dist_info}/RECORD", "")
    return out.getvalue()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` and its children (``--workers``) so far.

    CPU per request is the figure to compare on a shared machine: the request rate moves with
    whatever else the machine runs, the work the server does per request much less.
    """
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def load(url: str, seconds: float, clients: int, write_share: float) -> int:
    reads: list[float] = []
    writes: list[float] = []
    errors: list[str] = []
    counter = iter(range(10**9))
    read_urls = (
        [(f"{url}/npm/pkg{i}", {"accept": ABBREVIATED}) for i in range(10)]
        + [(f"{url}/npm/pkg{i}/-/pkg{i}-1.0.0.tgz", {}) for i in range(10)]
        + [
            (f"{url}/python/simple/whl{i}/", {"accept": "application/vnd.pypi.simple.v1+json"})
            for i in range(10)
        ]
        + [(f"{url}/python/files/whl{i}/whl{i}-1.0-py3-none-any.whl", {}) for i in range(10)]
    )
    deadline = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession, rng: random.Random) -> None:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            if rng.random() < write_share:
                n = next(counter)
                if n % 2:
                    request = session.put(
                        f"{url}/npm/pkg{n % 10}", data=npm_publish(f"pkg{n % 10}", f"2.0.{n}"),
                        headers={"content-type": "application/json"},
                    )  # fmt: skip
                else:
                    name = f"whl{n % 10}"
                    body = wheel(name, f"2.{n}")
                    request = session.put(
                        f"{url}/python/files/{name}/{name}-2.{n}-py3-none-any.whl", data=body,
                        headers={"x-depot-sha256": hashlib.sha256(body).hexdigest()},
                    )  # fmt: skip
                bucket = writes
            else:
                target, headers = rng.choice(read_urls)
                request = session.get(target, headers=headers)
                bucket = reads
            async with request as response:
                await response.read()
                if response.status >= 400:
                    errors.append(f"{response.status} {response.url}")
            bucket.append(time.perf_counter() - start)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session, random.Random(i)) for i in range(clients)))
        elapsed = time.perf_counter() - started
    total = len(reads) + len(writes)
    rate = total / elapsed
    read_p99 = percentile(reads, 0.99)
    write_p50 = percentile(writes, 0.5)
    print(f"requests: {total} in {elapsed:.1f} s, {len(writes)} writes, {len(errors)} errors")
    print(
        f"rate: {rate:.0f} requests/s ({rate / BASELINE_RATE:.2f}x the issue's {BASELINE_RATE:.0f})"
    )
    print(
        f"reads:  p50 {percentile(reads, 0.5) * 1000:.1f} ms, p99 {read_p99 * 1000:.1f} ms "
        f"({read_p99 / BASELINE_READ_P99:.2f} of the issue's {BASELINE_READ_P99 * 1000:.0f} ms)"
    )
    print(
        f"writes: p50 {write_p50 * 1000:.1f} ms ({write_p50 / BASELINE_WRITE_P50:.2f} of the "
        f"issue's {BASELINE_WRITE_P50 * 1000:.0f} ms), p99 {percentile(writes, 0.99) * 1000:.1f} ms"
    )
    if errors:
        print("first errors:", errors[:5])
    return total


@contextlib.contextmanager
def running_depot(python: str, *flags: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``depot serve`` of ``python``'s tree on a free port with a store of its own, once it
    answers (its URL and process); stopped on exit. ``DEPOT_BENCH_PYTHON_ARGS`` adds
    interpreter options (``-X importtime``, ...)."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115
        server = subprocess.Popen(
            [python, *os.environ.get("DEPOT_BENCH_PYTHON_ARGS", "").split(), "-m", "depot.core",
             "serve", "--listen-addr", f"127.0.0.1:{port}", "--store-path", f"{tmp}/store",
             *flags],
            stdout=log, stderr=log,
        )  # fmt: skip
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/-/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            yield url, server
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--writes", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the depot to measure (another tree)",
    )
    args = parser.parse_args()
    with running_depot(args.python, "--workers", str(args.workers)) as (url, server):
        for i in range(10):
            answer = httpx.put(
                f"{url}/npm/pkg{i}", content=npm_publish(f"pkg{i}", "1.0.0"),
                headers={"content-type": "application/json"},
            )  # fmt: skip
            assert answer.status_code == 201, answer.text
            body = wheel(f"whl{i}", "1.0")
            answer = httpx.put(
                f"{url}/python/files/whl{i}/whl{i}-1.0-py3-none-any.whl", content=body,
                headers={"x-depot-sha256": hashlib.sha256(body).hexdigest()},
            )  # fmt: skip
            assert answer.status_code == 201, answer.text
        print(f"depot serve --workers {args.workers}, {args.clients} clients, "
              f"{args.writes:.0%} writes, {args.seconds:.0f} s")  # fmt: skip
        cpu_before = cpu_seconds(server.pid)
        total = asyncio.run(load(url, args.seconds, args.clients, args.writes))
        cpu = cpu_seconds(server.pid) - cpu_before
        print(f"server CPU: {cpu:.1f} s, {cpu / total * 1000:.2f} ms per request")


if __name__ == "__main__":
    main()
